"""What every layer of trx shares without importing torch: the user-error type, the debug
switch, and the statuses of a run."""

from __future__ import annotations

import os

FINISHED = ("complete", "diverged")  # a run in one of these states is never run again


class UserError(Exception):
    """A problem the user can fix (bad config, bad argument, missing data): exit code 2."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.hint = hint


def debug() -> bool:
    """TRX_DEBUG=1: show tracebacks instead of one-line errors."""
    return os.environ.get("TRX_DEBUG") == "1"
