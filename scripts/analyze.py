#!/usr/bin/env python
"""Analyse a sweep: `python scripts/analyze.py sweep_dir=multirun/quickstart/<date>_<time>`.

Also `sweep_dir=[dirA,dirB]` and `'sweep_dir=multirun/quickstart/*'` (runs merged; outputs
in analysis.out_dir, else <first sweep dir>/analysis/). A missing or empty sweep dir is
one error line on stderr and exit status 2, with nothing written.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from groktransfer.analysis import SweepInputError, run_analysis
from groktransfer.analysis.settings import register_analyze_config

register_analyze_config()


@hydra.main(version_base="1.3", config_path="../conf", config_name="analyze")
def main(cfg: DictConfig) -> None:
    """Hydra entry: run the analysis and print the short summary."""
    try:
        result = run_analysis(cfg.sweep_dir, None, cfg)
    except SweepInputError as exc:
        print(f"analyze: error: {exc}", file=sys.stderr)
        sys.exit(2)
    print(result.summary_text())


if __name__ == "__main__":
    main()
