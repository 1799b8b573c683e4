"""The errors a user can cause and fix: printed as one readable line, never a traceback.

Every such error derives from ``UserError`` (and from the builtin it refines), so
``scripts/train.py`` catches one class and exits with status 2, and a module raising
one needs nothing but this import-free module.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input or a run that cannot go on as configured; the message says what to do."""


class JobError(UserError, RuntimeError):
    """A job that cannot run as configured (a conflicting run directory, an unreadable resume state)."""
