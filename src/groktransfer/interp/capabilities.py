"""What a (model, task) pair offers a reading: the capabilities ``Reading.applies_to`` is answered from.

The model side comes from the model protocol's ``readings`` (``groktransfer.model.protocol``):
TransformerLens hook points and parameter names, attention patterns, MLP neurons, a token
embedding, an unembedding. A TransformerLens ``HookedTransformer`` (which has no ``readings``)
offers what its hook points show. The task side comes from what the task declares
(``groktransfer.tasks.family.TaskCapability``: operands, an answer after '=', a Fourier
basis) and from its answer view (an (a, b) grid, answer classes). Nothing here asks which
class a model or a task is.
"""

from __future__ import annotations

import re
from typing import Any

from groktransfer.model.protocol import Reading as ModelReading
from groktransfer.tasks.family import TaskCapability, task_capabilities
from groktransfer.utils.choices import Choice

from .answers import AnswerSet, answer_set

_PATTERN = re.compile(r"^blocks\.\d+\.attn\.hook_pattern$")
_MLP = re.compile(r"^blocks\.\d+\.mlp\.hook_post$")


class Need(Choice):
    """One capability a reading may need (see the module docstring)."""

    # ---- the model
    hooks = "hooks"  # TransformerLens hook points (run_with_hooks) and parameter names
    attention = "attention"  # attention patterns at blocks.{l}.attn.hook_pattern
    mlp = "mlp"  # MLP neurons at blocks.{l}.mlp.hook_post
    embedding = "embedding"  # a token embedding, embed.W_E
    unembedding = "unembedding"  # an unembedding, unembed.W_U
    neurons = "neurons"  # the model protocol's neuron reading (last-position activations)
    # ---- the task
    operands = "operands"  # operands a, b at known positions
    equals_answer = "equals_answer"  # the answer is read at '='
    fourier = "fourier"  # tokens read in a Fourier basis
    grid = "grid"  # every (a, b) pair: failure maps and neuron frequencies on the grid
    classes = "classes"  # answer classes (carry classes) to break results down by


def is_hooked(model: Any) -> bool:
    """Whether the model is read by TransformerLens hook names (ours with the reading, or TL's own)."""
    offered = getattr(model, "readings", None)
    if offered is not None:
        return ModelReading.transformer_lens in offered
    return hasattr(model, "run_with_hooks") and hasattr(model, "hook_dict")


def model_needs(model: Any) -> frozenset[Need]:
    """The capabilities ``model`` offers."""
    offered = frozenset(getattr(model, "readings", ()) or ())
    out = set()
    if ModelReading.neurons in offered:
        out.add(Need.neurons)
    if is_hooked(model):
        names = list(model.hook_dict)
        out.add(Need.hooks)
        if any(_PATTERN.match(n) for n in names):
            out.add(Need.attention)
        if any(_MLP.match(n) for n in names):
            out.add(Need.mlp)
        params = dict(model.named_parameters())
        if "embed.W_E" in params:
            out.add(Need.embedding)
        if "unembed.W_U" in params:
            out.add(Need.unembedding)
    return frozenset(out)


def task_needs(task: Any, aset: AnswerSet | None = None) -> frozenset[Need]:
    """The capabilities ``task`` offers (``aset``: its answer view, if already built)."""
    declared = task_capabilities(task) if not isinstance(task, AnswerSet) else frozenset()
    aset = aset if aset is not None else answer_set(task)
    out = {Need(str(c)) for c in declared}
    if aset.operands is not None or aset.operand_positions:
        out.add(Need.operands)
    if aset.has_grid:
        out.add(Need.grid)
    if aset.classes is not None:
        out.add(Need.classes)
    if aset.answer_names and all(n == "=" for n in aset.answer_names):
        out.add(Need.equals_answer)
    return frozenset(out)


def capabilities(model: Any, task: Any, aset: AnswerSet | None = None) -> frozenset[Need]:
    """Everything the pair offers."""
    return model_needs(model) | task_needs(task, aset)


__all__ = ["Need", "TaskCapability", "capabilities", "is_hooked", "model_needs", "task_needs"]
