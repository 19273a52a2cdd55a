"""The Triton CTC (cvasr.speedups.ctc_triton) gives PyTorch's CTC losses and, through
log_softmax, its gradients; here its kernels run in Triton's interpreter (on the CPU; the GPU
runs are bench/step_kernels.py's, which compares the two again)."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Iterator

import pytest
import torch
import torch.nn.functional as F

from conftest import triton_interpreted, xlsr_model

# the interpreter's log(0) = -inf, which the recursion means
pytestmark = pytest.mark.filterwarnings("ignore:divide by zero encountered in log")

# clip 1 repeats a label, clip 3 cannot be aligned in its 3 frames, clip 4 has no label
FRAMES = [12, 7, 9, 3, 5]
TARGETS = [[1, 2, 3], [4, 4, 2], [5, 1, 5, 1], [1, 2, 1, 2], []]


@pytest.fixture(scope="module")
def ctc_triton() -> Iterator[ModuleType]:
    """The module with its kernels run by Triton's interpreter while this file's tests run."""
    with triton_interpreted("cvasr.speedups.ctc_triton") as module:
        yield module


def _run(ctc_triton: ModuleType | None, zero_infinity: bool = True
         ) -> tuple[torch.Tensor, torch.Tensor]:
    """Losses and the logits' gradients, from ctc_triton's loss, or PyTorch's when None."""
    torch.manual_seed(0)
    logits = torch.randn(max(FRAMES), len(FRAMES), 6, requires_grad=True)
    log_probs = logits.log_softmax(-1)
    lengths = torch.tensor([len(t) for t in TARGETS])
    if ctc_triton is not None:
        padded = torch.full((len(TARGETS), max(lengths)), -1)
        for b, t in enumerate(TARGETS):
            padded[b, : len(t)] = torch.tensor(t, dtype=torch.long)
        losses = ctc_triton.triton_ctc_loss(log_probs, padded, torch.tensor(FRAMES), lengths,
                                 int(lengths.max()), zero_infinity=zero_infinity)
    else:
        flat = torch.tensor([x for t in TARGETS for x in t])
        losses = F.ctc_loss(log_probs, flat, torch.tensor(FRAMES), lengths, reduction="none",
                            zero_infinity=zero_infinity)
    (losses * torch.arange(1, 6)).sum().backward()  # another weight a clip
    assert logits.grad is not None
    return losses.detach(), logits.grad


def test_losses_and_gradients_are_pytorchs(ctc_triton: ModuleType) -> None:
    losses, grads = _run(ctc_triton)
    want_losses, want_grads = _run(None)
    assert torch.isfinite(want_losses).all() and want_losses[3] == 0  # zeroed: unalignable
    torch.testing.assert_close(losses, want_losses, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grads, want_grads, rtol=1e-4, atol=1e-5)
    for b, n in enumerate(FRAMES):  # frames past a clip's length take no gradient
        assert not grads[n:, b].any()


def test_an_unalignable_clip_is_infinite_without_zero_infinity(ctc_triton: ModuleType
                                                               ) -> None:
    log_probs = torch.zeros(3, 1, 4).log_softmax(-1)
    loss = ctc_triton.triton_ctc_loss(log_probs, torch.tensor([[1, 2, 1, 2]]), torch.tensor([3]),
                           torch.tensor([4]), 4, zero_infinity=False)
    assert torch.isinf(loss).all()


def test_training_with_ctc_impl_triton_gives_the_same_loss_and_gradients(
        ctc_triton: ModuleType, tmp_path: Path, tiny_upstream: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """`model_conf: {ctc_impl: triton}` trains on cvasr.speedups.ctc_triton's loss: the same
    loss and gradients as espnet2's CTC on one training step (the same dropout and SpecAugment
    draws), with the lengths on the host as the sync-free step passes them."""
    calls = []
    loss_fn = ctc_triton.triton_ctc_loss
    monkeypatch.setattr(ctc_triton, "triton_ctc_loss",
                        lambda *a, **k: calls.append(1) or loss_fn(*a, **k))
    results = {}
    for impl in ("torch", "triton"):
        model = xlsr_model(tmp_path / impl, tiny_upstream, impl)
        torch.manual_seed(1)
        speech = torch.randn(2, 16000) * 3000
        torch.manual_seed(2)
        loss, stats, _ = model(speech=speech, speech_lengths=torch.tensor([16000, 12000]),
                               text=torch.tensor([[3, 4, 4, 5], [6, 7, -1, -1]]),
                               text_lengths=torch.tensor([4, 2]))
        loss.backward()
        results[impl] = (loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()
                                         if p.grad is not None})
        assert len(calls) == (impl == "triton")
    (loss_t, grads_t), (loss_ours, grads_ours) = results["torch"], results["triton"]
    assert torch.isfinite(loss_t) and loss_t > 0
    torch.testing.assert_close(loss_ours, loss_t, rtol=1e-5, atol=1e-5)
    assert grads_ours.keys() == grads_t.keys() and len(grads_t) > 10
    for name, grad in grads_t.items():
        torch.testing.assert_close(grads_ours[name], grad, rtol=1e-3, atol=1e-5, msg=name)


def test_an_unknown_ctc_impl_is_refused(tmp_path: Path, tiny_upstream: Path) -> None:
    with pytest.raises(ValueError, match="ctc_impl: 'warp' is none of"):
        xlsr_model(tmp_path, tiny_upstream, "warp")


@pytest.mark.parametrize("kernel", ["_alpha_kernel", "_beta_kernel"])
def test_kernels_compile_for_an_h200(kernel: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Triton compiles each kernel for sm_90 here, without a GPU (the device machine's time is
    not spent finding a compile error), with the barrier between frames and the other lanes'
    rows loaded from L2."""
    import importlib.util

    triton = pytest.importorskip("triton")
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)  # the kernels as the GPU gets them
    path = Path(__file__).resolve().parents[1] / "src" / "cvasr" / "speedups" / "ctc_triton.py"
    spec = importlib.util.spec_from_file_location("_ctc_triton_jit", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    fn = getattr(module, kernel)
    names = list(fn.arg_names)
    floats = {"lpe_ptr", "alpha_ptr", "beta_ptr"}
    signature = {n: "constexpr" if n in ("TOTAL", "BLOCK") else "*fp32" if n in floats
                 else "*i32" if n.endswith("_ptr") else "i32" for n in names}
    constexprs = {(names.index("TOTAL"),): 256, (names.index("BLOCK"),): 128}
    compiled = triton.compile(ASTSource(fn=fn, signature=signature, constexprs=constexprs),
                              target=GPUTarget("cuda", 90, 32))
    ptx = compiled.asm["ptx"]
    assert compiled.asm["cubin"] and "bar.sync" in ptx and "ld.global.cg" in ptx
