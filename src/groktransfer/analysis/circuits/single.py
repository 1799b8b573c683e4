"""Analysis of one checkpoint file, outside any sweep.

``python scripts/analyze.py checkpoint=<file> checkpoint_task=add`` calls
:func:`analyze_checkpoint`, which asks the task's family how its checkpoints are read
(:data:`CHECKPOINT_ANALYSES`). The modular family registers the Fourier circuit: the
same per-model figures as the sweep report (logit spectrum, neuron frequencies,
attention) plus ``summary.md`` / ``summary.json``; it reads this project's checkpoints
and the original paper's released files (whose unembedding has p+1 outputs: the extra
'=' column is ignored for analysis). Every other family -- the digit tasks, a plugin's --
gets the interpretability write-up on its own task, built from the run's config copy
(or, without one, from what :meth:`TaskFamily.task_config_for_model` infers).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from groktransfer.config.schema import TaskConfig
from groktransfer.interp.circuit.attention import head_labels, position_labels
from groktransfer.interp.circuit.profile import DEFAULT_KEY_FREQ_THRESHOLD, CircuitProfile, profile_model
from groktransfer.model.checkpoint import load_checkpoint
from groktransfer.model.registry import model_class
from groktransfer.render import SOURCE_COLOR, apply_theme
from groktransfer.runs.reader import read_run
from groktransfer.runs.rundir import CHECKPOINT_DIR, CONFIG_FILE
from groktransfer.tasks.family import TaskFamily
from groktransfer.tasks.modular import Task
from groktransfer.tasks.registry import family_of, make_task, typed_task
from groktransfer.utils.registry import Registry

from . import plots
from .narrative import describe_profile

PathLike = str | Path


def _run_config(path: Path, task_name: str) -> tuple[dict[str, Any], int, Path] | None:
    """(task block, data seed, config path) of the run directory a checkpoint sits in
    (``<run>/checkpoints/<file>``), when that run trained ``task_name``; None otherwise."""
    if path.parent.name != CHECKPOINT_DIR:
        return None
    run = read_run(path.parent.parent)
    task = run.config.task
    if task.get("name") != task_name:
        return None
    seed = task.get("data_seed") if task.get("data_seed") is not None else (run.config.seed or 0)
    return task, int(seed or 0), path.parent.parent / CONFIG_FILE


def _split_hint(path: Path, raw: dict[str, Any], task_name: str) -> tuple[float, int, str]:
    """(frac_train, data_seed, where from) for the train/test accuracies shown next to the
    circuit: the run's config copy when the file sits in a run dir, the paper's config
    for its files, else a placeholder (circuit measures use all pairs regardless)."""
    found = _run_config(path, task_name)
    if found is not None:
        task, seed, cfg_path = found
        return float(task.get("frac_train", 0.3)), seed, f"Train/test split from {cfg_path}"
    paper: dict[str, Any] = raw["config"] if isinstance(raw.get("config"), dict) else {}
    if "frac_train" in paper:
        return (
            float(paper["frac_train"]),
            int(paper.get("seed", 0)),
            "Train fraction and seed from the file's config (the paper's split generator differs: train/test accuracies are indicative only)",
        )
    return (
        0.3,
        0,
        "No split recorded: train/test accuracies use a placeholder 30% split; circuit measures use all pairs",
    )


def _summary_json(prof: CircuitProfile) -> dict[str, Any]:
    out: dict[str, Any] = {
        k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in prof.summary().items()
    }
    out["key_freqs"] = list(prof.key_freqs)
    out["note"] = prof.note
    labels = position_labels(prof.attention.shape[-1])
    out["attention_from_last"] = {
        h: dict(zip(labels, map(float, row)))
        for h, row in zip(head_labels(prof.attention), prof.attention.reshape(-1, prof.attention.shape[-1]))
    }
    if prof.has_fourier:
        n, lg = prof.neurons, prof.logits
        assert n is not None and lg is not None
        out["per_frequency"] = [
            {
                "freq": int(w),
                "logit_amplitude": float(a),
                "logit_frac": float(f),
                "neurons": int(c),
                "neurons_over_threshold": int(ct),
                "neuron_mass": float(m),
            }
            for w, a, f, c, ct, m in zip(
                lg.freqs, lg.amplitude, lg.frac, n.histogram(), n.histogram(prof.key_freq_threshold), n.mass
            )
        ]
    return out


def _summary_md(
    prof: CircuitProfile, path: Path, fmt: str, split_note: str, figs: dict[str, Path | None], out: Path
) -> str:
    lines = [
        f"# Circuit of `{path.name}`",
        "",
        f"Format: {fmt}. Task: {prof.task} mod {prof.p}. {split_note}.",
        "",
        describe_profile(prof),
        "",
    ]
    if prof.has_fourier:
        assert prof.logits is not None and prof.neurons is not None
        lines += [
            "| freq | key | logit amplitude | logit var. share | neurons | neurons > threshold | neuron mass |",
            "|---|---|---|---|---|---|---|",
        ]
        hist, strong = prof.neurons.histogram(), prof.neurons.histogram(prof.key_freq_threshold)
        top = set(prof.logits.top(8)) | set(prof.key_freqs)
        for i, w in enumerate(prof.logits.freqs):
            if int(w) in top:
                lines.append(
                    f"| {w} | {'yes' if int(w) in prof.key_freqs else ''} | {prof.logits.amplitude[i]:.3g} | "
                    f"{prof.logits.frac[i]:.1%} | {hist[i]} | {strong[i]} | {prof.neurons.mass[i]:.1%} |"
                )
        lines += ["", "(key frequencies and the 8 largest logit frequencies; all frequencies in summary.json)", ""]
    for name, fig in figs.items():
        if fig is not None:
            lines.append(f"![{name}]({fig.relative_to(out).as_posix()})")
    return "\n".join(lines) + "\n"


def _run_task_config(path: Path, task_name: str) -> tuple[dict[str, Any], int, str] | None:
    """(task config, data_seed, where from) from the run's config copy when the file sits in
    a run directory of ``task_name``; None otherwise."""
    found = _run_config(path, task_name)
    if found is None:
        return None
    task, seed, cfg_path = found
    return task, seed, f"Task settings and split from {cfg_path}"


def _family_task_config(path: Path, task_name: str, family: TaskFamily, model_cfg: Any) -> tuple[TaskConfig, int, str]:
    """The task a non-modular checkpoint is read on: its run's config copy, else what the
    family infers from the model's shape (a ValueError naming the file if neither)."""
    found = _run_task_config(path, task_name)
    if found is None:
        try:
            inferred = family.task_config_for_model(task_name, model_cfg)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
        if inferred is None:
            raise ValueError(
                f"{path}: no run config next to the file, and the {family.name} family cannot tell "
                f"the {task_name} task's settings from the model; analyse a checkpoint inside its run directory"
            )
        task, note = inferred
        found = (task, 0, f"No run config next to the file: {note}, data seed 0")
    task, seed, note = found
    return typed_task(task), seed, note


def _analyze_without_circuit(
    path: Path,
    task_name: str,
    p: int | None,
    out_dir: PathLike | None,
    key_freq_threshold: float,
    index: int | None,
    dpi: int,
    interp: Any,
) -> dict[str, Any]:
    """A checkpoint of a family with no registered circuit analysis (digit tasks, plugins):
    the interpretability write-up only; the modular Fourier circuit does not apply (said in
    the summary, as in the sweep report)."""
    from groktransfer.analysis.settings import InterpSettings
    from groktransfer.interp.writeup import write_interpretation

    family = family_of(task_name)
    ckpt = load_checkpoint(path, index=index)
    task_cfg, seed, split_note = _family_task_config(path, task_name, family, ckpt.model_config)
    task = make_task(task_cfg, seed)
    task_p = getattr(task, "p", getattr(task_cfg, "p", None))
    if p is not None and (task_p is None or int(p) != int(task_p)):
        raise ValueError(
            f"checkpoint_p={p}: the {task_name} task here has p={task_p} (base {task_p} for digit tasks); leave checkpoint_p unset"
        )
    shape = family.task_shape(task_cfg)
    mcfg = ckpt.model_config
    problems = model_class(mcfg).task_problems(mcfg, shape) if shape is not None else []
    d_vocab = getattr(mcfg, "d_vocab", None)  # an architecture with a token vocabulary must match the task's
    if d_vocab is not None and d_vocab != task.d_vocab:
        problems.append(f"model d_vocab={d_vocab}, the task's {task.d_vocab}")
    if problems:
        raise ValueError(f"{path}: the model cannot read {task.describe()} ({'; '.join(problems)})")
    out = Path(out_dir) if out_dir is not None else path.parent / f"{path.stem}_circuits"
    out.mkdir(parents=True, exist_ok=True)
    fmt = {"nanda2023": "original paper (nanda2023)", "transformer_lens": "bare TransformerLens state dict"}.get(
        ckpt.source_format, "groktransfer"
    )
    text = "\n".join(
        [
            f"# `{path.name}` on {task.describe()}",
            "",
            f"Format: {fmt}. {split_note}.",
            "",
            f"Circuit analysis: not applicable: {task_name} is a task of the {family.name} family, "
            "which has no modular Fourier circuit; the interpretability toolkit below reads its answers.",
            "",
        ]
    )
    interp = interp if interp is not None else InterpSettings()
    figs: dict[str, Path | None] = {}
    interp_json = None
    if interp.enabled:
        written = write_interpretation(ckpt.build_model(), task, out, interp, dpi)
        text += "\n" + written["markdown"]
        interp_json = written["json"]
        figs.update({f"interp_{k}": v for k, v in written["figures"].items()})
    (out / "summary.md").write_text(text, encoding="utf-8")
    summary = {
        "checkpoint": str(path),
        "format": ckpt.source_format,
        "task": task.describe(),
        "split": split_note,
        "circuits": f"not applicable: the {family.name} family has no modular Fourier circuit",
        "interp": interp_json,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    files = {k: v for k, v in figs.items() if v is not None}
    files.update(summary_md=out / "summary.md", summary_json=out / "summary.json")
    return {"out_dir": out, "files": files, "summary": summary, "text": text, "profile": None}


def analyze_checkpoint(
    path: PathLike,
    task_name: str,
    p: int | None = None,
    out_dir: PathLike | None = None,
    key_freq_threshold: float = DEFAULT_KEY_FREQ_THRESHOLD,
    index: int | None = None,
    dpi: int = 130,
    interp: Any = None,
) -> dict[str, Any]:
    """Analyse one checkpoint on ``task_name`` mod ``p`` and write figures and a summary.

    ``p`` defaults to the model's input vocabulary minus the '=' token. ``out_dir``
    defaults to ``<checkpoint dir>/<stem>_circuits``. ``index`` picks one state dict of a
    paper-format file holding several (default: the last). ``interp``: an
    ``InterpSettings`` (``analysis.interp``) for the interpretability toolkit's figures and
    tables (default settings when None; ``enabled=False`` skips them). Returns ``{"out_dir", "files",
    "summary", "text"}``; ``text`` is the markdown summary (also in ``summary.md``).

    The task's family decides how the file is read (:data:`CHECKPOINT_ANALYSES`): the
    modular family's Fourier circuit, or -- for a family that registers none (digit tasks,
    plugins) -- the interpretability write-up only, on the task of the run's config copy
    (else what the family infers from the model), with a summary saying the Fourier
    circuit does not apply.
    """
    family = family_of(task_name)  # an unknown name: a UserError listing the registered tasks
    analysis = CHECKPOINT_ANALYSES.find(family.name) or _analyze_without_circuit
    return analysis(Path(path), task_name, p, out_dir, key_freq_threshold, index, dpi, interp)


def _analyze_modular_checkpoint(
    path: Path,
    task_name: str,
    p: int | None,
    out_dir: PathLike | None,
    key_freq_threshold: float,
    index: int | None,
    dpi: int,
    interp: Any,
) -> dict[str, Any]:
    """The modular family's reading: the Fourier circuit profile plus the interpretability write-up."""
    ckpt = load_checkpoint(path, index=index)
    cfg = ckpt.model_config
    d_vocab = getattr(cfg, "d_vocab", None)
    if d_vocab is None:
        raise ValueError(
            f"{path}: a {cfg.architecture} model has no token vocabulary to read a {task_name} task's [a, b, =]"
        )
    model_p = int(d_vocab) - 1
    p = model_p if p is None else int(p)
    if p != model_p:
        raise ValueError(f"{path}: the model reads {d_vocab} tokens, i.e. p={model_p} plus '=', not p={p}")
    frac, seed, split_note = _split_hint(path, ckpt.raw, task_name)
    task = Task(task_name, p, frac, seed)
    model = ckpt.build_model()
    label = f"{path.name} ({task_name} mod {p})"
    prof = profile_model(model, task, label, key_freq_threshold, epoch=ckpt.epoch, path=str(path))
    paper_fn = (ckpt.raw.get("config") or {}).get("fn_name") if isinstance(ckpt.raw.get("config"), dict) else None
    if paper_fn and str(paper_fn) != task_name:
        split_note += f". Note: the file's config says fn_name={paper_fn!r}, analysed as {task_name!r}"

    out = Path(out_dir) if out_dir is not None else path.parent / f"{path.stem}_circuits"
    out.mkdir(parents=True, exist_ok=True)
    apply_theme()
    name = f"{task_name} mod {p}"
    colors = {name: SOURCE_COLOR}
    group = [(name, [("", prof)])]  # one model: rows are just its heads
    figs: dict[str, Path | None] = {
        "logit_spectrum": plots.plot_logit_spectrum(
            group,
            prof.key_freqs,
            colors,
            out / "logit_spectrum.png",
            dpi,
            title=f"Logit Fourier spectrum of {path.name}",
            shade_label="its key frequencies",
        ),
        "neuron_freqs": plots.plot_neuron_histograms(
            group,
            prof.key_freqs,
            colors,
            out / "neuron_freqs.png",
            dpi,
            title=f"MLP neurons of {path.name} per dominant frequency",
        ),
        "attention": plots.plot_attention(
            group,
            colors,
            out / "attention.png",
            dpi,
            title=f"Attention from '=' to a, b, = in {path.name} (mean over all inputs)",
        ),
    }
    fmt = {
        "nanda2023": "original paper (nanda2023)",
        "transformer_lens": "bare TransformerLens state dict (act assumed relu)",
    }.get(ckpt.source_format, "groktransfer")
    text = _summary_md(prof, path, fmt, split_note, figs, out)
    from groktransfer.analysis.settings import InterpSettings
    from groktransfer.interp.writeup import write_interpretation

    interp = interp if interp is not None else InterpSettings()
    interp_json = None
    if interp.enabled:
        written = write_interpretation(model, task, out, interp, dpi)
        text += "\n" + written["markdown"]
        interp_json = written["json"]
        figs.update({f"interp_{k}": v for k, v in written["figures"].items()})
    (out / "summary.md").write_text(text, encoding="utf-8")
    summary = {
        "checkpoint": str(path),
        "format": ckpt.source_format,
        "split": split_note,
        **_summary_json(prof),
        "interp": interp_json,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    files = {k: v for k, v in figs.items() if v is not None}
    files.update(summary_md=out / "summary.md", summary_json=out / "summary.json")
    return {"out_dir": out, "files": files, "summary": summary, "text": text, "profile": prof}


#: How a family's checkpoints are read by ``analyze.py checkpoint=...``: family name ->
#: ``fn(path, task_name, p, out_dir, key_freq_threshold, index, dpi, interp)``. A family
#: without an entry gets the interpretability write-up only; a plugin may register its own.
CHECKPOINT_ANALYSES: Registry[Any] = Registry("checkpoint analysis")
CHECKPOINT_ANALYSES.register("modular", _analyze_modular_checkpoint)
