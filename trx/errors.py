"""What every layer of trx shares without importing torch: the user-error type and the debug
switch. (The statuses of a run live with the run folder: `trx.rundir.Status`.)"""

from __future__ import annotations

import os


class UserError(Exception):
    """A problem the user can fix (bad config, bad argument, missing data): exit code 2."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.hint = hint


def debug() -> bool:
    """TRX_DEBUG=1: show tracebacks instead of one-line errors."""
    return os.environ.get("TRX_DEBUG") == "1"
