"""The machinery of benchmarks/reproduce.py: runs read from their directories, measured
values with their spread, and the verdict against a paper's number.

Why a verdict is computed, not written: a reproduction is re-measured on other machines
and with more seeds, and the words "matches" / "within the spread" / "differs" must follow
the numbers. The rule (:func:`verdict`):

* **matches** -- the paper's value and our median agree within the claim's tolerance (a
  relative one for epochs, an absolute one for counts), or for a paper *range* our median
  lies inside it; for a yes/no claim, every run agrees with the paper;
* **within the spread** -- not that, but the paper's value lies within the range of our
  runs (min to max; a censored max is open-ended), or the ranges overlap; a yes/no claim
  that some runs share;
* **differs** -- neither. The reason says by how much, and the claim's ``differences``
  (what in the setting is not the paper's) say what may explain it;
* **not measured** -- no completed run measured it yet (a reproduction still training, or
  one not run on this machine): no claim about agreement either way.

A run that never reached a threshold is *censored* at its last epoch: counted, shown as
``≥``, never dropped (docs/science.md).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
import yaml

from groktransfer.runs.rundir import RunDir, threshold_key

MATCHES, WITHIN, DIFFERS, NOT_MEASURED = "matches", "within the spread", "differs", "not measured"


# --------------------------------------------------------------------------- runs
@dataclass
class Run:
    """One training run as a reproduction reads it: its status record, config and tables.

    A run reused from an earlier launch (status ``reused_from``) is read from where it was
    trained.
    """

    path: Path
    status: Dict[str, Any]
    config: Dict[str, Any]

    @classmethod
    def read(cls, path: Path) -> "Run":
        rd = RunDir(path)
        record = rd.read_status()
        if record is None:
            raise FileNotFoundError(f"{path}: no status.json (not a run directory)")
        status = record.as_dict()
        source = status.get("reused_from")
        if source and Path(source).resolve() != Path(path).resolve():
            return cls.read(Path(source))
        config = yaml.safe_load(rd.config_path.read_text()) if rd.config_path.is_file() else {}
        return cls(Path(path), status, config or {})

    @property
    def completed(self) -> bool:
        return self.status.get("status") == "completed"

    @property
    def last_epoch(self) -> int:
        return int(self.status.get("epoch") or 0)

    def threshold_epoch(self, threshold: float) -> Optional[int]:
        """First evaluated epoch with test accuracy >= threshold, None if never (censored)."""
        entry = (self.status.get("thresholds") or {}).get(threshold_key(threshold)) or {}
        epoch = entry.get("epoch")
        return None if epoch is None else int(epoch)

    def metrics(self) -> pd.DataFrame:
        return pd.read_csv(RunDir(self.path).metrics_path)

    def measures(self) -> pd.DataFrame:
        return pd.read_csv(RunDir(self.path).measures_path, dtype={"key_freqs": str})

    def cfg(self, *keys: str, default: Any = None) -> Any:
        node: Any = self.config
        for key in keys:
            if not isinstance(node, dict) or key not in node:
                return default
            node = node[key]
        return node


def read_sweep(sweep_dir: Path) -> List[Run]:
    """Every run directory (holding a status.json) directly under ``sweep_dir``, by name."""
    dirs = sorted(p.parent for p in Path(sweep_dir).glob("*/status.json"))
    return [Run.read(d) for d in dirs]


# --------------------------------------------------------------------------- measured values
@dataclass
class Measured:
    """Our value of one claim over the runs: one number per run (``censored`` marks a run
    that never got there: its number is its last epoch, a lower bound), or a yes/no per run."""

    values: List[float] = field(default_factory=list)
    censored: List[bool] = field(default_factory=list)
    booleans: List[bool] = field(default_factory=list)
    unit: str = "epochs"
    note: str = ""

    @property
    def n(self) -> int:
        return len(self.booleans) if self.booleans and not self.values else len(self.values)

    @property
    def n_censored(self) -> int:
        return int(sum(self.censored))

    def median(self) -> Tuple[float, bool]:
        """Sample median, and whether a censored run makes it only a lower bound (a censored
        value at or below the upper middle order statistic could still move it)."""
        if not self.values:
            return math.nan, False
        v = np.asarray(self.values, dtype=float)
        c = np.asarray(self.censored or [False] * len(v), dtype=bool)
        upper_middle = float(np.sort(v)[len(v) // 2])
        return float(np.median(v)), bool((c & (v <= upper_middle)).any())

    def spread(self) -> Tuple[float, float, bool]:
        """(min, max, whether the max is censored: open-ended)."""
        if not self.values:
            return math.nan, math.nan, False
        v = np.asarray(self.values, dtype=float)
        c = np.asarray(self.censored or [False] * len(v), dtype=bool)
        return float(v.min()), float(v.max()), bool(c[v == v.max()].any())

    def display(self) -> str:
        if self.booleans and not self.values:
            return f"{sum(self.booleans)} of {len(self.booleans)} runs" + (f" ({self.note})" if self.note else "")
        if not self.values:
            return "–" + (f" ({self.note})" if self.note else "")
        med, lower = self.median()
        lo, hi, open_hi = self.spread()
        text = f"{'≥ ' if lower else ''}{fmt(med)}"
        if len(self.values) > 1:
            text += f" [{fmt(lo)}–{'≥ ' if open_hi else ''}{fmt(hi)}]"
        text += f" (n = {len(self.values)}"
        text += f", {self.n_censored} censored)" if self.n_censored else ")"
        return text + (f"; {self.note}" if self.note else "")

    def as_dict(self) -> Dict[str, Any]:
        med, lower = self.median()
        lo, hi, open_hi = self.spread()
        return {
            "values": [float(v) for v in self.values], "censored": [bool(c) for c in self.censored],
            "booleans": [bool(b) for b in self.booleans], "unit": self.unit, "note": self.note,
            "median": None if math.isnan(med) else med, "median_lower_bound": lower,
            "min": None if math.isnan(lo) else lo, "max": None if math.isnan(hi) else hi, "max_censored": open_hi,
            "n": self.n, "n_censored": self.n_censored, "display": self.display(),
        }  # fmt: skip


def fmt(value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:,.0f}" if float(value).is_integer() or abs(value) >= 100 else f"{value:.3g}"


def threshold_epochs(runs: Sequence[Run], threshold: float, scale: float = 1.0, unit: str = "epochs") -> Measured:
    """Epochs (times ``scale``: optimizer steps per epoch) to a test-accuracy threshold, censored
    at the last epoch where never reached."""
    out = Measured(unit=unit)
    for run in runs:
        epoch = run.threshold_epoch(threshold)
        out.values.append((epoch if epoch is not None else run.last_epoch) * scale)
        out.censored.append(epoch is None)
    return out


# --------------------------------------------------------------------------- claims and verdicts
@dataclass
class Claim:
    """One published number and how ours is read.

    ``paper_value`` is the number the verdict compares with (None: no number, only text);
    ``paper_range`` a range the paper gives instead (phases: 9.4k-14k); ``paper_bool`` a
    yes/no claim. ``tolerance`` is relative (``absolute`` for counts).
    """

    label: str
    paper: str  # the paper's value as written
    source: str  # where it comes from: section, figure, table or repository file
    read: Callable[[Dict[str, List[Run]]], Measured]
    paper_value: Optional[float] = None
    paper_range: Optional[Tuple[float, float]] = None
    paper_bool: Optional[bool] = None
    tolerance: float = 0.1
    absolute: bool = False
    differences: str = ""  # what in our setting is not the paper's, when a verdict is not "matches"
    how: str = ""  # how our value is read, when that is not obvious


def verdict(claim: Claim, ours: Measured) -> Tuple[str, str]:
    """(verdict, reason): see the module docstring for the rule."""
    extra = f" Setting differences: {claim.differences}" if claim.differences else ""
    if claim.paper_bool is not None:
        if not ours.booleans:
            return NOT_MEASURED, "no completed run measured it yet."
        agree = sum(b == claim.paper_bool for b in ours.booleans)
        if agree == len(ours.booleans):
            return MATCHES, f"all {agree} runs agree with the paper."
        if agree:
            return WITHIN, f"{agree} of {len(ours.booleans)} runs agree with the paper." + extra
        return DIFFERS, f"none of {len(ours.booleans)} runs agrees with the paper." + extra
    med, lower = ours.median()
    if math.isnan(med):
        return NOT_MEASURED, "no completed run measured it yet."
    lo, hi, open_hi = ours.spread()
    hi_eff = math.inf if open_hi else hi
    if claim.paper_range is not None:
        a, b = claim.paper_range
        if lower:  # the median is only a lower bound: it can rule the range out, not in
            if med > b:
                return DIFFERS, f"our median is censored at ≥ {fmt(med)}, beyond the paper's {fmt(a)}–{fmt(b)}." + extra
            return WITHIN, f"our median is censored (≥ {fmt(med)}); the paper's {fmt(a)}–{fmt(b)} is not excluded." + extra
        if a <= med <= b:
            return MATCHES, f"our median {fmt(med)} lies inside the paper's {fmt(a)}–{fmt(b)}."
        if lo <= b and hi_eff >= a:
            return WITHIN, f"our runs ({fmt(lo)}–{fmt(hi)}) overlap the paper's {fmt(a)}–{fmt(b)}, the median ({fmt(med)}) does not." + extra
        side = "above" if lo > b else "below"
        return DIFFERS, f"every run is {side} the paper's {fmt(a)}–{fmt(b)} (ours {fmt(lo)}–{fmt(hi)})." + extra
    target = claim.paper_value
    if target is None:
        return WITHIN, "the paper gives no number to compare with." + extra
    gap = med - target
    allowed = claim.tolerance if claim.absolute else claim.tolerance * abs(target)
    if abs(gap) <= allowed and not (lower and gap > 0):
        how = f"±{fmt(claim.tolerance)}" if claim.absolute else f"±{claim.tolerance:.0%}"
        return MATCHES, f"our median {fmt(med)} is within {how} of the paper's {fmt(target)}."
    if lower and gap <= 0 and hi_eff >= target:
        return WITHIN, f"our median is censored (≥ {fmt(med)}); the paper's {fmt(target)} is not excluded." + extra
    if lo <= target <= hi_eff:
        return WITHIN, f"the paper's {fmt(target)} lies in our range {fmt(lo)}–{fmt(hi)}; our median is {fmt(med)}." + extra
    ratio = med / target if target else math.inf
    return DIFFERS, (f"our median {'≥ ' if lower else ''}{fmt(med)} is {ratio:.2g}× the paper's {fmt(target)}, "
                     f"outside our range {fmt(lo)}–{'≥ ' if open_hi else ''}{fmt(hi)}.") + extra  # fmt: skip


# --------------------------------------------------------------------------- phases (Nanda et al. 2023, §5.1)
@dataclass(frozen=True)
class Phases:
    """The epochs where memorisation, circuit formation and clean-up end, read from one run's
    progress measures (measures.csv, one row per checkpoint)."""

    memorisation_end: Optional[int]
    circuit_formation_end: Optional[int]
    cleanup_end: Optional[int]


#: the share of the test loss' fall (in log space) that opens and closes clean-up
CLEANUP_START_FRAC, CLEANUP_END_FRAC = 0.1, 0.9


def paper_fixed_key_losses(run: Run) -> pd.DataFrame:
    """Excluded and restricted loss at every saved checkpoint with the key frequencies of the
    run's *last* checkpoint, as Nanda et al. compute them (their Fig. 7 uses the final
    model's key frequencies throughout; measures.csv's columns use each checkpoint's own).

    Reads the run's checkpoints (the preset keeps every one); returns epoch, test_loss,
    excluded_loss, restricted_loss, sorted by epoch.
    """
    import torch

    from groktransfer.measures.modular import input_freq_part, loss_and_accuracy
    from groktransfer.model.checkpoint import load_checkpoint
    from groktransfer.tasks.fourier import GroupFourier
    from groktransfer.tasks.modular import Task

    measures = run.measures().dropna(subset=["key_freqs"]).sort_values("epoch")
    key = [int(k) for k in str(measures["key_freqs"].iloc[-1]).replace(",", " ").split()] if not measures.empty else []
    task = Task(str(run.cfg("task", "name")), int(run.cfg("task", "p")), float(run.cfg("task", "frac_train")),
                int(run.status["data_seed"]))  # fmt: skip
    gf = GroupFourier.for_task(task)
    if gf is None or not key:
        return pd.DataFrame(columns=["epoch", "test_loss", "excluded_loss", "restricted_loss"])
    labels, train = gf.labels_z(task.labels), gf.to_grid(task.train_mask)
    rows = []
    for path in RunDir(run.path).epoch_checkpoints():
        ckpt = load_checkpoint(path)
        model = ckpt.build_model().eval()
        with torch.no_grad():
            L = gf.output_grid(model.forward_last(task.tokens).double())
        part = input_freq_part(L, gf, key, with_mean=False)
        mean = L.mean(dim=(0, 1), keepdim=True)
        excluded, _ = loss_and_accuracy(L[train] - part[train], labels[train])
        restricted, _ = loss_and_accuracy(part + mean, labels)
        test, _ = loss_and_accuracy(L[~train], labels[~train])
        rows.append({"epoch": int(ckpt.epoch), "test_loss": test, "excluded_loss": excluded, "restricted_loss": restricted})
    return pd.DataFrame(rows).sort_values("epoch").reset_index(drop=True)


def phase_boundaries(measures: pd.DataFrame) -> Phases:
    """Nanda et al.'s three phases, read as the paper describes them (§5.1):

    * memorisation ends where the **excluded loss** stops falling and starts to rise: the
      checkpoint of its minimum (taken before the test loss' fall, so a late dip cannot
      claim it);
    * circuit formation ends, and clean-up begins, where the **test loss** "suddenly drops":
      the first checkpoint after its post-memorisation peak at which log test loss has made
      10% of its fall from that peak to its lowest value;
    * clean-up ends when that fall is 90% done.

    The 10% / 90% points are the usual rise-time convention for a step; a run that never
    falls (no grokking) has neither. Returns epochs of measures.csv rows.
    """
    m = measures.dropna(subset=["test_loss"]).sort_values("epoch").reset_index(drop=True)
    if m.empty:
        return Phases(None, None, None)
    epochs = m["epoch"].to_numpy(dtype=int)
    log_test = np.log(np.clip(m["test_loss"].to_numpy(dtype=float), 1e-300, None))
    peak = int(np.argmax(log_test))
    low = int(peak + np.argmin(log_test[peak:]))
    fall = log_test[peak] - log_test[low]
    start = end = None
    if fall > 0:
        done = (log_test[peak] - log_test) / fall
        after = np.arange(len(done)) >= peak
        start_i = np.flatnonzero(after & (done >= CLEANUP_START_FRAC))
        end_i = np.flatnonzero(after & (done >= CLEANUP_END_FRAC))
        start = int(epochs[start_i[0]]) if start_i.size else None
        end = int(epochs[end_i[0]]) if end_i.size else None
    memorisation = None
    if "excluded_loss" in m and m["excluded_loss"].notna().any():
        limit = start if start is not None else int(epochs[-1])
        window = m[(m["epoch"] <= limit) & m["excluded_loss"].notna()]
        if not window.empty:
            memorisation = int(window.loc[window["excluded_loss"].idxmin(), "epoch"])
    return Phases(memorisation, start, end)


_PHASES: Dict[Path, Phases] = {}


def run_phases(run: Run) -> Phases:
    """The run's phases, from the paper's fixed-key-frequency losses where its checkpoints are
    kept, else from measures.csv (per-checkpoint key frequencies); computed once per run."""
    if run.path not in _PHASES:
        table = paper_fixed_key_losses(run) if RunDir(run.path).epoch_checkpoints() else pd.DataFrame()
        _PHASES[run.path] = phase_boundaries(table if len(table) else run.measures())
    return _PHASES[run.path]


def phase_epochs(runs: Sequence[Run], which: str) -> Measured:
    out = Measured(unit="epochs")
    missing = 0
    for run in runs:
        value = getattr(run_phases(run), which)
        if value is None:
            missing += 1
            continue
        out.values.append(float(value))
        out.censored.append(False)
    if missing:
        out.note = f"{missing} run(s) without this boundary"
    return out


def final_measure(runs: Sequence[Run], column: str, unit: str = "") -> Measured:
    """A column of each run's last measures row (e.g. n_key_freqs)."""
    out = Measured(unit=unit)
    for run in runs:
        m = run.measures().dropna(subset=[column])
        if not m.empty:
            out.values.append(float(m.sort_values("epoch")[column].iloc[-1]))
            out.censored.append(False)
    return out


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    tmp.replace(path)


def build_task(run: Run) -> Any:
    """The run's task, its split drawn from the run's data seed."""
    from groktransfer.tasks.registry import make_task, typed_task

    return make_task(typed_task(dict(run.config["task"])), int(run.status["data_seed"]))


def collapse_curve(run: Run) -> pd.DataFrame:
    """Prieto et al.'s Softmax Collapse at every saved checkpoint: the fraction of training
    examples whose float32 softmax is exactly one-hot (``groktransfer.training.losses.softmax_collapse``),
    with the test accuracy there. Columns epoch, collapse, test_acc."""
    import torch

    from groktransfer.model.checkpoint import load_checkpoint
    from groktransfer.training.losses import softmax_collapse

    task = build_task(run)
    train = task.train_mask
    rows = []
    for path in RunDir(run.path).epoch_checkpoints():
        ckpt = load_checkpoint(path)
        model = ckpt.build_model().eval()
        with torch.no_grad():
            logits = model.forward_last(task.tokens)
        test_acc = float((logits[~train].argmax(-1) == task.labels[~train]).double().mean())
        rows.append({"epoch": int(ckpt.epoch), "collapse": softmax_collapse(logits[train], torch.float32), "test_acc": test_acc})
    return pd.DataFrame(rows, columns=["epoch", "collapse", "test_acc"]).sort_values("epoch").reset_index(drop=True)
