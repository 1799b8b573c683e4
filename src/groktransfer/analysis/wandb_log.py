"""Optional: log the analysis to W&B as a run with ``job_type="analysis"``.

Why guarded: the analysis reads only local files so that it works on a cluster
with no W&B account; W&B is a convenience mirror. Any failure here (package
missing, no network, bad credentials) is reported in one line and the analysis
result stands. Offline files go under the analysis dir (``<out_dir>/wandb``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from groktransfer.runs.rundir import WANDB_DIR

from .collect import RunRecord
from .settings import WandbSettings


def analysis_group(runs: Sequence[RunRecord], configured: str | None) -> str | None:
    """The W&B group of the training runs: configured, else their logger.group, else experiment."""
    if configured:
        return configured
    for attr in ("logger_group", "experiment"):
        values = [getattr(r, attr) for r in runs if getattr(r, attr)]
        if values:
            return max(set(values), key=values.count)
    return None


def log_analysis(
    settings: WandbSettings,
    out_dir: Path,
    runs: Sequence[RunRecord],
    tables: dict[str, pd.DataFrame],
    figures: Sequence[Path],
    summary: dict[str, float],
) -> str | None:
    """Log tables, figures and headline numbers; return a one-line note (or None if disabled)."""
    if settings.mode == "disabled":
        return None
    try:
        import wandb

        os.environ.setdefault("WANDB_SILENT", "true")
        group = analysis_group(runs, settings.group)
        run = wandb.init(
            project=settings.project,
            entity=settings.entity,
            group=group,
            job_type="analysis",
            name=settings.name or f"analysis-{group or 'sweep'}",
            mode=str(settings.mode),  # type: ignore[arg-type]  # a LoggerMode value: disabled, offline or online
            dir=str(out_dir),
            config={"sweeps": sorted({str(r.sweep) for r in runs}), "n_runs": len(runs)},
        )
        try:
            for name, df in tables.items():
                run.log({name: wandb.Table(dataframe=df.astype(object).where(df.notna(), None))})
            for fig in figures:
                run.log({fig.stem: wandb.Image(str(fig))})
            run.summary.update(summary)
        finally:
            run.finish()
        return f"W&B: logged analysis run ({settings.mode}, group={group}) under {out_dir / WANDB_DIR}"
    except Exception as exc:  # noqa: BLE001 - W&B must never break the analysis
        return f"W&B logging skipped: {type(exc).__name__}: {exc}"
