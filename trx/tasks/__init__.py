"""Tasks: one module each, registered by name. Importing this package imports every module in it."""

import importlib
import pkgutil

from trx.tasks.base import TASKS, DataError, Task, TaskOptions, generator, register_task

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base" and not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["TASKS", "DataError", "Task", "TaskOptions", "generator", "register_task"]
