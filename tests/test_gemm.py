"""The fast path's products (groktransfer.model.gemm) against torch.baddbmm, and the process settings."""

from __future__ import annotations

import pytest
import torch

from conftest import compose_job
from groktransfer.training.allocator import keep_freed_memory
from groktransfer.config.schema import CpuGemm, TrainJobConfig, to_typed
from groktransfer.model.gemm import member_addmm, onednn_available, set_cpu_gemm
from groktransfer.jobs.run_job import run_identity


@pytest.fixture(params=[CpuGemm.onednn, CpuGemm.blas])
def backend(request):
    if request.param == CpuGemm.onednn and not onednn_available():
        pytest.skip("this torch build has no oneDNN linear op")
    set_cpu_gemm(request.param)
    yield request.param
    set_cpu_gemm(CpuGemm.auto)


def _operands(members: int, batch: int, k: int, n: int, residual: bool, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    addend = torch.randn(members, batch if residual else 1, n, generator=gen)
    x = torch.randn(members, batch, k, generator=gen)
    W = torch.randn(members, k, n, generator=gen)
    return [t.requires_grad_() for t in (addend, x, W)]


@pytest.mark.parametrize("members", [1, 3])
@pytest.mark.parametrize("residual,relu", [(False, False), (False, True), (True, False)])
def test_member_addmm_equals_baddbmm_in_values_and_gradients(backend, members, residual, relu) -> None:
    addend, x, W = _operands(members, 300, 48, 40, residual)
    # x^T @ grad takes either operand order (the narrower one is transposed): cover both
    for k, n in ((48, 40), (40, 48)):
        addend, x, W = _operands(members, 300, k, n, residual)
        grad_out = torch.randn(members, 300, n, generator=torch.Generator().manual_seed(1))
        out = member_addmm(addend, x, W, relu=relu)
        expected = torch.baddbmm(addend, x, W)
        if relu:
            expected = expected.relu()
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
        got = torch.autograd.grad(out, (addend, x, W), grad_out)
        want = torch.autograd.grad(expected, (addend, x, W), grad_out)
        for name, g, w in zip(("addend", "x", "W"), got, want):
            assert g.shape == w.shape, name
            torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-4, msg=name)


def test_a_member_computes_exactly_what_a_single_model_computes(backend) -> None:
    """Why an ensemble member can equal a separate run bit for bit."""
    addend, x, W = _operands(3, 257, 64, 96, residual=False)
    grad_out = torch.randn(3, 257, 96, generator=torch.Generator().manual_seed(2))
    together = member_addmm(addend, x, W, relu=True)
    grads = torch.autograd.grad(together, (addend, x, W), grad_out)
    for m in range(3):
        one = [t[m : m + 1].detach().requires_grad_() for t in (addend, x, W)]
        alone = member_addmm(*one, relu=True)
        assert torch.equal(alone[0], together[m])
        for g_alone, g_together in zip(torch.autograd.grad(alone, one, grad_out[m : m + 1]), grads):
            assert torch.equal(g_alone[0], g_together[m])


def test_frozen_operands_get_no_gradient(backend) -> None:
    addend, x, W = _operands(1, 50, 8, 6, residual=True)
    W.requires_grad_(False)
    addend.requires_grad_(False)
    out = member_addmm(addend, x, W)
    (grad_x,) = torch.autograd.grad(out.sum(), (x,))
    torch.testing.assert_close(grad_x, torch.ones(1, 50, 6) @ W.transpose(1, 2))


def test_other_dtypes_take_baddbmm_exactly() -> None:
    addend, x, W = (t.detach().double() for t in _operands(2, 20, 5, 7, residual=True))
    assert torch.equal(member_addmm(addend, x, W), torch.baddbmm(addend, x, W))


def test_cpu_gemm_is_a_checked_choice_outside_the_run_identity() -> None:
    default = to_typed(TrainJobConfig, compose_job([]))
    blas = to_typed(TrainJobConfig, compose_job(["train.cpu_gemm=blas"]))
    assert default.train.cpu_gemm == CpuGemm.auto and blas.train.cpu_gemm == CpuGemm.blas
    assert run_identity(default) == run_identity(blas)  # float rounding only, like train.device
    with pytest.raises(Exception) as info:
        compose_job(["train.cpu_gemm=mkl"])
    assert "onednn" in str(info.value.__cause__ or info.value)  # the error lists the allowed values


def test_keep_freed_memory_applies_on_glibc() -> None:
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        pytest.skip("glibc only")
    assert keep_freed_memory()


def test_freed_blocks_above_32_mib_are_not_faulted_back_each_step() -> None:
    """A 64 MiB activation allocated and freed every step (full-batch digit jobs) stays in
    the heap: without mmap off, each allocation faults its ~16,000 pages in again."""
    import platform
    import resource

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        pytest.skip("glibc only")
    assert keep_freed_memory()
    n, pages = 20, 64 * 1024 * 1024 // 4096
    for _ in range(2):  # the heap grows to hold them once
        torch.empty(16 * 1024 * 1024).fill_(1.0)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(n):
        torch.empty(16 * 1024 * 1024).fill_(1.0)  # 64 MiB, freed at once
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    assert faults < 0.2 * n * pages, f"{faults} minor faults for {n} allocations of {pages} pages"


def test_auto_measures_each_product_shape_once_and_shares_the_choice(tmp_path, monkeypatch) -> None:
    """train.cpu_gemm=auto: the first product of a shape is timed on both libraries and the
    faster kept; the choice lands in the cache file under this machine's key, a second
    process (simulated by clearing the in-process choices) reads it instead of measuring,
    and the product itself equals the chosen library's."""
    import json

    from groktransfer.model import gemm

    if not onednn_available():
        pytest.skip("this torch build has no oneDNN linear op")
    monkeypatch.setenv("GROKTRANSFER_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(gemm, "_choices", {})
    timed = []
    real = gemm._time_both
    monkeypatch.setattr(gemm, "_time_both", lambda *a: timed.extend([CpuGemm.onednn, CpuGemm.blas]) or {CpuGemm.onednn: 0.002, CpuGemm.blas: 0.001})
    set_cpu_gemm(CpuGemm.auto)
    try:
        x, W, b = torch.randn(2, 37, 16), torch.randn(2, 16, 24), torch.randn(2, 1, 24)
        out = member_addmm(b, x, W, relu=True)
        assert timed == [CpuGemm.onednn, CpuGemm.blas]  # measured once, both libraries
        torch.testing.assert_close(out, torch.relu(torch.baddbmm(b, x, W)), rtol=0, atol=0)  # BLAS was faster: BLAS's bits
        member_addmm(b, x, W, relu=True)
        member_addmm(b[:1], x[:1], W[:1], relu=True)  # one member: the same per-member shape
        assert len(timed) == 2
        cache = json.loads(gemm.cache_path().read_text())
        assert gemm.cache_path().parent == tmp_path
        assert cache == {gemm.machine_key(): {"37x16x24 bias relu fwd": "blas"}}
        monkeypatch.setattr(gemm, "_choices", {})  # a new process on this machine
        member_addmm(b, x, W, relu=True)
        assert len(timed) == 2 and gemm.auto_choices() == {"37x16x24 bias relu fwd": "blas"}
    finally:
        set_cpu_gemm(CpuGemm.auto)
    times = real(64, 32, 48, True, False, True)  # the real timer: both libraries, forward and backward
    assert set(times) == {CpuGemm.onednn, CpuGemm.blas} and all(0 < t < 1 for t in times.values())


def test_a_tie_goes_to_onednn_and_a_clear_win_to_the_faster_library() -> None:
    """Choices within TIE_MARGIN go one fixed way, so timing noise cannot flip them between
    fresh caches (and with them the float rounding of a run)."""
    from groktransfer.model.gemm import TIE_MARGIN, _decide

    one, blas = CpuGemm.onednn, CpuGemm.blas
    assert _decide({one: 1.0, blas: 1.0 - TIE_MARGIN / 2}) == one  # BLAS 1% faster: a tie
    assert _decide({one: 1.0, blas: 1.0 - 2 * TIE_MARGIN}) == blas  # 4% faster: BLAS
    assert _decide({one: 1.0, blas: 1.2}) == one


def test_the_machine_key_names_the_cpu_its_instruction_set_threads_and_torch() -> None:
    from groktransfer.model.gemm import machine_key

    key = machine_key()
    assert f"threads={torch.get_num_threads()}" in key and torch.__version__ in key
    assert any(isa in key for isa in ("avx512", "avx2", "baseline"))
