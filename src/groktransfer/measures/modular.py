"""Progress measures of Nanda et al. (2023), in the Fourier basis of each task's own group.

Why these measures: test loss alone cannot tell "the model is memorising" from "the
model is building the Fourier circuit but memorisation still dominates". The measures
below watch the circuit directly, so a transfer experiment can say *what* was carried
over from the source task, not only how fast the target was learned.

Everything is computed on all inputs at once with matrix products against the
orthonormal bases of ``groktransfer.tasks.fourier``; nothing loops over neurons or frequencies.
Throughout, a *logit tensor* is the last-position logits read on the group grid as
L[x, y, z] (input coordinates x, y; output coordinate z), n = modulus of the group,
W = n // 2 = number of non-constant frequencies, and the task's *target direction* at
frequency w is cos/sin(2 pi w (x + s y - z) / n) with s = +1 (add, multiply) or -1
(subtract, divide).

Definitions (the docstrings of the functions below give the details):

* key frequencies -- from the MLP neurons: each neuron's centred activation on the
  (x, y) grid is Fourier transformed in 2-D; its share of variance at frequency w is
  the energy in the 2-D components (w, 0), (0, w) and (w, w) (linear terms in x, in y,
  and all four cos/sin products). A neuron belongs to its largest share, counts when
  that share exceeds the threshold, and a frequency is key when at least
  ``key_freq_min_neurons`` neurons (default 1, as in the paper's code) count for it.
* restricted / excluded loss (paper definition) -- per output z, project the logits as
  a function of the inputs onto cos(w(x + s y)) and sin(w(x + s y)) for the key
  frequencies (plus the constant, i.e. the per-output mean, for restricted). Restricted
  loss = loss of that projection on all grid pairs; excluded loss = training loss of the
  logits minus the key-frequency part (the mean is kept).
* strict variants -- the same, but keeping/removing only the 2 target directions
  cos/sin(w(x + s y - z)) per key frequency, i.e. also requiring the output side to
  have the target structure. A subset of the paper's subspace.
* logit coefficients -- ``logit_cos_coef[w]`` is the least-squares amplitude of
  cos(w(x + s y - z)) in L: logits equal to alpha*cos(...) give alpha.

Scalar columns (``ProgressMeasures.scalars()``), beyond losses and accuracies:
``weight_norm_*`` sums of squared weights per component; ``fourier_status``
present/absent and ``fourier_note`` (group, coordinates, exclusions -- or the task's
reason for having no structure); ``frac_neurons_explained`` counted neurons / d_mlp;
``mean_neuron_frac_explained`` mean best share over live neurons;
``restricted_ref_loss`` / ``excluded_ref_loss`` the unmodified logits' loss on the same
pairs and outputs as restricted / excluded loss (for add/subtract: the all-pairs and
the train loss; for multiply/divide they differ, the zero pairs and class 0 being out);
``gini_W_E`` / ``gini_W_L`` Gini of the Fourier-component norms of W_E (input rows in
coordinate order) and of W_L = W_out W_U (output columns in coordinate order), over all
n components including the constant; ``logit_residual_frac`` share of the centred
logits outside every target direction.

``int_add`` has no output group, but its inputs a, b fill a p x p grid: its input-side
measures (neuron frequencies and key frequencies on that grid, ``gini_W_E`` and the
embedding's per-frequency norms, in Z_p's basis over token order) are computed with the
same definitions (``InputFourierMeasures``, ``fourier_status`` "input_only",
``INPUT_FOURIER_COLUMNS``); the output-side ones stay absent and the note says why.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from groktransfer.model.transformer import WEIGHT_GROUP_NAMES, weight_group
from groktransfer.runs.rundir import (
    MEASURE_BASE_COLUMNS,
    MEASURE_FOURIER_COLUMNS,
    MEASURE_INPUT_FOURIER_COLUMNS,
)
from groktransfer.tasks.fourier import CONST, COS, SIN, FourierBasis, GroupFourier, fourier_basis
from groktransfer.tasks.modular import Task

Scalar = float | int | str

# Column names are part of the run-directory contract (groktransfer.runs.rundir).
BASE_COLUMNS = MEASURE_BASE_COLUMNS
FOURIER_COLUMNS = MEASURE_FOURIER_COLUMNS
INPUT_FOURIER_COLUMNS = MEASURE_INPUT_FOURIER_COLUMNS

# A neuron is dead when its activation's variance is below this share of the largest
# mean-square activation of any neuron (std below 1e-5 of it): exactly constant neurons
# (a dead ReLU) and ones whose variation is at the float32 round-off of the forward pass.
_DEAD_REL_VAR = 1e-10


# ---------------------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------------------
def per_example_loss(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy of each example in float64, and whether its arg-max is the label.

    float64 is the paper's choice: float32 log-softmax saturates once the loss is
    ~1e-7, exactly where clean-up happens. Shapes: logits [..., m], labels [...].
    """
    flat = logits.reshape(-1, logits.shape[-1])
    lab = labels.reshape(-1)
    ce = F.cross_entropy(flat.double(), lab, reduction="none")
    hit = flat.max(dim=-1).indices == lab  # max: faster than argmax on CPU
    return ce.reshape(labels.shape), hit.reshape(labels.shape)


def loss_and_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """Mean float64 cross-entropy and accuracy; (NaN, NaN) for an empty set."""
    if labels.numel() == 0:
        return float("nan"), float("nan")
    ce, hit = per_example_loss(logits, labels)
    return float(ce.mean()), float(hit.double().mean())


# ---------------------------------------------------------------------------------------
# Weights
# ---------------------------------------------------------------------------------------
def weight_sq_norms(params: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """Sum of squared weights of a state dict in TransformerLens names, total and per group
    (embed, pos_embed, attn, mlp, unembed, ln, other: the transformer's ``weight_group``), over
    all blocks. Weight decay acts on exactly this quantity, which is why it is a progress
    measure (clean-up is the norm falling)."""
    out = {name: 0.0 for name in WEIGHT_GROUP_NAMES}
    comps, squares = [], []
    for key, value in params.items():
        group = weight_group(key, value)
        if group is None:  # a buffer (attn.mask, attn.IGNORE), not a weight
            continue
        comps.append(group)
        squares.append(value.detach().double().square().sum())
    for comp, sq in zip(comps, _on_host(squares)):  # summed on the host, in parameter order
        out[comp] += sq
    out["total"] = sum(out.values())
    return out


def _on_host(scalars: list[torch.Tensor]) -> list[float]:
    """0-dim tensors (on any device, all the same) as floats, read on the host in one transfer."""
    return torch.stack(scalars).tolist() if scalars else []


@dataclass(frozen=True)
class ModelWeights:
    """What the progress measures read of a model's weights, whatever its architecture.

    ``W_E`` [d_vocab, d]: one row per input token (None: the model has no token embedding);
    ``W_L`` [n_neurons, d_vocab_out]: each neuron's direct effect on the logits (None: no
    neurons that write to the output); ``sq_norms``: sums of squared weights by group, with
    ``total``. Built from a model's readings (:meth:`from_model`) or from a state dict in
    TransformerLens names (:meth:`from_params`).
    """

    W_E: torch.Tensor | None
    W_L: torch.Tensor | None
    sq_norms: dict[str, float]

    @classmethod
    def from_params(cls, params: Mapping[str, torch.Tensor], mlp_block: int | None = None) -> ModelWeights:
        """From a state dict in TransformerLens names; W_L = W_out[mlp_block] @ W_U (the last
        block with an MLP by default)."""
        W_L = None
        if "unembed.W_U" in params and any(_MLP_W_OUT.match(k) for k in params):
            block = _last_mlp_block(params) if mlp_block is None else int(mlp_block)
            W_L = params[f"blocks.{block}.mlp.W_out"].detach().double() @ params["unembed.W_U"].detach().double()
        W_E = params["embed.W_E"].detach() if "embed.W_E" in params else None
        return cls(W_E=W_E, W_L=W_L, sq_norms=weight_sq_norms(params))

    @classmethod
    def from_model(cls, model: torch.nn.Module) -> ModelWeights:
        """From a model's readings (the model protocol), on the model's device; the sums of
        squares are read on the host in one transfer."""
        from groktransfer.model.protocol import Reading

        readings = getattr(model, "readings", frozenset())
        with torch.no_grad():
            W_E = model.token_embedding().detach() if Reading.token_embedding in readings else None
            W_L = model.neuron_logit_weights().detach().double() if Reading.neuron_logits in readings else None
            state = model.checkpoint_state()
            groups = list(model.weight_groups().items())
            squares = [sum(state[n].detach().double().square().sum() for n in names) for _, names in groups]
        norms = dict(zip((g for g, _ in groups), _on_host([torch.as_tensor(q) for q in squares])))
        if "other" not in norms:
            norms["other"] = 0.0
        norms["total"] = sum(norms.values())
        return cls(W_E=W_E, W_L=W_L, sq_norms=norms)


_MLP_W_OUT = re.compile(r"^blocks\.(\d+)\.mlp\.W_out$")


def gini(values: torch.Tensor) -> float:
    """Gini coefficient of non-negative values: sum_i (2i - m - 1) v_(i) / (m sum v).

    0 for a flat vector, (m-1)/m for a one-hot one (the standard, un-rescaled form the
    paper uses; 0.991 at m=113), scale invariant. An all-zero vector is flat: 0.
    """
    v = values.detach().double().flatten().abs().sort().values
    m, total = v.numel(), float(v.sum())
    if m == 0 or total == 0.0:
        return 0.0
    rank = torch.arange(1, m + 1, dtype=torch.float64, device=v.device)
    return float(((2 * rank - m - 1) * v).sum() / (m * total))


def fourier_component_norms(rows: torch.Tensor, basis: FourierBasis) -> torch.Tensor:
    """[n, d] rows in group-coordinate order -> [n] norm of each Fourier component.

    The sparsity (Gini) of these norms is how the paper sees W_E and W_L concentrate
    on a few frequencies during circuit formation.
    """
    return (basis.matrix @ rows.double()).norm(dim=1)


def _per_freq_sum(by_row: torch.Tensor, basis: FourierBasis) -> torch.Tensor:
    """[n, ...] values per basis row -> [W + 1, ...] their sum per frequency (0 = const)."""
    out = by_row.new_zeros((basis.max_freq + 1,) + tuple(by_row.shape[1:]))
    return out.index_add_(0, basis.freqs, by_row)


def _per_freq_sumsq(by_row: torch.Tensor, basis: FourierBasis) -> torch.Tensor:
    """[n, ...] values per basis row -> [W + 1, ...] sum of squares per frequency."""
    return _per_freq_sum(by_row.square(), basis)


# ---------------------------------------------------------------------------------------
# Neurons and key frequencies
# ---------------------------------------------------------------------------------------
def neuron_freq_fractions(acts_grid: torch.Tensor, basis: FourierBasis) -> tuple[torch.Tensor, torch.Tensor]:
    """Share of each neuron's variance at each frequency, and which neurons are dead.

    ``acts_grid`` [n, n, d_mlp] is read on the group grid. Returns ``frac`` [d_mlp, W]:
    frac[i, w-1] = energy of neuron i's 2-D Fourier coefficients at (w, 0), (0, w) and
    (w, w) over the energy of all coefficients but the constant (0, 0), i.e. over its
    variance; 0 for dead neurons. And ``dead`` [d_mlp] bool.

    Cost: only the transform along x is a full matrix product (float32: it is the one
    O(n^3 d) step, and shares of variance need no more precision). Along y only the
    coefficients the shares need are formed -- the constant and the rows of the same
    frequency as the x row -- and the total comes from Parseval, so the n x n x d_mlp
    tensor of 2-D coefficients is never built.
    """
    n, d = acts_grid.shape[0], acts_grid.shape[-1]
    b = basis.matrix.float()
    t = (b @ acts_grid.float().reshape(n, n * d)).reshape(n, n, d)  # [x-row, y, d]

    # y-axis partners of each x-row: the cos and sin rows of its frequency (a zero row
    # stands in for the missing sine at an even n's Nyquist frequency, and for row 0).
    padded = torch.cat([b, b.new_zeros(1, n)])
    cos_row, sin_row = _row_of_freq(basis, COS), _row_of_freq(basis, SIN)
    partners = torch.stack([padded[cos_row[basis.freqs]], padded[sin_row[basis.freqs]]], dim=1)
    partners[0] = 0.0

    both = torch.bmm(partners, t).square().sum(dim=1)  # (w, w): [x-row, d]
    x_only = t.sum(dim=1).square() / n  # (w, 0): coefficient on the constant y row
    y_only = (b @ t[0]).square()  # (0, w): x constant, every y row
    share = (_per_freq_sum(both + x_only, basis) + _per_freq_sum(y_only, basis))[1:].double()

    t0 = t[0].double()
    rest = t[1:].reshape(-1, d)
    total = (rest * rest).sum(dim=0).double()  # several times faster than vector_norm
    total = total + (t0 - t0.mean(dim=0)).square().sum(dim=0)  # Parseval minus (0, 0)
    mean_sq = (t0.sum(dim=0) / n**1.5).square()
    dead = total / n**2 <= _DEAD_REL_VAR * (total / n**2 + mean_sq).max()
    frac = torch.where(dead, 0.0, share / total.clamp_min(torch.finfo(torch.float64).tiny))
    return frac.T.contiguous(), dead


def _row_of_freq(basis: FourierBasis, kind: int) -> torch.Tensor:
    """[W + 1] long: the basis row of each frequency's ``kind`` (COS or SIN) row, n where there is
    none. Built on the basis' device by a scatter (each frequency has at most one such row; the
    other rows are written to a spare slot that is cut off), so nothing is read on the host."""
    n, W = basis.n, basis.max_freq
    slot = torch.where(basis.kinds == kind, basis.freqs, W + 1)
    rows = torch.full((W + 2,), n, dtype=torch.long, device=basis.freqs.device)
    return rows.scatter_(0, slot, torch.arange(n, device=basis.freqs.device))[: W + 1]


def assign_neuron_freqs(
    frac: torch.Tensor, dead: torch.Tensor, threshold: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each neuron's frequency (largest share; -1 when dead), that share, and whether it
    counts (share > threshold). Dead neurons are never counted."""
    if frac.shape[1] == 0:  # n < 2: no frequencies at all
        best, idx = frac.new_zeros(frac.shape[0]), torch.zeros(frac.shape[0], dtype=torch.long, device=frac.device)
    else:
        best, idx = frac.max(dim=1)
    neuron_freq = torch.where(dead, -1, idx + 1)
    best = torch.where(dead, 0.0, best)
    return neuron_freq, best, (~dead) & (best > threshold)


def neuron_counts(neuron_freq: torch.Tensor, counted: torch.Tensor, max_freq: int) -> torch.Tensor:
    """[W] number of counted neurons at each frequency 1..W (a sum over one-hot rows: no output
    size for the host to wait for, as bincount would need on a GPU)."""
    freqs = torch.arange(1, max_freq + 1, device=neuron_freq.device)
    return ((neuron_freq[:, None] == freqs) & counted[:, None]).sum(dim=0)


def select_key_freqs(counts: torch.Tensor, min_neurons: int = 1) -> list[int]:
    """Frequencies (1-based) with at least ``min_neurons`` counted neurons."""
    return [w + 1 for w, c in enumerate(counts.tolist()) if c >= max(min_neurons, 1)]


# ---------------------------------------------------------------------------------------
# Logits in the group's basis
# ---------------------------------------------------------------------------------------
def _combo_sums(logit_grid: torch.Tensor, gf: GroupFourier) -> torch.Tensor:
    """S[k, z] = sum of L[x, y, z] over inputs with x + s y = k: all the logits keep of
    the inputs once only the combination x + s y matters."""
    n = gf.n
    flat = logit_grid.reshape(n * n, n)
    return flat.new_zeros(n, n).index_add_(0, gf.input_combo.reshape(-1), flat)


def _target_profile(logit_grid: torch.Tensor, gf: GroupFourier) -> torch.Tensor:
    """D[t] = sum of L[x, y, z] over x + s y - z = t: the logits seen along the target."""
    n = gf.n
    i = torch.arange(n, device=logit_grid.device)
    return _combo_sums(logit_grid, gf).gather(0, (i[:, None] + i[None, :]) % n).sum(dim=1)


def target_coefficients(logit_grid: torch.Tensor, gf: GroupFourier) -> torch.Tensor:
    """[n] coefficient of L on each unit target direction b_r(x + s y - z) / n
    (b_r = row r of the 1-D basis). These n tensors are orthonormal in the n^3 space."""
    return gf.basis.matrix @ _target_profile(logit_grid.double(), gf) / gf.n


def logit_target_structure(
    logit_grid: torch.Tensor, gf: GroupFourier
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """How much of the logits is the task's target structure, per frequency.

    Returns (cos_coef [W], sin_coef [W], frac [W], residual_frac):

    * cos_coef[w-1] = <L, c_w> / <c_w, c_w> with c_w = cos(2 pi w (x + s y - z) / n), the
      least-squares amplitude: L = sum_w alpha_w c_w gives exactly alpha_w (sin likewise,
      0 for the Nyquist frequency of an even n, whose sine vanishes).
    * frac[w-1] = share of ||L'||^2 in the cos and sin target directions at w, where L'
      is L minus its per-input mean over outputs (softmax ignores it) and its per-output
      mean over inputs (a bias); the target directions are orthogonal to both.
    * residual_frac = 1 - sum_w frac: what the target structure does not explain.
      NaN when L' is zero (no structure to share out).
    """
    basis = gf.basis
    L = logit_grid.double()
    coef = target_coefficients(L, gf)
    amp = coef / (gf.n * basis.scales)  # unit direction -> raw cosine amplitude
    W = basis.max_freq
    cos_coef = L.new_zeros(W + 1).index_add_(0, basis.freqs, torch.where(basis.kinds == COS, amp, 0.0))
    sin_coef = L.new_zeros(W + 1).index_add_(0, basis.freqs, torch.where(basis.kinds == SIN, amp, 0.0))
    centred = L - L.mean(dim=2, keepdim=True)
    per_output = centred.mean(dim=(0, 1))  # removing it takes n^2 |per_output|^2 of the norm
    norm2 = float((centred * centred).sum()) - gf.n**2 * float((per_output * per_output).sum())
    energy = _per_freq_sumsq(coef, basis)[1:]
    frac = energy / norm2 if norm2 > 0 else torch.full_like(energy, float("nan"))
    residual = 1.0 - float(frac.sum()) if norm2 > 0 else float("nan")
    return cos_coef[1:], sin_coef[1:], frac, residual


def input_freq_part(logit_grid: torch.Tensor, gf: GroupFourier, freqs: list[int], with_mean: bool) -> torch.Tensor:
    """The paper's key-frequency part of the logits: for every output z separately,
    the projection of L[:, :, z] onto cos(w(x + s y)) and sin(w(x + s y)) for w in
    ``freqs`` (plus the constant, i.e. the per-output mean, when ``with_mean``).

    Works through the combination sums: on the n x n grid the functions
    b_r(x + s y) / sqrt(n) are orthonormal, so the projection is two small matrix
    products with the 1-D basis and a gather back onto the grid.
    """
    basis, n = gf.basis, gf.n
    b = basis.matrix.index_select(0, _rows(basis, freqs, with_const=with_mean))
    coef = b @ _combo_sums(logit_grid.double(), gf) / math.sqrt(n)  # [r, z]
    by_combo = b.T @ coef / math.sqrt(n)  # [k, z]
    return by_combo[gf.input_combo]


def _rows(basis: FourierBasis, freqs: list[int], with_const: bool) -> torch.Tensor:
    """Indices of the basis rows at ``freqs`` (and the constant), on the basis' device; chosen on
    the host's copy of the basis, where a mask costs nothing."""
    host = fourier_basis(basis.n)
    keep = host.rows_in(freqs) | ((host.kinds == CONST) if with_const else False)
    return torch.nonzero(keep).flatten().to(basis.matrix.device)


def target_freq_part(logit_grid: torch.Tensor, gf: GroupFourier, freqs: list[int]) -> torch.Tensor:
    """Strict key-frequency part: the projection of the whole tensor L onto the target
    directions cos/sin(w(x + s y - z)) for w in ``freqs`` (2 dimensions per frequency)."""
    basis, n = gf.basis, gf.n
    keep = _rows(basis, freqs, with_const=False)
    coef = target_coefficients(logit_grid, gf).index_select(0, keep)
    profile = basis.matrix.index_select(0, keep).T @ coef / n  # [t], t = x + s y - z
    i = torch.arange(n, device=logit_grid.device)
    by_combo = profile[(i[:, None] - i[None, :]) % n]  # [k, z], k = x + s y
    return by_combo[gf.input_combo]


# ---------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FourierMeasures:
    """The measures that exist only for a task with a group (see module docstring)."""

    group: str
    modulus: int
    generator: int | None
    note: str
    n_pairs: int  # grid pairs measured, n^2
    n_excluded_pairs: int
    key_freq_threshold: float
    key_freq_min_neurons: int
    freqs: torch.Tensor  # [W] 1..W
    neuron_freq: torch.Tensor  # [d_mlp] long, -1 = dead
    neuron_frac_explained: torch.Tensor  # [d_mlp] share at the neuron's frequency
    neuron_frac_by_freq: torch.Tensor  # [d_mlp, W]
    neuron_count: torch.Tensor  # [W] counted neurons per frequency
    key_freqs: list[int]
    n_dead_neurons: int
    frac_neurons_explained: float  # counted neurons / d_mlp
    mean_neuron_frac_explained: float  # mean share over live neurons
    losses: dict[str, float]  # restricted_*, excluded_*, *_strict_*, *_ref_loss
    gini_embed: float
    gini_wl: float
    embed_freq_norm: torch.Tensor  # [W] norm of W_E's cos+sin components per frequency
    wl_freq_norm: torch.Tensor  # [W] same for W_L's output side
    logit_cos_coef: torch.Tensor  # [W]
    logit_sin_coef: torch.Tensor  # [W]
    logit_frac: torch.Tensor  # [W]
    logit_residual_frac: float


@dataclass(frozen=True)
class InputFourierMeasures:
    """The input-side measures of a task whose output has no group (int_add): inputs a, b
    on the p x p grid in Z_p's Fourier basis, token order. Output-side measures
    (restricted/excluded loss, W_L, logit structure) stay absent."""

    modulus: int
    note: str
    key_freq_threshold: float
    freqs: torch.Tensor  # [W]
    neuron_freq: torch.Tensor  # [d_mlp] long, -1 = dead
    neuron_frac_explained: torch.Tensor  # [d_mlp]
    neuron_count: torch.Tensor  # [W]
    key_freqs: list[int]
    n_dead_neurons: int
    frac_neurons_explained: float
    mean_neuron_frac_explained: float
    gini_embed: float
    embed_freq_norm: torch.Tensor  # [W]


@dataclass(frozen=True)
class ProgressMeasures:
    """All measures of one checkpoint. ``fourier`` is None when the task has no group:
    those measures are absent (not zero), and ``no_structure_reason`` says why."""

    task: str
    train_loss: float
    test_loss: float
    train_acc: float
    test_acc: float
    sq_norms: dict[str, float]
    fourier: FourierMeasures | None = None
    no_structure_reason: str | None = None
    input_fourier: InputFourierMeasures | None = None

    def scalars(self) -> dict[str, Scalar]:
        """Flat row of the measures table (rundir.MEASURES_FILE): BASE_COLUMNS, plus FOURIER_COLUMNS when present."""
        out: dict[str, Scalar] = {
            "train_loss": self.train_loss,
            "test_loss": self.test_loss,
            "train_acc": self.train_acc,
            "test_acc": self.test_acc,
        }
        norms = {f"weight_norm_{k}": v for k, v in self.sq_norms.items()}
        fm = self.fourier
        im = self.input_fourier
        out["fourier_status"] = "present" if fm else ("input_only" if im else "absent")
        out["fourier_note"] = fm.note if fm else (im.note if im else (self.no_structure_reason or ""))
        # the base columns in their order; a model whose weight groups are not the transformer's
        # (the model protocol's weight_groups) has its own weight_norm_<group> columns there
        base = [k for k in BASE_COLUMNS if k in out or k in norms]
        at = base.index("fourier_status")
        base[at:at] = [k for k in norms if k not in base]
        out = {k: out.get(k, norms.get(k)) for k in base}
        if fm is None and im is not None:
            out.update(
                fourier_modulus=im.modulus,
                fourier_n_pairs=im.modulus**2,
                key_freq_threshold=im.key_freq_threshold,
                n_key_freqs=len(im.key_freqs),
                key_freqs=" ".join(str(w) for w in im.key_freqs),
                frac_neurons_explained=im.frac_neurons_explained,
                mean_neuron_frac_explained=im.mean_neuron_frac_explained,
                n_dead_neurons=im.n_dead_neurons,
                gini_W_E=im.gini_embed,
            )
            return {k: out[k] for k in (*base, *INPUT_FOURIER_COLUMNS)}
        if fm is None:
            return out
        out.update(
            fourier_group=fm.group,
            fourier_modulus=fm.modulus,
            fourier_n_pairs=fm.n_pairs,
            fourier_excluded_pairs=fm.n_excluded_pairs,
            key_freq_threshold=fm.key_freq_threshold,
            n_key_freqs=len(fm.key_freqs),
            key_freqs=" ".join(str(w) for w in fm.key_freqs),
            frac_neurons_explained=fm.frac_neurons_explained,
            mean_neuron_frac_explained=fm.mean_neuron_frac_explained,
            n_dead_neurons=fm.n_dead_neurons,
            **fm.losses,
            gini_W_E=fm.gini_embed,
            gini_W_L=fm.gini_wl,
            logit_residual_frac=fm.logit_residual_frac,
        )
        return {k: out[k] for k in (*base, *FOURIER_COLUMNS)}

    def per_frequency_rows(self) -> list[dict[str, Scalar]]:
        """Long-format rows (keys FREQ_ROW_KEYS, no epoch) for rundir.FREQS_FILE;
        empty when the task has no group."""
        fm = self.fourier
        im = self.input_fourier
        if fm is None and im is not None:
            nan, key = float("nan"), set(im.key_freqs)
            return [
                dict(
                    freq=w,
                    logit_cos_coef=nan,
                    neuron_count=nc,
                    logit_sin_coef=nan,
                    logit_frac=nan,
                    is_key=int(w in key),
                    embed_norm=en,
                    wl_norm=nan,
                )
                for w, nc, en in zip(im.freqs.tolist(), im.neuron_count.tolist(), im.embed_freq_norm.tolist())
            ]
        if fm is None:
            return []
        key = set(fm.key_freqs)
        cols = zip(
            fm.freqs.tolist(),
            fm.logit_cos_coef.tolist(),
            fm.neuron_count.tolist(),
            fm.logit_sin_coef.tolist(),
            fm.logit_frac.tolist(),
            fm.embed_freq_norm.tolist(),
            fm.wl_freq_norm.tolist(),
        )
        return [
            dict(
                freq=w,
                logit_cos_coef=c,
                neuron_count=nc,
                logit_sin_coef=s,
                logit_frac=fr,
                is_key=int(w in key),
                embed_norm=en,
                wl_norm=wn,
            )
            for w, c, nc, s, fr, en, wn in cols
        ]


# ---------------------------------------------------------------------------------------
# Top level
# ---------------------------------------------------------------------------------------
def _grid_losses(
    L: torch.Tensor,
    labels: torch.Tensor,
    train: torch.Tensor,
    key_parts: dict[str, torch.Tensor],
) -> dict[str, float]:
    """Restricted (key part + per-output mean, all grid pairs) and excluded (logits minus
    key part, training pairs) losses for each definition of the key part, and the
    same losses of the unmodified logits as references. ``train``: the training pairs'
    rows of the flattened (x, y) grid, in row-major order."""
    n = L.shape[0]
    mean = L.mean(dim=(0, 1), keepdim=True)
    on_train = lambda t: t.reshape(n * n, *t.shape[2:]).index_select(0, train)  # noqa: E731
    out: dict[str, float] = {}
    for name, part in key_parts.items():  # two definitions, not a loop over frequencies
        r_loss, r_acc = loss_and_accuracy(part + mean, labels)
        e_loss, e_acc = loss_and_accuracy(on_train(L) - on_train(part), on_train(labels))
        out[f"restricted{name}_loss"], out[f"restricted{name}_acc"] = r_loss, r_acc
        out[f"excluded{name}_loss"], out[f"excluded{name}_acc"] = e_loss, e_acc
    ce, _ = per_example_loss(L, labels)
    out["restricted_ref_loss"] = float(ce.mean())
    out["excluded_ref_loss"] = float(on_train(ce).mean()) if train.numel() else float("nan")
    return {k: out[k] for k in FOURIER_COLUMNS if k in out}


def _fourier_measures(
    task: Task,
    gf: GroupFourier,
    logits: torch.Tensor,
    acts: torch.Tensor,
    weights: ModelWeights,
    threshold: float,
    min_neurons: int,
) -> FourierMeasures:
    device = logits.device
    # the task's side (labels, split) is read on the host's copy of the map, then moved
    labels = gf.labels_z(task.labels).to(device)
    train = torch.nonzero(gf.to_grid(task.train_mask).reshape(-1)).flatten().to(device)
    gf = gf.to(device)
    basis, W = gf.basis, gf.max_freq

    frac, dead = neuron_freq_fractions(gf.to_grid(acts), basis)
    neuron_freq, best, counted = assign_neuron_freqs(frac, dead, threshold)
    counts = neuron_counts(neuron_freq, counted, W)
    key = select_key_freqs(counts, min_neurons)
    alive = neuron_freq >= 0

    L = gf.output_grid(logits)  # [x, y, z] float64
    key_parts = {
        "": input_freq_part(L, gf, key, with_mean=False),
        "_strict": target_freq_part(L, gf, key),
    }
    losses = _grid_losses(L, labels, train, key_parts)

    if weights.W_E is None or weights.W_L is None:
        raise KeyError("the Fourier measures read a token embedding and the neurons' logit weights (W_L)")
    W_E = weights.W_E[gf.elements]
    embed_norms = fourier_component_norms(W_E, basis)
    wl_norms = fourier_component_norms(weights.W_L[:, gf.elements].T, basis)

    cos_c, sin_c, lfrac, residual = logit_target_structure(L, gf)
    return FourierMeasures(
        group=gf.group,
        modulus=gf.n,
        generator=gf.generator,
        note=gf.note,
        n_pairs=gf.n * gf.n,
        n_excluded_pairs=gf.n_excluded_pairs,
        key_freq_threshold=float(threshold),
        key_freq_min_neurons=int(min_neurons),
        freqs=torch.arange(1, W + 1),
        neuron_freq=neuron_freq,
        neuron_frac_explained=best,
        neuron_frac_by_freq=frac,
        neuron_count=counts,
        key_freqs=key,
        n_dead_neurons=int((~alive).sum()),
        frac_neurons_explained=float(counted.double().mean()),
        mean_neuron_frac_explained=float(best[alive].mean()) if bool(alive.any()) else 0.0,
        losses=losses,
        gini_embed=gini(embed_norms),
        gini_wl=gini(wl_norms),
        embed_freq_norm=_per_freq_sumsq(embed_norms, basis)[1:].sqrt(),
        wl_freq_norm=_per_freq_sumsq(wl_norms, basis)[1:].sqrt(),
        logit_cos_coef=cos_c,
        logit_sin_coef=sin_c,
        logit_frac=lfrac,
        logit_residual_frac=residual,
    )


def _input_fourier_measures(
    task: Task,
    acts: torch.Tensor,
    weights: ModelWeights,
    threshold: float,
    min_neurons: int,
) -> InputFourierMeasures:
    """Neuron frequencies on the (a, b) grid and W_E's Fourier norms, in Z_p's basis over
    token order (the definitions of ``_fourier_measures``, input side only)."""
    p = task.p
    basis = fourier_basis(p).to(acts.device)
    assert task.n_pairs == p * p, "input-side Fourier measures need every (a, b) pair"
    frac, dead = neuron_freq_fractions(acts.reshape(p, p, -1), basis)  # rows are row-major (a, b)
    neuron_freq, best, counted = assign_neuron_freqs(frac, dead, threshold)
    counts = neuron_counts(neuron_freq, counted, basis.max_freq)
    alive = neuron_freq >= 0
    if weights.W_E is None:
        raise KeyError("the input-side Fourier measures read a token embedding")
    embed_norms = fourier_component_norms(weights.W_E[:p], basis)
    reason = task.spec.no_structure_reason or "the output has no group"
    return InputFourierMeasures(
        modulus=p,
        key_freq_threshold=float(threshold),
        note=f"input side only: a, b on the {p}x{p} grid in the Fourier basis of Z_{p} (token order); "
        f"output-side measures (restricted/excluded loss, W_L, logit structure) absent: {reason}",
        freqs=torch.arange(1, basis.max_freq + 1),
        neuron_freq=neuron_freq,
        neuron_frac_explained=best,
        neuron_count=counts,
        key_freqs=select_key_freqs(counts, min_neurons),
        n_dead_neurons=int((~alive).sum()),
        frac_neurons_explained=float(counted.double().mean()),
        mean_neuron_frac_explained=float(best[alive].mean()) if bool(alive.any()) else 0.0,
        gini_embed=gini(embed_norms),
        embed_freq_norm=_per_freq_sumsq(embed_norms, basis)[1:].sqrt(),
    )


def _last_mlp_block(params: Mapping[str, torch.Tensor]) -> int:
    """Index of the last block that has an MLP output matrix."""
    blocks = [int(m.group(1)) for k in params if (m := re.match(r"^blocks\.(\d+)\.mlp\.W_out$", k))]
    if not blocks:
        raise KeyError("params has no blocks.{i}.mlp.W_out: W_L (and its Gini) needs an MLP")
    return max(blocks)


#: why an attention-only model has no Fourier progress measures (in measures.csv's note)
NO_MLP_REASON = "no neurons to read (an attention-only model): the Fourier progress measures read the MLP's neurons"


def _split_losses(task: Task, logits: torch.Tensor) -> tuple[float, float, float, float]:
    """Train loss and accuracy, test loss and accuracy of ``logits`` (on any device; the split is
    taken by row indices made on the host from the task's mask, the same rows as the mask selects)."""
    labels = task.labels.to(logits.device)
    out = []
    for rows in (torch.nonzero(task.train_mask).flatten(), torch.nonzero(~task.train_mask).flatten()):
        rows = rows.to(logits.device)
        out += loss_and_accuracy(logits.index_select(0, rows), labels.index_select(0, rows))
    return out[0], out[1], out[2], out[3]


def _measures_without_neurons(
    task: Task, logits_all: torch.Tensor, weights: ModelWeights, reason: str
) -> ProgressMeasures:
    logits = logits_all.detach().double()
    train_loss, train_acc, test_loss, test_acc = _split_losses(task, logits)
    return ProgressMeasures(
        task=task.name,
        train_loss=train_loss,
        test_loss=test_loss,
        train_acc=train_acc,
        test_acc=test_acc,
        sq_norms=weights.sq_norms,
        fourier=None,
        no_structure_reason=reason,
        input_fourier=None,
    )


@torch.no_grad()
def compute_progress_measures(
    task: Task,
    logits_all: torch.Tensor,
    neuron_acts_all: torch.Tensor | None,
    params: Mapping[str, torch.Tensor] | ModelWeights,
    key_freq_threshold: float = 0.85,
    key_freq_min_neurons: int = 1,
    mlp_block: int | None = None,
) -> ProgressMeasures:
    """All progress measures of one checkpoint.

    ``logits_all`` [n_pairs, d_vocab_out]: last-position logits for every row of
    ``task.tokens`` (same order). ``neuron_acts_all`` [n_pairs, d_mlp]: the MLP's
    ``hook_post`` at the last position, of block ``mlp_block``. ``params``: the state
    dict in TransformerLens names, or a model's :class:`ModelWeights` (any architecture:
    ``ModelWeights.from_model``). W_L = W_out[mlp_block] @ W_U; ``mlp_block`` defaults
    to the last block in ``params`` (block 0 of the one-layer model), whose MLP is the
    one with a direct path to the unembedding -- pass the same block's activations.
    For multiply/divide only the non-zero pairs and outputs enter the Fourier measures
    (softmax over the p-1 non-zero outputs); the note says so and counts the pairs.
    ``neuron_acts_all`` None: a model without an MLP (attention-only); the Fourier
    measures read MLP neurons, so only losses, accuracies and weight norms are measured.

    Runs on the device of the logits, activations and params (one device for all): the
    task's labels and split and the group's bases are moved there, and only the numbers
    of the result are read on the host.
    """
    n_pairs = task.n_pairs
    if logits_all.shape != (n_pairs, task.d_vocab_out):
        raise ValueError(
            f"logits_all must be [{n_pairs}, {task.d_vocab_out}] (all of task.tokens), got {list(logits_all.shape)}"
        )
    weights = params if isinstance(params, ModelWeights) else ModelWeights.from_params(params, mlp_block)
    if neuron_acts_all is None:
        return _measures_without_neurons(task, logits_all, weights, NO_MLP_REASON)
    if (weights.W_E is None or weights.W_L is None) and (
        GroupFourier.for_task(task) is not None or task.spec.input_fourier
    ):
        reason = "the model offers no token embedding or neuron logit weights: the Fourier measures read both"
        return _measures_without_neurons(task, logits_all, weights, reason)
    if neuron_acts_all.dim() != 2 or neuron_acts_all.shape[0] != n_pairs:
        shape = list(neuron_acts_all.shape)
        raise ValueError(f"neuron_acts_all must be [{n_pairs}, d_mlp], got {shape}")
    logits = logits_all.detach().double()
    train_loss, train_acc, test_loss, test_acc = _split_losses(task, logits)
    gf = GroupFourier.for_task(task)
    fourier = None
    input_fourier = None
    if gf is None and task.spec.input_fourier:
        input_fourier = _input_fourier_measures(
            task, neuron_acts_all.detach(), weights, key_freq_threshold, key_freq_min_neurons
        )
    if gf is not None:
        fourier = _fourier_measures(
            task,
            gf,
            logits,
            neuron_acts_all.detach(),
            weights,
            key_freq_threshold,
            key_freq_min_neurons,
        )
    return ProgressMeasures(
        task=task.name,
        train_loss=train_loss,
        test_loss=test_loss,
        train_acc=train_acc,
        test_acc=test_acc,
        sq_norms=weights.sq_norms,
        fourier=fourier,
        no_structure_reason=None if gf is not None else task.spec.no_structure_reason,
        input_fourier=input_fourier,
    )
