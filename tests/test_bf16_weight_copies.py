"""cvasr.speedups.bf16_weight_copies against torch's own Adam and AdamW: the linear layers trained
through bf16 copies get the updates their fp32 weights get under bf16 autocast. The update's
Triton kernel runs in Triton's interpreter here (CPU autocast stands in for the GPU's); the GPU
runs are bench/train_throughput.py's (bench/NOTES.md, round 20)."""

from __future__ import annotations

import contextlib
import copy
from pathlib import Path
from types import ModuleType
from typing import Iterator

import pytest
import torch

from cvasr.speedups import sync_free_step

from conftest import triton_interpreted
from test_sync_free_step import Toy, batches, options

AUTOCAST = dict(device_type="cpu", dtype=torch.bfloat16)


@pytest.fixture(scope="module")
def copies_module() -> Iterator[ModuleType]:
    """The module with its kernel run by Triton's interpreter while this file's tests run."""
    with triton_interpreted("cvasr.speedups.bf16_weight_copies") as module:
        yield module


class Net(torch.nn.Module):
    """Two linear layers (one of 5000 weights: two of the kernel's blocks) around a layer norm,
    which stays fp32 and is left to the optimizer's own step."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.inp = torch.nn.Linear(50, 100)
        self.norm = torch.nn.LayerNorm(100)
        self.out = torch.nn.Linear(100, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.norm(self.inp(x)))


def _data(steps: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(1)
    return [(torch.randn(8, 50, generator=gen), torch.randn(8, 3, generator=gen))
            for _ in range(steps)]


def _loss(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    with torch.autocast(**AUTOCAST):
        return ((model(x).float() - y) ** 2).mean()


def _train(optimizer_class, module: ModuleType | None, steps: int = 4, scale: float = 1.0,
           **optim):
    """`steps` updates of Net under CPU bf16 autocast: plainly, or (module given) through its
    bf16 copies with the gradients divided by `scale` in the update."""
    model = Net()
    optimizer = optimizer_class(model.parameters(), fused=True, **optim)
    grads, outputs = [], []
    if module is None:
        for x, y in _data(steps):
            loss = _loss(model, x, y)
            outputs.append(loss.detach())
            loss.backward()
            grads.append(model.inp.weight.grad.clone())
            optimizer.step()
            optimizer.zero_grad()
        return model, optimizer, grads, outputs
    copies = module.Bf16WeightCopies(model, [optimizer])
    with copies.swapped_in():
        assert model.inp.weight.dtype == torch.bfloat16 and model.norm.weight.dtype == torch.float32
        for x, y in _data(steps):
            loss = _loss(model, x, y)
            outputs.append(loss.detach())
            (loss * scale).backward()
            grads.append(model.inp.weight.grad.clone())
            copies.step(grad_scale=None if scale == 1.0 else torch.tensor(scale))
            optimizer.step()
            optimizer.zero_grad()
            copies.zero_grad()
            for m in (model.inp, model.out):  # each copy is its fp32 weight rounded to nearest
                for name in ("weight", "bias"):
                    master = next(c.param for g in copies.groups for c in g.members
                                  if c.module is m and c.name == name)
                    assert torch.equal(getattr(m, name), master.to(torch.bfloat16))
    assert model.inp.weight.dtype == torch.float32  # the fp32 parameters back in the modules
    return model, optimizer, grads, outputs


def _assert_same_training(ours, ref) -> None:
    model, optimizer, grads, outputs = ours
    ref_model, ref_optimizer, ref_grads, ref_outputs = ref
    for got, want in zip(outputs, ref_outputs):  # the same forward, step after step
        torch.testing.assert_close(got, want, rtol=1e-6, atol=0)
    for got, want in zip(grads, ref_grads):  # the same bf16 gradient values
        assert got.dtype == torch.bfloat16 and torch.equal(got.float(), want)
    for (name, got), want in zip(model.state_dict().items(), ref_model.state_dict().values()):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7, msg=name)
    state, ref_state = optimizer.state_dict(), ref_optimizer.state_dict()
    assert state["param_groups"] == ref_state["param_groups"]
    for index, entry in ref_state["state"].items():  # torch's layout: a resume takes either
        assert set(state["state"][index]) == set(entry)
        for key, value in entry.items():
            assert state["state"][index][key].dtype == value.dtype
            torch.testing.assert_close(state["state"][index][key], value, rtol=1e-5, atol=1e-8)


def test_adam_through_the_copies_trains_as_torchs_adam(copies_module: ModuleType) -> None:
    ref = _train(torch.optim.Adam, None, lr=0.01)
    _assert_same_training(_train(torch.optim.Adam, copies_module, lr=0.01), ref)


@pytest.mark.parametrize("optimizer_class", [torch.optim.Adam, torch.optim.AdamW])
def test_weight_decay_coupled_and_decoupled(copies_module: ModuleType, optimizer_class) -> None:
    optim = dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)
    _assert_same_training(_train(optimizer_class, copies_module, **optim),
                          _train(optimizer_class, None, **optim))


def test_grad_scale_divides_the_gradients(copies_module: ModuleType) -> None:
    """The loss x 4 with grad_scale 4 (a power of two: the same bf16 gradients / 4, exactly)
    trains as the plain loss."""
    ref = _train(torch.optim.Adam, None, lr=0.01)
    model = _train(torch.optim.Adam, copies_module, scale=4.0, lr=0.01)[0]
    for got, want in zip(model.state_dict().values(), ref[0].state_dict().values()):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)


def test_found_inf_skips_the_update_and_its_step(copies_module: ModuleType) -> None:
    model = Net()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    before = copy.deepcopy(model.state_dict())
    copies = copies_module.Bf16WeightCopies(model, [optimizer])
    with copies.swapped_in():
        for found_inf in (1.0, 0.0):
            x, y = _data(1)[0]
            _loss(model, x, y).backward()
            copies.step(found_inf=torch.tensor(found_inf))
            copies.zero_grad()
            masters = [c.param for g in copies.groups for c in g.members]
            if found_inf:  # (the modules hold the copies: the fp32 parameters are these)
                assert all(torch.equal(p, before[k]) for p, k in zip(
                    masters, ("inp.weight", "inp.bias", "out.weight", "out.bias")))
                assert optimizer.state[masters[0]]["step"].item() == 0.0
    assert not torch.equal(model.inp.weight, before["inp.weight"])
    assert optimizer.state[model.inp.weight]["step"].item() == 1.0


def test_a_resume_loads_new_moments_and_the_copies_follow(copies_module: ModuleType) -> None:
    """Two updates, then the state of a run that made four loaded (as espnet2 resumes: new
    moment tensors, the parameters copied in place): the next update is that run's fifth."""
    four = _train(torch.optim.Adam, None, steps=4, lr=0.01)
    five = _train(torch.optim.Adam, None, steps=5, lr=0.01)
    model = Net()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    copies = copies_module.Bf16WeightCopies(model, [optimizer])
    for resumed in (False, True):
        if resumed:  # (a learning rate that the loaded state's replaces)
            optimizer.param_groups[0]["lr"] = 0.5
            model.load_state_dict(four[0].state_dict())
            optimizer.load_state_dict(four[1].state_dict())
        with copies.swapped_in():
            for x, y in _data(5)[4:] if resumed else _data(2):
                _loss(model, x, y).backward()
                copies.step()
                optimizer.step()
                optimizer.zero_grad()
                copies.zero_grad()
    for got, want in zip(model.state_dict().values(), five[0].state_dict().values()):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)


def test_unsupported_setups_are_named(copies_module: ModuleType) -> None:
    params = Net().parameters
    reason = copies_module.unsupported_reason
    adam = [torch.optim.Adam(params())]
    assert reason(adam, "cuda", torch.bfloat16, False) is None
    assert "not on a GPU" in reason(adam, "cpu", torch.bfloat16, False)
    assert "bf16 autocast" in reason(adam, "cuda", torch.float16, False)
    assert "bf16 autocast" in reason(adam, "cuda", None, False)
    assert "DDP" in reason(adam, "cuda", torch.bfloat16, True)
    assert "accum_grad" in reason(adam, "cuda", torch.bfloat16, False, accum_grad=2)
    assert "SGD" in reason([torch.optim.SGD(params(), lr=0.1)], "cuda", torch.bfloat16, False)
    assert "amsgrad" in reason([torch.optim.Adam(params(), amsgrad=True)], "cuda",
                               torch.bfloat16, False)
    assert "tensor" in reason([torch.optim.Adam(params(), lr=torch.tensor(0.01))], "cuda",
                              torch.bfloat16, False)


def test_total_grad_norm_takes_bf16_norms_in_fp32() -> None:
    """torch's own total norm rounds each bf16 gradient's norm to bf16; this one does not."""
    gen = torch.Generator().manual_seed(0)
    grads = [torch.randn(1000, generator=gen).to(torch.bfloat16), torch.randn(7, generator=gen)]
    want = torch.linalg.vector_norm(torch.cat([g.double() for g in grads]))
    got = sync_free_step.total_grad_norm(grads, 2.0)
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(want.item(), rel=1e-6)
    assert sync_free_step.total_grad_norm(grads, float("inf")).item() == max(
        g.abs().max().item() for g in grads)


def _epoch(tmp_path: Path, copies_module: ModuleType | None, *extra: str):
    """One epoch of sync_free_step's loop on test_sync_free_step's Toy under CPU bf16 autocast,
    with or without the copies (clipped at 1.0: most steps are)."""
    from espnet2.schedulers.piecewise_linear_warmup_lr import PiecewiseLinearWarmupLR
    from espnet2.train.reporter import Reporter

    model = Toy()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1, fused=True)  # takes a grad_scale
    scheduler = PiecewiseLinearWarmupLR(optimizer, warmup_steps_list=[0, 3, 10],
                                        warmup_lr_list=[0.0, 0.1, 0.0])
    opts = options(tmp_path, *extra)
    reporter = Reporter()
    reporter.set_epoch(1)
    copies = None if copies_module is None else copies_module.Bf16WeightCopies(model, [optimizer])
    plan = sync_free_step.EpochPlan("cpu", dict(enabled=True, **AUTOCAST), log_interval=3,
                                    clip_in_optimizer=opts.clip_in_optimizer, copies=copies)
    with reporter.observe("train") as sub:
        with copies.swapped_in() if copies is not None else contextlib.nullcontext():
            sync_free_step.train_steps(model, batches(), [optimizer], [scheduler], sub, opts,
                                       None, plan)
    return model, reporter


@pytest.mark.parametrize("clip_in_optimizer", ["false", "true"])
def test_the_step_loop_with_copies_trains_as_without(tmp_path: Path, copies_module: ModuleType,
                                                     clip_in_optimizer: str) -> None:
    extra = ("--clip_in_optimizer", clip_in_optimizer)
    ref_model, ref = _epoch(tmp_path, None, *extra)
    model, ours = _epoch(tmp_path, copies_module, *extra)
    assert ref.get_value("train", "clip") > 0  # some steps were clipped
    for key in ("loss", "grad_norm", "clip"):
        assert ours.get_value("train", key) == pytest.approx(ref.get_value("train", key),
                                                             rel=1e-5), key
    torch.testing.assert_close(model.proj.weight, ref_model.proj.weight, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(model.proj.bias, ref_model.proj.bias, rtol=1e-5, atol=1e-6)


def test_a_tied_linear_weight_keeps_its_fp32_parameter(copies_module: ModuleType) -> None:
    """A weight two modules share would get gradients both as the copy and as itself: left out."""
    model = Net()
    tied = torch.nn.Linear(50, 100)
    tied.weight = model.inp.weight
    model.tied = tied
    optimizer = torch.optim.Adam(model.parameters())
    copies = copies_module.Bf16WeightCopies(model, [optimizer])
    copied = {id(m.param) for g in copies.groups for m in g.members}
    assert id(model.inp.weight) not in copied
    assert copied == {id(p) for p in (model.inp.bias, tied.bias, model.out.weight, model.out.bias)}
