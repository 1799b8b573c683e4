"""The command-line scripts' shared exit protocol: bad input is one line and exit status 2.

Hydra reports a config that does not compose -- an unknown key, a value of the wrong type, a
choice outside a closed set, a preset that does not exist -- in its own multi-line message
(the error, the OmegaConf cause with ``full_key`` / ``reference_type`` / ``object_type``, a
hint about ``HYDRA_FULL_ERROR``) and exits 1 before the script's main runs.
:func:`one_line_config_errors` puts those messages on one line, prefixed with the script's
name, and makes the exit status 2 -- what every other refusal of bad input gives. Anything
else Hydra reports (a crash) is left to Hydra, exit 1.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

#: the lines of Hydra's and OmegaConf's messages that describe where, not what
_DETAIL_PREFIXES = ("full_key:", "reference_type=", "object_type=", "Set the environment variable HYDRA_FULL_ERROR")


def config_error_line(exc: BaseException) -> str:
    """A compose error (and its cause) as one line: the message lines that say what is wrong."""
    lines: list[str] = []
    for part in (exc, exc.__cause__):
        if part is None:
            continue
        for line in str(part).split("Config search path:")[0].splitlines():
            text = line.strip()
            if text and not text.startswith(_DETAIL_PREFIXES) and text not in lines:
                lines.append(text)
    at = next((i for i, ln in enumerate(lines) if ln.startswith("Available options in")), None)
    if at is not None:  # a preset that does not exist: the group's presets (not the schemas) on the line
        presets = [ln for ln in lines[at + 1 :] if not ln.endswith("_schema")]
        return f"{': '.join(ln.rstrip('.') for ln in lines[:at])} ({lines[at].rstrip(':')}: {', '.join(presets)})"
    return ": ".join(line.rstrip(".") for line in lines)


@contextmanager
def one_line_config_errors(script: str) -> Iterator[None]:
    """While active, Hydra's report of a config that does not compose is one line on stderr
    (``<script>: error: ...``) and exit status 2; ``HYDRA_FULL_ERROR=1`` still shows Hydra's own."""
    import hydra._internal.utils as hydra_utils
    from hydra.errors import CompactHydraException, HydraException
    from omegaconf.errors import OmegaConfBaseException

    original: Callable[[Any], Any] = hydra_utils.run_and_report

    def run_and_report(func: Any) -> Any:
        try:
            return func()
        except (CompactHydraException, HydraException, OmegaConfBaseException) as exc:
            if os.environ.get("HYDRA_FULL_ERROR") == "1" or type(exc).__name__ == "HydraJobException":
                return original(lambda err=exc: (_ for _ in ()).throw(err))
            sys.stderr.write(f"{script}: error: {config_error_line(exc)}\n")
            sys.exit(2)

    hydra_utils.run_and_report = run_and_report
    try:
        yield
    finally:
        hydra_utils.run_and_report = original
