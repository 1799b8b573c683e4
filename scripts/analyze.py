#!/usr/bin/env python
"""Analyse a sweep: `python scripts/analyze.py sweep_dir=multirun/quickstart/<date>_<time>`.

Or the circuits and the interpretability toolkit's figures of one checkpoint file (this
project's format, the original paper's, or a bare TransformerLens state dict):
`python scripts/analyze.py checkpoint=path/to/model.pt checkpoint_task=subtract`
(``checkpoint_task=digit_add`` / ``digit_sub``: the interpretability write-up only; the
Fourier circuit does not apply to digit tasks).

Also `sweep_dir=[dirA,dirB]` and `'sweep_dir=multirun/quickstart/*'` (runs merged; outputs
in analysis.out_dir, else <first sweep dir>/analysis/). A missing or empty sweep dir is
one error line on stderr and exit status 2, with nothing written.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from groktransfer.analysis import SweepInputError, run_analysis
from groktransfer.analysis.settings import register_analyze_config, to_settings

register_analyze_config()


@hydra.main(version_base="1.3", config_path="../conf", config_name="analyze")
def main(cfg: DictConfig) -> None:
    """Hydra entry: run the analysis and print the short summary."""
    if cfg.checkpoint is not None:
        _analyze_one_checkpoint(cfg)
        return
    try:
        result = run_analysis(cfg.sweep_dir, None, cfg)
    except SweepInputError as exc:
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
    except (CheckpointError, UserError, ValueError, FileNotFoundError) as exc:
        print(f"analyze: error: {exc}", file=sys.stderr)
        sys.exit(2)
    print(result["text"])
    what = "Circuit analysis" if result["profile"] is not None else "Interpretability write-up"
    print(f"\n{what} written to {result['out_dir']}")


if __name__ == "__main__":
    main()
