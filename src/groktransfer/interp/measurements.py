"""What a model reading measures, as one typed long table.

Every number an interpretability reading produces is a :class:`Measurement`: a declared
quantity (:data:`QUANTITIES`: ``head_d_loss``, ``dla``, ``probe``, ...), its value, and the
labels that say which part of the model or the task it is about (``layer``, ``head``,
``answer``, ``hook``, ``position``, ``target``, ...). The readings add them, findings select
them by quantity and label, the sweep report aggregates them -- no code reads a number back
out of a string.

Each quantity also declares its *flat name* (``head_{kind}_{site}_L{layer}H{head}_d_loss[{answer}]``):
how it is spelt in ``interp_runs.csv``, in ``summary.json`` and in a scalars mapping. The
flat names are made from the labels by that template and parsed back by the same template
(:meth:`Measurements.from_flat`), so the two can never drift apart; adding a measurement of an
undeclared quantity, or with other labels than declared, is an error at once.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

#: every label a quantity may carry, with the pattern its value has in a flat name
LABELS: dict[str, str] = {
    "kind": r"zero|mean",
    "site": r"[zqkv]",
    "layer": r"\d+",
    "head": r"\d+",
    "k": r"\d+",
    "answer": r".+?",
    "cls": r"[^/]+",
    "ablation": r"worst_head|pc\d+",
    "part": r".+?",
    "weight": r".+",
    "hook": r".+?",
    "position": r"\d+",
    "target": r".+",
    "group": r".+",
    "circuit": r".+",
    "subset": r".+",
    "stat": r"mean|median|min",
}
#: labels whose values are integers
INT_LABELS = frozenset({"layer", "head", "k", "position"})


@dataclass(frozen=True)
class Quantity:
    """A declared quantity: its name, its labels (in order) and its flat-name template."""

    name: str
    flat: str
    doc: str = ""

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(f for _, f, _, _ in string.Formatter().parse(self.flat) if f)

    def format(self, labels: Mapping[str, Any]) -> str:
        return self.flat.format(**labels)

    @property
    def pattern(self) -> re.Pattern:
        parts = []
        for literal, name, _, _ in string.Formatter().parse(self.flat):
            parts.append(re.escape(literal))
            if name:
                parts.append(f"(?P<{name}>{LABELS[name]})")
        return re.compile("".join(parts))


def _q(name: str, flat: str, doc: str = "") -> tuple[str, Quantity]:
    return name, Quantity(name, flat, doc)


#: Every quantity a reading may measure. Order matters only for parsing flat names: a more
#: specific template comes before a more general one it overlaps (``dla_head`` before ``dla``).
QUANTITIES: dict[str, Quantity] = dict(
    [
        # ---- every model
        _q("clean_acc", "clean_acc[{answer}]", "accuracy of the clean model at an answer position"),
        _q("clean_loss", "clean_loss[{answer}]", "loss of the clean model at an answer position"),
        _q("eff_rank_ratio", "eff_rank_ratio[{weight}]", "effective rank of a weight matrix / a Gaussian control's"),
        _q("probe", "probe[{hook}@{position}->{target}]", "held-out R² or accuracy of a ridge probe"),
        # ---- attention heads
        _q(
            "head_d_loss",
            "head_{kind}_{site}_L{layer}H{head}_d_loss[{answer}]",
            "loss increase when one head is ablated",
        ),
        _q("head_acc", "head_{kind}_{site}_L{layer}H{head}_acc[{answer}]", "accuracy when one head is ablated"),
        _q(
            "class_ablated_acc", "{ablation}_ablated_acc[{cls}/{answer}]", "accuracy per answer class after an ablation"
        ),
        _q("clean_class_acc", "clean_class_acc[{cls}/{answer}]", "clean accuracy per answer class"),
        # ---- direct logit attribution
        _q("dla_completeness_error", "dla_completeness_error", "|parts + bias - logit| at the correct answers"),
        _q("dla_head", "dla_L{layer}H{head}[{answer}]", "mean direct contribution of a head to the correct logit"),
        _q("dla", "dla_{part}[{answer}]", "mean direct contribution of a part to the correct logit"),
        # ---- embedding
        _q("embed_pc_explained", "embed_pc{k}_explained", "share of the operand embeddings' variance on PC k"),
        _q("embed_fourier_gini", "embed_fourier_gini", "Gini of the operand embeddings' Fourier norms"),
        _q("embed_top_freq", "embed_top_freq", "the operand embeddings' strongest non-constant frequency"),
        _q("embed_pc_ablated_acc", "embed_pc{k}_ablated_acc", "accuracy with embedding PC k mean-ablated"),
        _q("embed_only_pc_acc", "embed_only_pc{k}_acc", "accuracy with the operand embeddings reduced to PC k"),
        # ---- MLP neurons
        _q("n_key_freqs", "n_key_freqs", "key input frequencies of the MLP neurons"),
        _q("frac_neurons_clustered", "frac_neurons_clustered", "share of neurons above the key-frequency threshold"),
        _q("cluster_ablated_acc", "cluster_ablated_acc[{group}]", "accuracy with one frequency's neurons mean-ablated"),
        _q("max_abs_neuron_corr", "max_abs_neuron_corr[{target}]", "largest |correlation| of a neuron with a target"),
        # ---- digit family (the attention-only digit-sum model)
        _q("qk_cd_share", "qk_cd_share[L{layer}H{head}/{answer}]", "mean-query attention on the corresponding digits"),
        _q("ov_freq1_share", "ov_freq1_share[{circuit}]", "share of an OV circuit's power at digit frequency 1"),
        _q("path_completeness_error", "path_completeness_error", "|paths + bias - logit| at the correct answers"),
        _q(
            "path_share_heads_to_last",
            "path_share_heads_to_last[{answer}]",
            "share of the logit through head -> last-layer head",
        ),
        _q("path_top_share", "path_top_share[{answer}]", "share of the logit on the largest path"),
        _q("path_share", "path_share[{part}/{answer}]", "share of the correct logit on one path"),
        _q("wu_top_freq", "wu_top_freq", "W_U's strongest frequency over the answer tokens"),
        _q("wu_top_freq_share", "wu_top_freq_share", "its share of W_U's power"),
        _q("wu_dims_for_90", "wu_dims_for_90", "residual dimensions holding 90% of W_U's power"),
        _q("wu_top2_share", "wu_top2_share", "power in W_U's top two singular values"),
        _q("wu_radius_cv", "wu_radius_cv", "spread of the answer tokens' radii in that plane"),
        _q("wu_circle_freq", "wu_circle_freq", "angle step between consecutive tokens, in 2π/m"),
        _q("wu_angle_step_spread", "wu_angle_step_spread", "largest deviation of a step (radians)"),
        _q("wu_rebuilt_error", "wu_rebuilt_error", "relative error of W_U rebuilt from frequency 1"),
        _q("wu_rebuilt_acc", "wu_rebuilt_acc", "accuracy with that W_U"),
        _q("wu_clean_acc", "wu_clean_acc", "accuracy of the clean model (for the comparison)"),
        _q(
            "attn_class_tv",
            "attn_class_tv[L{layer}H{head}/{answer}/{cls}]",
            "attention difference between answer classes",
        ),
        _q("prob_correct", "prob_correct_{stat}[{answer}]", "probability on the correct token"),
        _q(
            "class_d_loss",
            "class_d_loss[L{layer}H{head} {site} {kind}/{answer}/{cls}]",
            "loss increase per answer class",
        ),
        _q("subset_d_loss", "subset_d_loss[L{layer}H{head} {site}/{subset}]", "loss increase within a carry subset"),
        _q("subset_n", "subset_n[{subset}]", "examples in a carry subset"),
        # ---- int_add family (the integer-sum model)
        _q("pc_linear_r2", "pc{k}_linear_r2", "R² of a linear fit of PC k against the token"),
        _q("pc_quadratic_r2", "pc{k}_quadratic_r2", "R² of a quadratic fit of PC k against the token"),
        _q("n_sum_neurons_post", "n_sum_neurons_post", "neurons correlating with a+b above 0.9 after the ReLU"),
        _q("n_sum_neurons_pre", "n_sum_neurons_pre", "the same before it"),
        _q("d_mlp", "d_mlp", "neurons in the MLP"),
        _q("pc_regression_r2_median", "pc_regression_r2_median", "median R² of neuron pre-activations on the PCs"),
        _q("pc_regression_r2_top", "pc_regression_r2_top", "that R² for the most a+b-correlated neuron"),
    ]
)
_PATTERNS = [(q, q.pattern) for q in QUANTITIES.values()]
#: the label columns of a measurement table, in order
LABEL_COLUMNS: tuple[str, ...] = tuple(LABELS)
COLUMNS: tuple[str, ...] = ("quantity", *LABEL_COLUMNS, "value", "measure")


def quantity(name: str) -> Quantity:
    """The declared quantity ``name`` (a KeyError naming the declared ones otherwise)."""
    try:
        return QUANTITIES[name]
    except KeyError:
        raise KeyError(f"undeclared quantity {name!r}; declared: {', '.join(QUANTITIES)}") from None


def parse_flat(name: str) -> tuple[str, dict[str, Any]] | None:
    """(quantity, labels) of a flat name, or None for a name no quantity declares."""
    for q, pattern in _PATTERNS:
        m = pattern.fullmatch(name)
        if m:
            labels = {k: int(v) if k in INT_LABELS else v for k, v in m.groupdict().items()}
            return q.name, labels
    return None


class Measurements:
    """A growing table of measurements (see the module docstring)."""

    def __init__(self) -> None:
        self._rows: list[dict[str, Any]] = []

    def add(self, name: str, value: Any, **labels: Any) -> None:
        """Record ``value`` of quantity ``name`` with exactly its declared labels."""
        q = quantity(name)
        if set(labels) != set(q.labels):
            raise ValueError(f"{name}: labels {sorted(labels)} given, {sorted(q.labels)} declared")
        self._rows.append({"quantity": name, **labels, "value": float(value), "measure": q.format(labels)})

    def __len__(self) -> int:
        return len(self._rows)

    def frame(self) -> pd.DataFrame:
        """The table: ``quantity``, every label column (missing where a quantity has no such
        label), ``value`` and the flat name ``measure``."""
        df = pd.DataFrame(self._rows, columns=list(COLUMNS))
        for col in INT_LABELS:
            df[col] = pd.array(df[col], dtype="Int64")
        return df

    def flat(self) -> dict[str, float]:
        """{flat name: value}, in the order measured."""
        return {row["measure"]: row["value"] for row in self._rows}

    def select(self, name: str, **labels: Any) -> pd.DataFrame:
        """The rows of quantity ``name`` whose labels equal ``labels``: its label columns and ``value``."""
        q = quantity(name)
        unknown = set(labels) - set(q.labels)
        if unknown:
            raise ValueError(f"{name} has no label(s) {sorted(unknown)}; it has {list(q.labels)}")
        rows = [r for r in self._rows if r["quantity"] == name and all(r[k] == v for k, v in labels.items())]
        return pd.DataFrame(rows, columns=[*q.labels, "value"])

    def value(self, name: str, **labels: Any) -> float | None:
        """The one value of ``name`` with ``labels``, or None if it was not measured."""
        rows = self.select(name, **labels)
        return None if rows.empty else float(rows.value.iloc[-1])

    def extend(self, other: Measurements) -> None:
        self._rows.extend(other._rows)

    @classmethod
    def from_rows(cls, rows: Iterable[Mapping[str, Any]]) -> Measurements:
        """Measurements from table rows (``quantity``, labels, ``value``) or from flat names
        (``measure``, ``value``): what ``interp_runs.csv`` and a scalars mapping hold."""
        out = cls()
        for row in rows:
            name = row.get("quantity")
            if isinstance(name, str) and name in QUANTITIES:
                labels = {k: _label(k, row.get(k)) for k in QUANTITIES[name].labels}
            else:
                parsed = parse_flat(str(row.get("measure")))
                if parsed is None:
                    continue  # a column the readings never write (key_freqs' text row)
                name, labels = parsed
            value = row.get("value")
            if value is not None:
                out.add(name, value, **labels)
        return out

    @classmethod
    def from_flat(cls, scalars: Mapping[str, Any]) -> Measurements:
        """Measurements from ``{flat name: value}`` (names no quantity declares are left out)."""
        return cls.from_rows({"measure": k, "value": v} for k, v in scalars.items())


def _label(name: str, value: Any) -> Any:
    return int(value) if name in INT_LABELS else str(value)
