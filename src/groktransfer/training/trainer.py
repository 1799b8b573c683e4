"""Training loop: evaluation cadence, thresholds, early stop, checkpoints.

Full batch by default (``train.batch_size: null``); with a batch size each epoch is
one shuffled pass over the training set in minibatches, the order a pure function
of (data_seed, epoch) so a resumed run replays it exactly.

Tasks come in two shapes. The modular tasks have one answer, read at the last
position (``labels`` [N]); digit tasks have several answer digits, each predicted at
the position before it (``labels`` [N, k], ``answer_positions`` [k]): their loss is
the mean cross-entropy over exactly those positions, and their accuracy -- the
threshold metric -- is exact match (every answer digit right). Per-digit accuracy is
logged beside it as ``*_digit_acc``.

The loop is deliberately small. Everything that is not "take a step, decide whether
to evaluate, decide whether to stop" -- measures, sinks, checkpoint files -- hangs
off ``TrainerCallback``s so the loop stays readable and the hot path stays fast:
one fused last-position forward, a float64 cross-entropy, backward, (a gradient filter,)
the optimizer's step.
Evaluation runs on all pairs every ``eval_every`` epochs, never every step.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from groktransfer.config.schema import GradFilterConfig, OptimizerConfig, Schedule, TrainConfig
from groktransfer.runs.rundir import threshold_key
from groktransfer.tasks.modular import Task
from groktransfer.training.device import loss_dtype, to_cpu
from groktransfer.training.gradfilters import build_gradfilter
from groktransfer.training.losses import LOSSES
from groktransfer.training.optimizers import build_optimizer

#: examples per forward when a task answered at several positions is evaluated (the memory estimate reads it)
EVAL_CHUNK = 8192


class TrainingFailure(RuntimeError):
    """Training cannot go on (non-finite loss, timeout); ``epoch`` says where."""

    def __init__(self, reason: str, epoch: int) -> None:
        super().__init__(f"{reason} (epoch {epoch})")
        self.reason = reason
        self.epoch = epoch


@dataclass
class EvalResult:
    """Losses and accuracies of one evaluation on all pairs."""

    epoch: int
    train_loss: float
    test_loss: float
    train_acc: float
    test_acc: float
    lr: float
    # digit tasks only: fraction of answer digits right (train_acc/test_acc are exact match there)
    train_digit_acc: float | None = None
    test_digit_acc: float | None = None

    def as_dict(self) -> dict[str, float]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass
class Streak:
    """Where the current unbroken run of evals meeting a criterion began.

    Shared by early stopping (the last threshold held for ``patience`` epochs) and by
    source-checkpoint selection (a criterion held for ``held_for`` epochs).
    """

    start: int | None = None

    def update(self, epoch: int, ok: bool) -> int:
        """Record one eval; returns the epochs the criterion has held (0 when it does not hold)."""
        if not ok:
            self.start = None
            return 0
        if self.start is None:
            self.start = epoch
        return epoch - self.start

    def held_for(self, epoch: int) -> int:
        return 0 if self.start is None else epoch - self.start


@dataclass
class ThresholdTracker:
    """First epoch at which test accuracy reached each threshold, and whether it held.

    ``streak`` is the current unbroken run of evals at or above the *last* threshold:
    early stopping waits for it to last ``patience`` epochs.
    """

    thresholds: list[float]
    first_epoch: dict[float, int | None] = field(default_factory=dict)
    held: dict[float, bool] = field(default_factory=dict)
    streak: Streak = field(default_factory=Streak)

    def __post_init__(self) -> None:
        for t in self.thresholds:
            self.first_epoch.setdefault(t, None)
            self.held.setdefault(t, False)

    def update(self, epoch: int, test_acc: float) -> None:
        for t in self.thresholds:
            if test_acc >= t:
                if self.first_epoch[t] is None:
                    self.first_epoch[t] = epoch
                    self.held[t] = True
            elif self.first_epoch[t] is not None:
                self.held[t] = False
        self.streak.update(epoch, test_acc >= self.thresholds[-1])

    def held_for(self, epoch: int) -> int:
        """Epochs the last threshold has held without a break (0 if not holding)."""
        return self.streak.held_for(epoch)

    def as_record(self) -> dict[str, dict[str, Any]]:
        return {threshold_key(t): {"epoch": self.first_epoch[t], "held": bool(self.held[t])} for t in self.thresholds}

    def state_dict(self) -> dict[str, Any]:
        return {
            "first_epoch": {threshold_key(t): e for t, e in self.first_epoch.items()},
            "held": {threshold_key(t): h for t, h in self.held.items()},
            "streak_start": self.streak.start,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for t in self.thresholds:
            self.first_epoch[t] = state["first_epoch"][threshold_key(t)]
            self.held[t] = state["held"][threshold_key(t)]
        self.streak.start = state["streak_start"]


class NonFiniteWatch:
    """The first epoch at which each loss was not finite, and that loss, kept on the losses' device.

    Reading a loss on the host every epoch makes a GPU wait for the host every epoch. So on an
    accelerator the loop records here, without reading, and reads once before it reads anything
    else anyway (an evaluation, a time limit): a failure names the same epoch and loss as on the
    CPU, a few epochs later. On the CPU, where reading costs nothing, it is read every epoch.
    ``shape``: () for one model, (k,) for an ensemble's k rows.
    """

    def __init__(self, shape: tuple[int, ...], device: torch.device) -> None:
        self.epoch = torch.full(shape, -1, dtype=torch.long, device=device)
        self.loss = torch.zeros(shape, dtype=loss_dtype(device), device=device)
        self.every_epoch = device.type == "cpu"
        self.pending = False  # whether anything may have been recorded

    def update(self, loss: torch.Tensor, epoch: int) -> None:
        if self.every_epoch and bool(torch.isfinite(loss).all()):
            return  # the CPU's usual case: read at once, nothing to keep
        self.pending = True
        new = (self.epoch < 0) & ~torch.isfinite(loss)
        self.epoch = torch.where(new, epoch, self.epoch)
        self.loss = torch.where(new, loss.detach().to(self.loss.dtype), self.loss)

    def failures(self) -> list[tuple[int, int, float]]:
        """(row, first non-finite epoch, its loss) of each row that had one: one read on the host."""
        if not self.pending:
            return []
        epochs, losses = torch.stack([self.epoch.to(self.loss.dtype), self.loss]).reshape(2, -1).tolist()
        return [(row, int(e), bad) for row, (e, bad) in enumerate(zip(epochs, losses)) if e >= 0]

    def raise_first(self) -> None:
        for _, epoch, bad in self.failures():
            raise TrainingFailure(f"non-finite training loss ({bad})", epoch)


def _batch_order_seed(data_seed: int, epoch: int) -> int:
    """Seed of one epoch's minibatch order: a function of the data and the epoch only."""
    return (int(data_seed) * 1_000_003 + int(epoch)) % (2**63 - 1)


class TrainerCallback:
    """Hooks attached to the loop (run-directory files, the profiler, tests' fault injection).

    Override what you need; the defaults do nothing. ``on_fit_start`` runs when ``fit``
    begins, ``on_epoch_end`` after every step (keep it cheap: it is on the hot path),
    ``on_eval`` after each evaluation, ``on_checkpoint`` after each checkpoint
    evaluation, ``on_fit_end`` when the loop ends for any reason.
    """

    def on_fit_start(self, trainer: Trainer) -> None:
        pass

    def on_epoch_end(self, trainer: Trainer, loss: torch.Tensor) -> None:
        pass

    def on_eval(self, trainer: Trainer, result: EvalResult) -> None:
        pass

    def on_checkpoint(self, trainer: Trainer, result: EvalResult) -> None:
        pass

    def on_fit_end(self, trainer: Trainer) -> None:
        pass


@dataclass
class TrainOutcome:
    """How the loop ended."""

    last_eval: EvalResult
    stop_reason: str  # early_stop | max_epochs
    epochs_trained: int
    train_seconds: float


def accuracy(correct: torch.Tensor) -> float:
    """Fraction of True, as an exact count over n in float64 (on any device, MPS included)."""
    return int(correct.sum()) / correct.numel()


def warmup_factor(warmup_steps: int):
    """Linear warm-up as in Nanda et al.: factor min(step / warmup, 1), so step 0 has lr 0."""

    def factor(step: int) -> float:
        return 1.0 if warmup_steps <= 0 else min(step / warmup_steps, 1.0)

    return factor


def lr_factor(cfg: OptimizerConfig, total_steps: int):
    """The lr multiplier after ``step`` optimizer steps: the warm-up, then ``cfg.schedule``.

    cosine: from 1 at the end of the warm-up to ``final_lr_frac`` at ``total_steps`` (the
    last step of ``train.max_epochs``) along half a cosine, then held. A pure function of
    the step count, so a resumed run (the scheduler's step count is in its state) continues
    on the same curve.
    """
    warmup = warmup_factor(int(cfg.warmup_steps))
    if Schedule(cfg.schedule) == Schedule.constant:
        return warmup
    start, final = int(cfg.warmup_steps), float(cfg.final_lr_frac)
    span = max(int(total_steps) - start, 1)

    def factor(step: int) -> float:
        if step < start:
            return warmup(step)
        progress = min((step - start) / span, 1.0)
        return final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def steps_per_epoch(n_train: int, batch_size: int | None) -> int:
    """Optimizer steps in one epoch: 1 at full batch, else one per (last possibly short) minibatch."""
    if batch_size is None or batch_size >= n_train:
        return 1
    return math.ceil(n_train / batch_size)


class Trainer:
    """Trainer for one model on one task (full batch unless ``train.batch_size`` is set)."""

    def __init__(
        self,
        model: torch.nn.Module,
        task: Task,
        optimizer_cfg: OptimizerConfig,
        train_cfg: TrainConfig,
        callbacks: Sequence[TrainerCallback] = (),
        gradfilter_cfg: GradFilterConfig | None = None,
    ) -> None:
        self.model = model
        self.task = task
        self.cfg = train_cfg
        self.callbacks = list(callbacks)
        self._per_epoch = [cb for cb in self.callbacks if type(cb).on_epoch_end is not TrainerCallback.on_epoch_end]
        self.optimizer_cfg = optimizer_cfg
        self.optimizer = build_optimizer(model, optimizer_cfg)
        # Grokfast's filter between backward and the step (None: none); see groktransfer.training.gradfilters
        self.gradfilter_cfg = gradfilter_cfg if gradfilter_cfg is not None else GradFilterConfig()
        self.gradfilter = build_gradfilter(self.gradfilter_cfg)
        self._filtered = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self.batch_size = None if train_cfg.batch_size is None else int(train_cfg.batch_size)
        n_train = int(task.train_mask.sum())
        self.total_steps = int(train_cfg.max_epochs) * steps_per_epoch(n_train, self.batch_size)
        self.lr_factor = lr_factor(optimizer_cfg, self.total_steps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self.lr_factor)
        self.thresholds = ThresholdTracker([float(t) for t in train_cfg.thresholds])
        self.epoch = 0
        self.last_eval: EvalResult | None = None
        # The task's tensors live where the model does (train.device); see groktransfer.training.device.
        self.device = next(model.parameters()).device
        self._loss_dtype = loss_dtype(self.device)
        # train.loss: what the loop minimises and its loss columns report (groktransfer.training.losses)
        self._loss_fn = LOSSES.get(str(train_cfg.loss)).fn
        train_idx, _ = task.split
        on_device = lambda t: t.to(self.device).contiguous()  # noqa: E731
        self._train_tokens = on_device(task.tokens[train_idx])
        self._train_labels = on_device(task.labels[train_idx])
        self._all_tokens = on_device(task.tokens)
        self._all_labels = on_device(task.labels)
        self._train_mask = on_device(task.train_mask)
        self._test_tokens = on_device(task.tokens[~task.train_mask])
        self._test_labels = on_device(task.labels[~task.train_mask])
        # the model's last-position forward (the model protocol), unless train.fast_path=false
        # asks for the full-sequence forward where the model has one (hooks, comparisons)
        self._fast = bool(train_cfg.fast_path) or not getattr(model, "every_position", False)
        # several answer positions (digit tasks): labels [N, k] scored at task.answer_positions
        self._multi = task.labels.ndim == 2
        self._answer_positions = on_device(task.answer_positions) if self._multi else None
        self._nonfinite = NonFiniteWatch((), self.device)
        # the original loop (one last-position answer, full batch) reuses the step's forward for evals
        self._plain = not self._multi and self.batch_size is None
        # one answer in minibatches: an evaluation reuses the epoch's first minibatch (see _evaluate_with_batch)
        self._first_batch_evals = not self._multi and self.batch_size is not None and self.batch_size < n_train

    # ---- model calls --------------------------------------------------------
    def last_logits(self, tokens: torch.Tensor) -> torch.Tensor:
        if self._fast:
            return self.model.forward_last(tokens)
        return self.model(tokens)[:, -1]

    def answer_logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits at the answer positions: [batch, k, d_vocab_out] (multi) or [batch, d_vocab_out]."""
        if self._multi:
            return self.model(tokens)[:, self._answer_positions]
        return self.last_logits(tokens)

    def loss(self, tokens: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean training loss (train.loss; float64 cross-entropy by default) over the answer positions."""
        return self._logits_and_loss(tokens, labels)[1]

    def _logits_and_loss(self, tokens: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The answer logits and :meth:`loss` from them (in the loss dtype: float64 where the device has it)."""
        logits = self.answer_logits(tokens)
        if self._multi:
            return logits, self._loss_fn(logits.flatten(0, 1), labels.flatten(), self._loss_dtype, "mean")
        return logits, self._loss_fn(logits, labels, self._loss_dtype, "mean")

    @torch.no_grad()
    def _evaluate_multi(self, chunk: int = EVAL_CHUNK) -> EvalResult:
        """Digit tasks: per-example mean loss over answer digits, exact-match and per-digit accuracy."""
        losses, exact, digit = [], [], []
        for start in range(0, self._all_tokens.shape[0], chunk):
            tokens, labels = self._all_tokens[start : start + chunk], self._all_labels[start : start + chunk]
            logits = self.answer_logits(tokens).to(self._loss_dtype)  # [b, k, v]
            per_digit = self._loss_fn(logits.flatten(0, 1), labels.flatten(), self._loss_dtype, "none")
            losses.append(per_digit.view(labels.shape).mean(dim=1))
            right = logits.argmax(dim=-1) == labels  # [b, k]
            exact.append(right.all(dim=1).double())
            digit.append(right.double().mean(dim=1))
        loss, ex, dg = torch.cat(losses), torch.cat(exact), torch.cat(digit)
        train, test = self._train_mask, ~self._train_mask
        return EvalResult(
            epoch=self.epoch,
            train_loss=float(loss[train].mean()),
            test_loss=float(loss[test].mean()),
            train_acc=float(ex[train].mean()),
            test_acc=float(ex[test].mean()),
            lr=float(self.optimizer.param_groups[0]["lr"]),
            train_digit_acc=float(dg[train].mean()),
            test_digit_acc=float(dg[test].mean()),
        )

    @torch.no_grad()
    def evaluate(self) -> EvalResult:
        """Loss and accuracy on the train and test pairs, from one forward over all pairs."""
        if self._multi:
            return self._evaluate_multi()
        logits = self.last_logits(self._all_tokens).to(self._loss_dtype)
        losses = self._loss_fn(logits, self._all_labels, self._loss_dtype, "none")
        correct = logits.argmax(dim=-1) == self._all_labels
        train, test = self._train_mask, ~self._train_mask
        return self._result(
            losses[train].mean(), accuracy(correct[train]), losses[test].mean(), accuracy(correct[test])
        )

    @torch.no_grad()
    def _evaluate_reusing(self, train_logits: torch.Tensor, train_loss: torch.Tensor) -> EvalResult:
        """The same numbers as :meth:`evaluate`, reusing the training step's forward.

        The step about to be taken has already computed the train pairs' logits with
        the current weights, so only the test pairs need a forward: the evaluation
        costs 70% of a full one (at frac_train 0.3).
        """
        train_acc = accuracy(train_logits.argmax(dim=-1) == self._train_labels)
        test_logits = self.last_logits(self._test_tokens).to(self._loss_dtype)
        test_loss = self._loss_fn(test_logits, self._test_labels, self._loss_dtype, "mean")
        test_acc = accuracy(test_logits.argmax(dim=-1) == self._test_labels)
        return self._result(train_loss, train_acc, test_loss, test_acc)

    @torch.no_grad()
    def _evaluate_with_batch(self, idx: torch.Tensor, batch_logits: torch.Tensor) -> EvalResult:
        """The same figures as :meth:`evaluate` (one answer, minibatches), reusing the epoch's first minibatch.

        What is exact: an evaluation at the start of an epoch reads the weights the epoch's
        *first* minibatch is computed with, so that minibatch's logits are the evaluation's
        for its pairs, and only the other training pairs and the test pairs need a forward
        (512 of 4,704 training pairs at p = 97, frac_train 0.5). The later minibatches
        follow a step each, so their logits are not those of the evaluated weights, and a
        running mean over them (what many training scripts log as training accuracy) is
        not used. Per-example losses are put back in training-pair order and averaged in
        float64 exactly as :meth:`evaluate` averages them; the logits come from products of
        other sizes than one forward over all pairs, so a loss can differ from it in the
        last bits (the accuracies are the same counts).
        """
        n_train, idx = self._train_tokens.shape[0], idx.to(self.device)
        others = torch.ones(n_train, dtype=torch.bool, device=self.device)
        others[idx] = False
        other_tokens = self._train_tokens[others]
        # one forward for the other training pairs and the test pairs
        forward = self.last_logits(torch.cat([other_tokens, self._test_tokens])).to(self._loss_dtype)
        logits = torch.empty(n_train, forward.shape[-1], dtype=self._loss_dtype, device=self.device)
        logits[idx] = batch_logits.to(self._loss_dtype)
        logits[others] = forward[: other_tokens.shape[0]]
        test_logits = forward[other_tokens.shape[0] :]
        train_losses = self._loss_fn(logits, self._train_labels, self._loss_dtype, "none")
        test_losses = self._loss_fn(test_logits, self._test_labels, self._loss_dtype, "none")
        return self._result(
            train_losses.mean(),
            accuracy(logits.argmax(dim=-1) == self._train_labels),
            test_losses.mean(),
            accuracy(test_logits.argmax(dim=-1) == self._test_labels),
        )

    def _result(self, train_loss, train_acc, test_loss, test_acc) -> EvalResult:
        return EvalResult(
            epoch=self.epoch,
            train_loss=float(train_loss),
            test_loss=float(test_loss),
            train_acc=float(train_acc),
            test_acc=float(test_acc),
            lr=float(self.optimizer.param_groups[0]["lr"]),
        )

    def _forward_train(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits on the training pairs and their loss (train.loss: float64 cross-entropy, the paper's precision, by default)."""
        logits = self.last_logits(self._train_tokens)
        loss = self._loss_fn(logits, self._train_labels, self._loss_dtype, "mean")
        return logits, loss

    def _batch_order(self) -> torch.Tensor:
        """This epoch's shuffle of the training pairs: a function of (data_seed, epoch) only."""
        gen = torch.Generator().manual_seed(_batch_order_seed(self.task.data_seed, self.epoch))
        # drawn on the CPU: one order on every device
        return torch.randperm(self._train_tokens.shape[0], generator=gen).to(self.device)

    def _train_epoch(self, first_loss: torch.Tensor | None = None) -> torch.Tensor:
        """Multi-position targets or minibatches: one epoch of steps; returns the mean loss before them.

        Full batch: one step. With ``batch_size``: one shuffled pass, the order a function of
        (data_seed, epoch) only, so a resumed run replays it exactly. ``first_loss``: the first
        minibatch's loss, already computed (by an evaluation that reused its forward).
        """
        n_train = self._train_tokens.shape[0]
        if self.batch_size is None or self.batch_size >= n_train:
            loss = self.loss(self._train_tokens, self._train_labels)
            self._step(loss)
            return loss.detach()
        order = self._batch_order()
        total = torch.zeros((), dtype=self._loss_dtype, device=self.device)
        for start in range(0, n_train, self.batch_size):
            idx = order[start : start + self.batch_size]
            reused = start == 0 and first_loss is not None
            loss = first_loss if reused else self.loss(self._train_tokens[idx], self._train_labels[idx])
            self._step(loss)
            total += loss.detach() * idx.numel()
        return total / n_train

    def _step(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.gradfilter is not None:
            self.gradfilter.apply(self._filtered)
        self.optimizer.step()
        self.scheduler.step()

    def train_step(self) -> torch.Tensor:
        """One epoch (a full-batch AdamW step by default); returns the (float64) training loss before it."""
        if not self._plain:
            return self._train_epoch()
        _, loss = self._forward_train()
        self._step(loss)
        return loss.detach()

    # ---- loop ---------------------------------------------------------------
    def _is_eval_epoch(self, epoch: int) -> bool:
        return epoch % int(self.cfg.eval_every) == 0 or epoch % int(self.cfg.checkpoint_every) == 0

    def _should_stop_early(self) -> bool:
        patience = int(self.cfg.patience)
        return patience > 0 and self.thresholds.held_for(self.epoch) >= patience

    def _record(self, result: EvalResult) -> EvalResult:
        self.last_eval = result
        self.thresholds.update(result.epoch, result.test_acc)
        for cb in self.callbacks:
            cb.on_eval(self, result)
        if result.epoch % int(self.cfg.checkpoint_every) == 0:
            for cb in self.callbacks:
                cb.on_checkpoint(self, result)
        return result

    def _end_epoch(self, loss: torch.Tensor, bar: Any, deadline: float | None, max_epochs: int) -> bool:
        """Bookkeeping after one epoch's update, the same on both loop paths: count the
        epoch, fail on a non-finite loss (read when :class:`NonFiniteWatch` says) or a spent
        time budget, run per-epoch callbacks. Returns whether the next iteration must evaluate first."""
        self.epoch += 1
        bar.update(1)
        self._nonfinite.update(loss, self.epoch)
        eval_next = self._is_eval_epoch(self.epoch) or self.epoch == max_epochs
        if self._nonfinite.every_epoch or eval_next:
            self._nonfinite.raise_first()
        for cb in self._per_epoch:
            cb.on_epoch_end(self, loss)
        if deadline is not None and time.monotonic() > deadline:
            self._nonfinite.raise_first()  # a loss that went bad before the time ran out is the reason
            raise TrainingFailure(f"timeout after {self.cfg.timeout_minutes} min", self.epoch)
        return eval_next

    def fit(self) -> TrainOutcome:
        """Train from ``self.epoch`` until early stop or ``max_epochs``.

        Each pass computes the training pairs' logits with the current weights; on an
        evaluation epoch those same logits give the train metrics (and the callbacks
        run, weights still unchanged), then the loop stops or takes the step.
        """
        max_epochs = int(self.cfg.max_epochs)
        deadline = None
        if self.cfg.timeout_minutes is not None:
            deadline = time.monotonic() + 60.0 * float(self.cfg.timeout_minutes)
        started = time.monotonic()
        start_epoch = self.epoch
        for cb in self.callbacks:
            cb.on_fit_start(self)
        eval_due = self.last_eval is None  # fresh start: evaluate (and checkpoint) the initial weights

        bar = tqdm(
            total=max_epochs,
            initial=self.epoch,
            disable=None if self.cfg.progress_bar else True,
            desc=self.task.describe(),
            unit="ep",
            mininterval=1.0,
            dynamic_ncols=True,
        )
        try:
            while True:
                if not eval_due and (self.epoch >= max_epochs or self._should_stop_early()):
                    break
                if not self._plain:  # several answer positions or minibatches: evaluate, then a whole epoch
                    first_loss = None
                    if eval_due:
                        if self._first_batch_evals:  # the first minibatch's forward serves the evaluation too
                            idx = self._batch_order()[: self.batch_size]
                            first_logits, first_loss = self._logits_and_loss(
                                self._train_tokens[idx], self._train_labels[idx]
                            )
                            self._record(self._evaluate_with_batch(idx, first_logits.detach()))
                        else:
                            self._record(self.evaluate())
                        eval_due = False
                        if self.epoch >= max_epochs or self._should_stop_early():
                            break
                    loss = self._train_epoch(first_loss)
                    eval_due = self._end_epoch(loss, bar, deadline, max_epochs)
                    continue
                logits, loss = self._forward_train()
                if eval_due:
                    result = self._record(self._evaluate_reusing(logits.detach(), loss.detach()))
                    eval_due = False
                    bar.set_postfix(
                        train_loss=f"{result.train_loss:.3g}",
                        test_loss=f"{result.test_loss:.3g}",
                        train_acc=f"{result.train_acc:.3f}",
                        test_acc=f"{result.test_acc:.3f}",
                        refresh=False,
                    )
                    if self.epoch >= max_epochs or self._should_stop_early():
                        break
                self._step(loss)
                eval_due = self._end_epoch(loss, bar, deadline, max_epochs)
        finally:
            bar.close()
            for cb in self.callbacks:
                cb.on_fit_end(self)
        assert self.last_eval is not None
        return TrainOutcome(
            last_eval=self.last_eval,
            stop_reason="early_stop" if self._should_stop_early() else "max_epochs",
            epochs_trained=self.epoch - start_epoch,
            train_seconds=time.monotonic() - started,
        )

    # ---- resume -------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue bit-identically (model weights included), on CPU."""
        assert self.last_eval is not None
        return to_cpu(
            {
                "epoch": self.epoch,
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "thresholds": self.thresholds.state_dict(),
                "last_eval": self.last_eval.as_dict(),
                "torch_rng": torch.get_rng_state(),
                **({"gradfilter": self.gradfilter.state_dict()} if self.gradfilter is not None else {}),
            }
        )

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.gradfilter is not None:
            self.gradfilter.load_state_dict(state["gradfilter"])
            self.gradfilter.to(self.device)
        self.scheduler.load_state_dict(state["scheduler"])
        self.thresholds.load_state_dict(state["thresholds"])
        self.last_eval = EvalResult(**state["last_eval"])
        self.epoch = int(state["epoch"])
        torch.set_rng_state(state["torch_rng"])
