"""K jobs trained as one model whose weights carry a leading member axis.

Each member is an ordinary :class:`~groktransfer.training.trainer.Trainer` (model, AdamW,
lr schedule, threshold tracker, callbacks) that never runs its own loop: it holds the
member's state in exactly the form a separate job holds it, so the callbacks that
write a run directory receive the same object either way. The ensemble keeps the
working copy of every member's weights stacked (``[K, ...]`` per parameter) and
moves them to and from the member trainers only when a callback needs them (at a
checkpoint) or when the set of members changes.

Why this is K independent trainings:

* forward: :func:`groktransfer.model.lastpos.last_position_logits` batches every product
  over the member axis and gathers only inside a member's slice of each table;
* loss: each member's mean cross-entropy over its own training pairs (float64), summed
  -- the gradient of a sum is each member's own gradient;
* gradient filter (Grokfast): element-wise, so one filter over the stacked gradients
  filters each member's as its own would (its state stacked like the optimizer's);
* optimizer: AdamW, Adam and SGD are element-wise (``OptimizerEntry.stackable``), so torch's
  own optimizer over the stacked tensors updates every member exactly as a separate one
  would; Muon is not (it orthogonalises whole matrices): its members train one at a
  time after a one-line notice (:func:`incompatibility`). Members whose
  learning rate or weight decay differ sit in separate param groups (one stacked
  tensor per parameter per group, concatenated for the forward); the lr schedule
  (warm-up, then constant or cosine) is the same ``LambdaLR`` factor a single job uses.

Members stop independently: when one stops early, reaches a non-finite loss or is
done, it is written out at its own epoch and dropped from the stack (the optimizer's
moments of the others are carried over), so the rest do not pay for it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from tqdm.auto import tqdm

from groktransfer.model.embedding_map import has_embedding_map
from groktransfer.model.protocol import model_class_of
from groktransfer.training.gradfilters import GradFilter, build_gradfilter
from groktransfer.training.optimizers import OPTIMIZERS
from groktransfer.training.trainer import EvalResult, NonFiniteWatch, Trainer, TrainingFailure, TrainOutcome

log = logging.getLogger(__name__)

MemberResult = TrainOutcome | TrainingFailure


class IncompatibleMembers(ValueError):
    """These jobs cannot share one ensemble (the message says why); train them separately."""


def incompatibility(members: Sequence[Trainer]) -> str | None:
    """Why these member trainers cannot train as one ensemble, or None if they can.

    What may differ: the weights (seed, model_seed, transfer condition), the train/test
    split (data_seed), the learning rate and the weight decay. Everything else must
    agree, because it is shared by construction: the shapes and activation, which
    parameters train, the task and its split sizes, betas/eps/warm-up/lr schedule, the loop's
    cadence and stopping rule, the epoch they start from, and the device.
    """
    if not members:
        return "no members"
    first = members[0]
    entry = OPTIMIZERS.get(str(first.optimizer_cfg.name))
    if not entry.stackable:
        return f"optimizer {first.optimizer_cfg.name}: {entry.why_not_stackable}"
    cfg = replace(first.model.config, model_seed=None)
    if model_class_of(first.model).stacked_forward_last(first.model.config) is None:
        return f"the {first.model.config.architecture} model offers no stacked forward for this config"
    if not first.cfg.fast_path:
        return "train.fast_path=false: an ensemble always trains on the fast path"
    if not first._plain:  # the stacked step is Trainer's full-batch, last-position one
        return (
            "ensembles train full batch on one answer position (minibatches, several answer positions: one at a time)"
        )
    if any(has_embedding_map(m.model) for m in members):
        return "an embedding-map member (transfer.embed_map) has no W_E parameter to stack"
    trainable = _trainable_names(first)
    opt = first.optimizer_cfg
    for m in members[1:]:
        if replace(m.model.config, model_seed=None) != cfg:
            return "model shapes differ"
        if _trainable_names(m) != trainable:
            return "different parameters are frozen"
        if (type(m.task), m.task.name, m.task.describe(), len(m.task.split[0])) != (
            type(first.task),
            first.task.name,
            first.task.describe(),
            len(first.task.split[0]),
        ):
            return "tasks differ"
        if m.cfg != first.cfg:
            return "train settings differ"
        if (m.optimizer_cfg.schedule, m.optimizer_cfg.final_lr_frac, m.total_steps) != (
            opt.schedule,
            opt.final_lr_frac,
            first.total_steps,
        ):
            return "lr schedules differ"
        if replace(m.optimizer_cfg, lr=0.0, weight_decay=0.0) != replace(opt, lr=0.0, weight_decay=0.0):
            return "optimizers differ (other than in lr and weight decay)"
        if m.gradfilter_cfg != first.gradfilter_cfg:
            return "gradient filters differ"
        if m.epoch != first.epoch:
            return "members start from different epochs"
        if m.device != first.device:
            return "devices differ"
    for m in members:
        if m._per_epoch:
            return "a member has per-epoch callbacks (profiler, fault injection)"
        if m.model.has_hooks():
            return "a member has hooks attached"
    has_state = [bool(m.optimizer.state) for m in members]
    if any(has_state) and not all(has_state):
        return "some members carry optimizer state and others do not"
    if first.gradfilter is not None and len({m.gradfilter.steps for m in members}) > 1:
        return "the members' gradient filters have seen different numbers of steps"
    return None


def _stack_state(states: Sequence[dict[str, Any]], shape: torch.Size) -> dict[str, Any]:
    """One stacked optimizer state from the members' states of one parameter: tensors of the
    parameter's shape (moments, momentum buffers) stacked, the rest (the step count, equal
    across members) taken from the first."""
    out: dict[str, Any] = {}
    for key, value in states[0].items():
        if torch.is_tensor(value) and value.shape == shape and value.ndim > 0:
            out[key] = torch.stack([s[key] for s in states])
        else:
            out[key] = value.clone() if torch.is_tensor(value) else value
    return out


def _member_state(state: dict[str, Any], local: int, shape: torch.Size) -> dict[str, Any]:
    """Member ``local``'s slice of a stacked optimizer state (the inverse of :func:`_stack_state`)."""
    out: dict[str, Any] = {}
    for key, value in state.items():
        if torch.is_tensor(value) and value.ndim == len(shape) + 1 and value.shape[1:] == shape:
            out[key] = value[local].clone()
        else:
            out[key] = value.clone() if torch.is_tensor(value) else value
    return out


def _trainable_names(trainer: Trainer) -> list[str]:
    return [n for n, p in trainer.model.named_parameters() if p.requires_grad]


@dataclass
class _Group:
    """Members sharing (lr, weight decay): one stacked tensor per parameter."""

    members: list[int]  # indices into EnsembleTrainer.members
    params: dict[str, torch.Tensor]  # name -> [k_g, ...]; nn.Parameter where it trains
    gradfilter: GradFilter | None = None  # the members' filters, stacked


class EnsembleTrainer:
    """Train member trainers together; returns each member's outcome (or its failure)."""

    def __init__(self, members: Sequence[Trainer], on_done: Callable[[int, MemberResult], None] | None = None) -> None:
        """``on_done(i, result)`` runs as soon as member i stops, its trainer holding its final state."""
        reason = incompatibility(members)
        if reason is not None:
            raise IncompatibleMembers(reason)
        self.members = list(members)
        self.on_done = on_done
        first = self.members[0]
        self.cfg = first.cfg
        self.device = first.device
        self.loss_dtype = first._loss_dtype
        self.loss_fn = first._loss_fn  # train.loss (members agree: their train settings are equal)
        forward = model_class_of(first.model).stacked_forward_last(first.model.config)
        assert forward is not None  # incompatibility() checked it
        self.forward = forward
        self.names = [n for n, _ in first.model.named_parameters()]
        self.trainable = set(_trainable_names(first))
        self.epoch = first.epoch
        self.active: list[int] = list(range(len(self.members)))
        self.results: dict[int, MemberResult] = {}
        self._groups: list[_Group] = []
        self.optimizer: torch.optim.Optimizer | None = None
        self.scheduler: torch.optim.lr_scheduler.LambdaLR | None = None

    # ---- moving state between the stack and the member trainers ---------------
    def _stack(self) -> None:
        """Build the stacked weights, one AdamW and the lr schedule from the active members."""
        by_hparams: dict[tuple[float, float], list[int]] = {}
        for i in self.active:
            opt = self.members[i].optimizer_cfg
            by_hparams.setdefault((float(opt.lr), float(opt.weight_decay)), []).append(i)
        self._groups, param_groups = [], []
        for (lr, wd), idx in by_hparams.items():
            params: dict[str, torch.Tensor] = {}
            for name in self.names:
                stacked = torch.stack([self.members[i].model.get_parameter(name).detach() for i in idx])
                params[name] = torch.nn.Parameter(stacked) if name in self.trainable else stacked
            self._groups.append(_Group(idx, params))
            param_groups.append(
                {"params": [params[n] for n in self.names if n in self.trainable], "lr": lr, "weight_decay": wd}
            )
        first = self.members[self.active[0]]
        self.optimizer = OPTIMIZERS.get(str(first.optimizer_cfg.name)).build(param_groups, first.optimizer_cfg, None)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, first.lr_factor)  # the members' schedule
        for group, param_group in zip(self._groups, self.optimizer.param_groups):
            lead = self.members[group.members[0]]
            param_group["lr"] = lead.optimizer.param_groups[0]["lr"]  # the members' current (warm-up) lr
            for name in self.names:
                if name not in self.trainable:
                    continue
                member_params = [self.members[i].model.get_parameter(name) for i in group.members]
                states = [self.members[i].optimizer.state.get(p) for i, p in zip(group.members, member_params)]
                if states[0]:
                    self.optimizer.state[group.params[name]] = _stack_state(states, member_params[0].shape)
            group.gradfilter = self._stacked_filter(group.members)
        lead_sched = first.scheduler.state_dict()
        self.scheduler.last_epoch = lead_sched["last_epoch"]
        self.scheduler._step_count = lead_sched["_step_count"]
        self.scheduler._last_lr = [g["lr"] for g in self.optimizer.param_groups]
        self._tokens = self._stacked_data()
        self._nonfinite = NonFiniteWatch((len(self.order),), self.device)  # rows of this stack

    @torch.no_grad()
    def _unstack(self, which: Sequence[int] | None = None) -> None:
        """Write the stacked state back into the member trainers (weights, AdamW, lr schedule)."""
        assert self.optimizer is not None and self.scheduler is not None
        wanted = set(self.active if which is None else which)
        for group, param_group in zip(self._groups, self.optimizer.param_groups):
            for local, i in enumerate(group.members):
                if i not in wanted:
                    continue
                member = self.members[i]
                for name in self.names:
                    param = member.model.get_parameter(name)
                    param.copy_(group.params[name][local])
                    state = self.optimizer.state.get(group.params[name]) if name in self.trainable else None
                    if state:
                        member.optimizer.state[param] = _member_state(state, local, param.shape)
                if group.gradfilter is not None:
                    axis = group.gradfilter.state_axis
                    member.gradfilter.steps = group.gradfilter.steps
                    member.gradfilter.state = {
                        n: {
                            k: v.select(axis(k), local).clone(memory_format=torch.contiguous_format)
                            for k, v in s.items()
                        }
                        for n, s in group.gradfilter.state.items()
                    }
                member.optimizer.param_groups[0]["lr"] = param_group["lr"]
                member.scheduler.last_epoch = self.scheduler.last_epoch
                member.scheduler._step_count = self.scheduler._step_count
                member.scheduler._last_lr = [param_group["lr"]]
                member.epoch = self.epoch

    def _stacked_filter(self, idx: Sequence[int]) -> GradFilter | None:
        """A filter over the stacked gradients of members ``idx``: their state stacked on a new
        axis where the parameter's shape begins (``GradFilter.state_axis``), as the gradients are."""
        lead = self.members[idx[0]]
        stacked = build_gradfilter(lead.gradfilter_cfg)
        if stacked is None:
            return None
        filters = [self.members[i].gradfilter for i in idx]
        stacked.member_axis = True  # its parameters are the members' stacked on a leading axis
        stacked.steps = lead.gradfilter.steps
        stacked.state = {
            name: {k: torch.stack([f.state[name][k] for f in filters], dim=stacked.state_axis(k)) for k in s}
            for name, s in lead.gradfilter.state.items()
        }
        return stacked

    def _stacked_data(self) -> dict[str, torch.Tensor]:
        order = self.order
        pick = lambda attr: torch.stack([getattr(self.members[i], attr) for i in order])  # noqa: E731
        return {
            "train_tokens": pick("_train_tokens"),  # [k, b, p]
            "train_labels": pick("_train_labels"),  # [k, b]
            "test_tokens": pick("_test_tokens"),
            "test_labels": pick("_test_labels"),
        }

    @property
    def order(self) -> list[int]:
        """Member index of each row of the stack (groups concatenated)."""
        return [i for g in self._groups for i in g.members]

    def _params(self) -> dict[str, torch.Tensor]:
        if len(self._groups) == 1:
            return self._groups[0].params
        return {n: torch.cat([g.params[n] for g in self._groups]) for n in self.names}

    # ---- the step ---------------------------------------------------------------
    def _forward_train(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits on each member's training pairs [k, b, o] and each member's float64 loss [k]."""
        logits = self.forward(self._params(), self._tokens["train_tokens"])
        k, b, o = logits.shape
        per_example = self.loss_fn(
            logits.to(self.loss_dtype).reshape(k * b, o),
            self._tokens["train_labels"].reshape(k * b),
            self.loss_dtype,
            "none",
        )
        return logits, per_example.view(k, b).mean(dim=1)

    @torch.no_grad()
    def _evaluate(self, train_logits: torch.Tensor, train_losses: torch.Tensor) -> list[EvalResult]:
        """Per-member results, as ``Trainer._evaluate_reusing`` computes them for one model."""
        test_logits = self.forward(self._params(), self._tokens["test_tokens"]).to(self.loss_dtype)
        k, n_test, o = test_logits.shape
        test_losses = (
            self.loss_fn(
                test_logits.reshape(k * n_test, o),
                self._tokens["test_labels"].reshape(k * n_test),
                self.loss_dtype,
                "none",
            )
            .view(k, n_test)
            .mean(dim=1)
        )
        # accuracies as exact counts / n, as Trainer.accuracy computes them
        test_correct = (test_logits.argmax(dim=-1) == self._tokens["test_labels"]).sum(dim=1)
        train_correct = (train_logits.argmax(dim=-1) == self._tokens["train_labels"]).sum(dim=1)
        n_train = train_logits.shape[1]
        lrs = [g["lr"] for g, group in zip(self.optimizer.param_groups, self._groups) for _ in group.members]
        dtype = train_losses.dtype  # counts are exact in it (float64; float32 on MPS below 2^24 pairs)
        rows = torch.stack(
            [train_losses, test_losses, train_correct.to(dtype), test_correct.to(dtype)]
        ).tolist()  # one read
        return [
            EvalResult(self.epoch, rows[0][r], rows[1][r], rows[2][r] / n_train, rows[3][r] / n_test, float(lrs[r]))
            for r in range(len(self.order))
        ]

    def _step(self, losses: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        losses.sum().backward()
        for group in self._groups:
            if group.gradfilter is not None:
                group.gradfilter.apply([(n, group.params[n]) for n in self.names if n in self.trainable])
        self.optimizer.step()
        self.scheduler.step()

    # ---- the loop -----------------------------------------------------------------
    def _done(self, i: int) -> bool:
        member = self.members[i]
        return self.epoch >= int(self.cfg.max_epochs) or member._should_stop_early()

    def _finish(self, i: int, started: float, start_epoch: int, result: MemberResult | None = None) -> None:
        member = self.members[i]
        if result is None:
            assert member.last_eval is not None
            result = TrainOutcome(
                last_eval=member.last_eval,
                stop_reason="early_stop" if member._should_stop_early() else "max_epochs",
                epochs_trained=self.epoch - start_epoch,
                train_seconds=time.monotonic() - started,
            )
        self.results[i] = result

    def _drop(self, finished: Sequence[int]) -> None:
        """Remove finished members from the stack, keeping the others' state."""
        if not finished:
            return
        self._unstack()
        self.active = [i for i in self.active if i not in set(finished)]
        for i in finished:
            if self.on_done is not None:
                self.on_done(i, self.results[i])
        if self.active:
            self._stack()

    def _eval_next(self, max_epochs: int) -> bool:
        """Whether the members evaluate before the next step (they share the cadence)."""
        return self.members[self.active[0]]._is_eval_epoch(self.epoch) or self.epoch == max_epochs

    def fit(self) -> list[MemberResult]:
        """Train every member until it stops; results in member order."""
        max_epochs = int(self.cfg.max_epochs)
        ckpt_every = int(self.cfg.checkpoint_every)
        deadline = None
        if self.cfg.timeout_minutes is not None:
            deadline = time.monotonic() + 60.0 * float(self.cfg.timeout_minutes)
        started, start_epoch = time.monotonic(), self.epoch
        eval_due = {i: self.members[i].last_eval is None for i in self.active}
        for member in self.members:
            for cb in member.callbacks:
                cb.on_fit_start(member)
        self._stack()
        bar = tqdm(
            total=max_epochs,
            initial=self.epoch,
            disable=None if self.cfg.progress_bar else True,
            desc=f"ensemble of {len(self.members)}",
            unit="ep",
            mininterval=1.0,
            dynamic_ncols=True,
        )
        try:
            while self.active:
                done = [i for i in self.active if not eval_due[i] and self._done(i)]
                for i in done:
                    self._finish(i, started, start_epoch)
                self._drop(done)
                if not self.active:
                    break
                logits, losses = self._forward_train()
                due = [r for r, i in enumerate(self.order) if eval_due[i]]
                if due:
                    if self.epoch % ckpt_every == 0:
                        self._unstack()  # callbacks save the member's weights and AdamW state
                    results = self._evaluate(logits.detach(), losses.detach())
                    finished = []
                    for r in due:
                        i = self.order[r]
                        self.members[i]._record(results[r])
                        eval_due[i] = False
                        if self._done(i):
                            self._finish(i, started, start_epoch)
                            finished.append(i)
                    if finished:
                        self._drop(finished)
                        continue  # recompute the step without them
                self._step(losses)
                self.epoch += 1
                bar.update(1)
                self._nonfinite.update(losses.detach(), self.epoch)
                timed_out = deadline is not None and time.monotonic() > deadline
                failed = []
                if self._nonfinite.every_epoch or timed_out or self._eval_next(max_epochs):
                    for r, epoch, bad in self._nonfinite.failures():
                        failed.append(self.order[r])
                        self._finish(
                            failed[-1],
                            started,
                            start_epoch,
                            TrainingFailure(f"non-finite training loss ({bad})", epoch),
                        )
                if timed_out:
                    for i in self.active:
                        if i not in failed:
                            reason = f"timeout after {self.cfg.timeout_minutes} min"
                            self._finish(i, started, start_epoch, TrainingFailure(reason, self.epoch))
                    failed = list(self.active)
                self._drop(failed)
                for i in self.active:
                    self.members[i].epoch = self.epoch
                    eval_due[i] = self.members[i]._is_eval_epoch(self.epoch) or self.epoch == max_epochs
        finally:
            bar.close()
            for member in self.members:
                for cb in member.callbacks:
                    cb.on_fit_end(member)
        return [self.results[i] for i in range(len(self.members))]
