"""The errors a user can cause and fix: printed as one readable line, never a traceback."""

from __future__ import annotations

from groktransfer.checkpoint import CheckpointError
from groktransfer.config.validate import ConfigError
from groktransfer.run import JobError
from groktransfer.source import SourceSelectionError
from groktransfer.transfer import TransferError

USER_ERRORS = (ConfigError, JobError, SourceSelectionError, TransferError, CheckpointError)
