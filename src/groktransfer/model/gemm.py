"""``addend + x @ W`` over a member axis, on oneDNN's fp32 GEMM when running on CPU.

Why this exists: on CPU, PyTorch sends float32 matrix products to the BLAS it was
built with (MKL in the official wheels). MKL picks its fast AVX-512 kernels only on
Intel processors; on an AMD EPYC it runs a generic path. oneDNN, which the same
wheels ship for convolutions and inference, dispatches on the instruction set
instead. Measured on this project's 2-core AMD EPYC (one thread, the p = 113 shapes
of the fast path, e.g. [3831, 128] @ [128, 512]): MKL 6.2 ms (~80 GFLOP/s), oneDNN
2.6 ms (~190 GFLOP/s). The products of the training step are all of that kind, so
the step time roughly halves (``benchmarks/bench_trainer.py`` prints both).

The result is the same product in float32 with a different blocking of the sums, so
the last bits differ from MKL's (as between two CPUs); it is deterministic for a
given machine and thread count. ``train.cpu_gemm=blas`` restores the BLAS path.

Only the fast last-position path (:mod:`groktransfer.model.lastpos`) uses this; each
member's product is its own 2-D GEMM, so an ensemble member computes exactly what a
single model computes.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch

from groktransfer.config.schema import CpuGemm

_backend = CpuGemm.onednn


def _linear_pointwise():
    """oneDNN's linear op as PyTorch registers it (``None`` in builds without it)."""
    try:
        op = torch.ops.mkldnn._linear_pointwise
        op.binary  # the residual-fused overload this module also uses
        return op
    except (AttributeError, RuntimeError):
        return None


_ONEDNN = _linear_pointwise() if torch.backends.mkldnn.is_available() else None


def set_cpu_gemm(backend: CpuGemm) -> None:
    """Process-wide choice (a job sets it from ``train.cpu_gemm``, like its thread count)."""
    global _backend
    _backend = CpuGemm(backend)


def onednn_available() -> bool:
    return _ONEDNN is not None


def _use_onednn(*tensors: torch.Tensor) -> bool:
    return (
        _backend == CpuGemm.onednn
        and _ONEDNN is not None
        and all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors)
    )


def member_addmm(addend: torch.Tensor, x: torch.Tensor, W: torch.Tensor, relu: bool = False) -> torch.Tensor:
    """``addend + x @ W`` for every member, then ReLU if asked: [member, batch, k] @ [member, k, n] -> [member, batch, n].

    ``addend`` is a bias [member, 1, n] (broadcast over the batch) or, without ``relu``,
    a residual [member, batch, n]. Same values as ``torch.baddbmm(addend, x, W)`` (and
    ``.relu()``) up to float rounding; differentiable in all three.
    """
    if not _use_onednn(addend, x, W):
        out = torch.baddbmm(addend, x, W)
        return torch.relu_(out) if relu else out  # baddbmm's backward does not need its output
    assert not relu or addend.shape[1] == 1, "ReLU is fused with a bias addend only"
    return _OneDnnAddmm.apply(addend, x, W, relu)


def _onednn_mm(a: torch.Tensor, b: torch.Tensor, bias: Optional[torch.Tensor] = None, attr: str = "none") -> torch.Tensor:
    """``a @ b (+ bias)``, then ``attr`` (``none`` | ``relu``): ``a`` [..., m, k] @ ``b`` [k, n], either may be a transposed view."""
    # oneDNN's linear computes a @ weight.T with weight [n, k]
    return _ONEDNN(a, b.t(), bias, attr, [None], "")


def _transposed_product(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a^T @ b`` for ``a`` [batch, k], ``b`` [batch, n]: a weight gradient, summed over the batch.

    oneDNN's linear copies a non-contiguous *input* but reads a transposed *weight*
    in place, so the narrower operand is the one transposed into the input slot
    (measured at p = 113: post^T as input cost a 4.4 ms copy per step, grad^T 0.5 ms).
    """
    if a.shape[1] <= b.shape[1]:
        return _onednn_mm(a.t(), b)
    return _onednn_mm(b.t(), a).t().contiguous()


def _per_member(parts: list) -> torch.Tensor:
    """Join per-member [1, ...] results; one member is returned as is (no copy, no view)."""
    return parts[0] if len(parts) == 1 else torch.cat(parts)


class _OneDnnAddmm(torch.autograd.Function):
    """Each member's product is one oneDNN GEMM on [1, batch, k] (a fresh [1, batch, n] result)."""

    @staticmethod
    def forward(ctx, addend: torch.Tensor, x: torch.Tensor, W: torch.Tensor, relu: bool) -> torch.Tensor:
        assert x.ndim == 3 and W.ndim == 3 and addend.ndim == 3, (x.shape, W.shape, addend.shape)
        members = range(x.shape[0])
        per_row_bias = addend.shape[1] == 1
        if per_row_bias:
            attr = "relu" if relu else "none"
            out = _per_member([_onednn_mm(x[m : m + 1], W[m], addend[m, 0], attr) for m in members])
        else:  # a residual addend: fused into the GEMM's output as a binary post-op
            out = _per_member([_ONEDNN.binary(x[m : m + 1], addend[m : m + 1], W[m].t(), None, "add") for m in members])
        ctx.save_for_backward(x, W, out if relu else None)
        ctx.per_row_bias, ctx.relu = per_row_bias, relu
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> Tuple[Optional[torch.Tensor], ...]:
        x, W, out = ctx.saved_tensors
        if ctx.relu:
            grad = torch.ops.aten.threshold_backward(grad, out, 0)
        grad = grad.contiguous()
        members = range(x.shape[0])
        need_addend, need_x, need_W, _ = ctx.needs_input_grad
        grad_addend = grad_x = grad_W = None
        if need_addend:
            grad_addend = grad.sum(dim=1, keepdim=True) if ctx.per_row_bias else grad
        if need_x:  # grad @ W^T
            grad_x = _per_member([_onednn_mm(grad[m : m + 1], W[m].t()) for m in members])
        if need_W:  # x^T @ grad
            grad_W = torch.stack([_transposed_product(x[m], grad[m]) for m in members])
        return grad_addend, grad_x, grad_W, None
