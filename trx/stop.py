"""Stopping cleanly: the flag SIGINT/SIGTERM set, which the training loop checks between updates
and the executors pass on. No torch here: the CLI installs it before anything trains."""

from __future__ import annotations

import contextlib
import signal
import threading
from dataclasses import dataclass


@dataclass
class StopFlag:
    """Set by SIGINT/SIGTERM; the training loop checks it between updates."""

    requested: bool = False
    signal_name: str = ""


@contextlib.contextmanager
def stop_on_signals(flag: StopFlag):
    """First SIGINT/SIGTERM asks the loop to stop cleanly; a second SIGINT interrupts at once."""
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        if flag.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        flag.requested, flag.signal_name = True, signal.Signals(signum).name

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for s, h in old.items():
            signal.signal(s, h)
