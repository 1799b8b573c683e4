#!/usr/bin/env python
"""Analyse a sweep: `python scripts/analyze.py sweep_dir=multirun/quickstart/<date>_<time>`.

Or the circuits and the interpretability toolkit's figures of one checkpoint file (this
project's format, the original paper's, or a bare TransformerLens state dict):
`python scripts/analyze.py checkpoint=path/to/model.pt checkpoint_task=subtract`
(``checkpoint_task=digit_add`` / ``digit_sub``: the interpretability write-up only; the
Fourier circuit does not apply to digit tasks).

Also `sweep_dir=[dirA,dirB]` and `'sweep_dir=multirun/quickstart/*'` (runs merged; outputs
in analysis.out_dir, else <first sweep dir>/analysis/).

Exit status, as scripts/train.py: 0 done; 2 bad input -- a config that does not compose, a
setting out of its range, a missing or empty sweep dir, a baseline or compared condition
that names no condition, an output directory that cannot be written -- one error line on
stderr, with nothing written. Runs the analysis cannot read are named (stdout and report).
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from groktransfer.analysis import run_analysis
from groktransfer.analysis.settings import register_analyze_config, to_settings
from groktransfer.jobs.cli import one_line_config_errors
from groktransfer.utils.errors import UserError

register_analyze_config()
_entered = False  # whether Hydra composed a config and called main (else its own error exit is ours: 2)


@hydra.main(version_base="1.3", config_path="../conf", config_name="analyze")
def main(cfg: DictConfig) -> None:
    """Hydra entry: run the analysis and print the short summary."""
    global _entered
    _entered = True
    try:
        to_settings(cfg)  # every setting in its range before anything is read
        if cfg.checkpoint is not None:
            _analyze_one_checkpoint(cfg)
            return
        result = run_analysis(cfg.sweep_dir, None, cfg)
    except UserError as exc:
        print(f"analyze: error: {exc}", file=sys.stderr)
        sys.exit(2)
    print(result.summary_text())


def _analyze_one_checkpoint(cfg: DictConfig) -> None:
    """Analysis of a single checkpoint as its task family reads it (modular: the Fourier circuit);
    one error line and exit 2 on bad input."""
    from groktransfer.analysis.circuits import analyze_checkpoint
    from groktransfer.model.checkpoint import CheckpointError
    from groktransfer.utils.errors import UserError

    if cfg.checkpoint_task is None:
        print("analyze: error: checkpoint=... needs checkpoint_task=<name> (the task the model was trained on)", file=sys.stderr)
        sys.exit(2)
    try:
        result = analyze_checkpoint(
            cfg.checkpoint, cfg.checkpoint_task, p=cfg.checkpoint_p, out_dir=cfg.analysis.out_dir, index=cfg.checkpoint_index,
            interp=to_settings(cfg).analysis.interp,
        )
    except (CheckpointError, UserError, ValueError, OSError) as exc:  # OSError: an out_dir that cannot be written
        print(f"analyze: error: {exc}", file=sys.stderr)
        sys.exit(2)
    print(result["text"])
    what = "Circuit analysis" if result["profile"] is not None else "Interpretability write-up"
    print(f"\n{what} written to {result['out_dir']}")


if __name__ == "__main__":
    # a config that does not compose (an unknown key, a value of the wrong type, a preset that
    # does not exist): one line, exit 2, as every other bad input; Hydra's exit 1 before main
    # runs (a run directory it cannot create) is bad input too
    with one_line_config_errors("analyze"):
        try:
            main()
        except SystemExit as exc:
            if not _entered and exc.code == 1:
                sys.exit(2)
            raise
