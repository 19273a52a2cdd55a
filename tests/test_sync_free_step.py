"""cvasr.speedups.sync_free_step against espnet2's own Trainer.train_one_epoch: same updates, same reports."""

from __future__ import annotations

import collections
import copy
import gc
import logging
import math
from pathlib import Path

import pytest
import torch
from espnet2.schedulers.piecewise_linear_warmup_lr import PiecewiseLinearWarmupLR
from espnet2.train.distributed_utils import DistributedOption
from espnet2.train.reporter import Reporter
from espnet2.train.trainer import Trainer

from cvasr.speedups import sync_free_step
from cvasr.training.task import CvasrASRTask, SafeCheckpointTrainer


class Toy(torch.nn.Module):
    """A model with espnet2's interface: (loss, stats, weight) from a padded batch."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.proj = torch.nn.Linear(3, 2)

    def forward(self, x, x_lengths, y, y_lengths, utt_id=None):
        mask = (torch.arange(x.size(1))[None, :] < x_lengths[:, None]).float()
        pred = self.proj(x).sum(-1)
        loss = (((pred - y) ** 2) * mask).sum() / mask.sum()
        stats = {"loss": loss.detach(), "acc": None, "peak": pred.abs().max().detach()}
        return loss, stats, torch.tensor(x.size(0))


def batches(n: int = 7, poison: int | None = None) -> list:
    gen = torch.Generator().manual_seed(1)
    out = []
    for i in range(n):
        x = torch.randn(4, 5, 3, generator=gen)
        if i == poison:
            x[0, 0, 0] = float("inf")
        lengths = torch.tensor([5, 4, 3, 2])
        out.append(([f"u{i}-{k}" for k in range(4)],
                    {"x": x, "x_lengths": lengths, "y": torch.randn(4, 5, generator=gen),
                     "y_lengths": lengths}))
    return out


def options(tmp_path: Path, *extra: str):
    tokens = tmp_path / "tokens.txt"
    tokens.write_text("<blank>\na\n")
    args = CvasrASRTask.get_parser().parse_args(
        ["--output_dir", str(tmp_path), "--token_list", str(tokens), "--grad_clip", "1.0",
         "--log_interval", "3", *extra])
    return SafeCheckpointTrainer.build_options(args)


def train(loop: str, opts, data, fused: bool, accum: int = 1, warmup: bool = True):
    model = Toy()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1, fused=fused)
    scheduler = PiecewiseLinearWarmupLR(optimizer, warmup_steps_list=[0, 3, 10],
                                        warmup_lr_list=[0.0, 0.1, 0.0] if warmup else [0.1] * 3)
    opts = copy.copy(opts)
    opts.accum_grad = accum
    reporter = Reporter()
    reporter.set_epoch(1)
    with reporter.observe("train") as sub:
        if loop == "espnet2":
            invalid = Trainer.train_one_epoch(
                model=model, iterator=data, optimizers=[optimizer], schedulers=[scheduler],
                scaler=None, reporter=sub, summary_writer=None, options=opts,
                distributed_option=DistributedOption())
        else:
            invalid = sync_free_step.train_one_epoch(model, data, [optimizer], [scheduler], sub,
                                                     opts)
    return model, optimizer, scheduler, reporter, invalid


def reported(reporter: Reporter, key: str) -> float:
    return reporter.get_value("train", key)


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("accum", [1, 2])
def test_same_parameters_and_statistics_as_espnet2s_loop(tmp_path: Path, fused: bool,
                                                         accum: int) -> None:
    opts = options(tmp_path)
    ref = train("espnet2", opts, batches(), fused, accum)
    ours = train("ours", opts, batches(), fused, accum)
    assert torch.equal(ref[0].proj.weight, ours[0].proj.weight)
    assert torch.equal(ref[0].proj.bias, ours[0].proj.bias)
    assert ref[2].get_last_lr() == ours[2].get_last_lr()
    for key in ("loss", "peak", "grad_norm", "clip", "optim0_lr0"):
        assert reported(ours[3], key) == pytest.approx(reported(ref[3], key), rel=1e-6), key
    assert set(ours[3].stats[1]["train"]) == set(ref[3].stats[1]["train"])
    assert ours[4] is False and ref[4] is False


def test_clip_scale_divides_as_clip_grad_norm_multiplies() -> None:
    gen = torch.Generator().manual_seed(0)
    for size, max_norm in ((10.0, 1.0), (0.01, 1.0)):  # clipped, and left as it is
        params = [torch.nn.Parameter(torch.zeros(n)) for n in (5, 7)]
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen) * size
        grads = [p.grad.clone() for p in params]
        total, scale = sync_free_step.clip_scale(params, max_norm, 2.0)
        want = torch.nn.utils.clip_grad_norm_(params, max_norm)
        assert total.item() == pytest.approx(want.item(), rel=1e-7)
        for grad, p in zip(grads, params):
            torch.testing.assert_close(grad / scale, p.grad, rtol=1e-6, atol=0.0)
        assert (scale.item() == 1.0) == (size < 1.0)


def test_clip_in_optimizer_trains_as_espnet2s_clipping(tmp_path: Path) -> None:
    """Fused Adam given the clip as its grad_scale: the parameters espnet2's loop gets by
    clipping first, up to rounding, and the same statistics."""
    ref = train("espnet2", options(tmp_path), batches(), True)
    ours = train("ours", options(tmp_path, "--clip_in_optimizer", "true"), batches(), True)
    assert reported(ref[3], "clip") > 0  # some steps were clipped (grad_clip 1.0)
    torch.testing.assert_close(ours[0].proj.weight, ref[0].proj.weight, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours[0].proj.bias, ref[0].proj.bias, rtol=1e-5, atol=1e-6)
    for key in ("loss", "grad_norm", "clip"):
        assert reported(ours[3], key) == pytest.approx(reported(ref[3], key), rel=1e-5), key
    # with plain Adam there is no grad_scale to take it: clipped as espnet2 does, exactly
    ref = train("espnet2", options(tmp_path), batches(), False)
    ours = train("ours", options(tmp_path, "--clip_in_optimizer", "true"), batches(), False)
    assert torch.equal(ours[0].proj.weight, ref[0].proj.weight)


def test_reports_reach_espnet2s_reporter_in_the_same_order(tmp_path: Path) -> None:
    opts = options(tmp_path)
    ref, ours = train("espnet2", opts, batches(), False)[3], train("ours", opts, batches(), False)[3]
    timing = {"iter_time", "forward_time", "backward_time", "optim_step_time", "train_time"}
    keys = [k for k in ref.stats[1]["train"] if k not in timing]
    assert [k for k in ours.stats[1]["train"] if k not in timing] == keys
    assert ours.stats[1]["train"]["total_count"] == ref.stats[1]["train"]["total_count"] == 7


def test_a_non_finite_gradient_skips_the_update(tmp_path: Path,
                                                caplog: pytest.LogCaptureFixture) -> None:
    """Fused Adam skips on the GPU-side flag (the schedule advances); plain Adam as espnet2."""
    opts = options(tmp_path)
    clean = batches(3)
    poisoned = batches(3, poison=1)
    for fused in (True, False):
        two_steps = train("ours", opts, clean[:1] + clean[2:], fused, warmup=False)
        with caplog.at_level(logging.WARNING):
            model, optimizer, scheduler, reporter, invalid = train("ours", opts, poisoned, fused,
                                                                   warmup=False)
        assert "1 update(s) skipped: non-finite gradient norm" in caplog.text
        caplog.clear()
        # the skipped batch changed nothing: the same weights as training on the other two
        assert torch.equal(model.proj.weight, two_steps[0].proj.weight)
        state = optimizer.state[model.proj.weight]
        assert int(state["step"]) == 2
        assert scheduler.last_epoch == (3 if fused else 2)
        # the skipped step's grad_norm is left out of the epoch's mean, as espnet2 does
        assert math.isfinite(reported(reporter, "grad_norm"))
        assert invalid is False


def test_all_updates_skipped_is_reported(tmp_path: Path) -> None:
    data = [batches(1, poison=0)[0] for _ in range(2)]
    assert train("ours", options(tmp_path), data, True)[4] is True


def test_deferred_reports_replay_registrations_exactly() -> None:
    direct, deferred = Reporter(), Reporter()
    steps = [({"loss": torch.tensor(1.5), "acc": 0.25}, torch.tensor([4])),
             ({"loss": torch.tensor([2.5]), "acc": 0.5}, torch.tensor([2]))]
    for reporter in (direct, deferred):
        reporter.set_epoch(1)
    with direct.observe("train") as sub:
        for stats, weight in steps:
            sub.register(stats, weight)
            sub.register({"train_time": 0.1})
            sub.next()
        direct_message = sub.log_message()
    with deferred.observe("train") as sub:
        reports = sync_free_step.DeferredReports(sub)
        for stats, weight in steps:
            reports.register(stats, weight)
            reports.register({"train_time": 0.1})
            reports.next()
        assert sub.count == 0  # nothing read yet
        reports.flush()
        assert sub.log_message() == direct_message
    assert deferred.get_value("train", "loss") == direct.get_value("train", "loss") == pytest.approx(
        (1.5 * 4 + 2.5 * 2) / 6)
    with pytest.raises(ValueError, match="must be one number"):
        reports = sync_free_step.DeferredReports(Reporter().observe("x").__enter__())
        reports.register({"bad": torch.zeros(3)})
        reports.next()
        reports.flush()


def test_unsupported_setups_fall_back_with_the_reason(tmp_path: Path) -> None:
    opts = options(tmp_path)
    assert sync_free_step.unsupported_reason(opts, False, None) is None
    assert sync_free_step.unsupported_reason(opts, True, None) is None  # DDP: one GPU a process
    several = options(tmp_path, "--ngpu", "2")
    assert "DataParallel" in sync_free_step.unsupported_reason(several, False, None)
    amp = options(tmp_path, "--use_amp", "true")
    assert "fp16" in sync_free_step.unsupported_reason(amp, False, None)
    assert sync_free_step.unsupported_reason(amp, False, torch.bfloat16) is None
    noisy = options(tmp_path, "--grad_noise", "true")
    assert "grad_noise" in sync_free_step.unsupported_reason(noisy, False, None)


class GatherableToy(Toy):
    """Toy with what espnet2's models hand a DDP loop (`force_gatherable`): one-element tensors."""

    def forward(self, x, x_lengths, y, y_lengths, utt_id=None):
        loss, stats, weight = super().forward(x, x_lengths, y, y_lengths, utt_id)
        return (loss.reshape(1), {k: v if v is None else v.reshape(1) for k, v in stats.items()},
                weight.reshape(1))


class HostLengthsToy(GatherableToy):
    """GatherableToy that takes its lengths on the host, as our XLS-R model does; it records the
    type of each `*_lengths` it is given."""

    takes_host_lengths = True

    def __init__(self) -> None:
        super().__init__()
        self.length_types: set[str] = set()

    def forward(self, x, x_lengths, y, y_lengths, utt_id=None):
        self.length_types.update({type(x_lengths).__name__, type(y_lengths).__name__})
        return super().forward(x, x_lengths, y, y_lengths, utt_id)


class CountedCollectives:
    """torch.distributed's all_gather and all_reduce, counted while in use (the real ones run),
    those issued with `async_op=True` apart."""

    NAMES = ("all_gather", "all_reduce")

    def __enter__(self) -> collections.Counter:
        self.calls: collections.Counter = collections.Counter()
        self.real = {name: getattr(torch.distributed, name) for name in self.NAMES}

        def counted(name):
            def call(*args, **kwargs):
                self.calls[f"{name} async" if kwargs.get("async_op") else name] += 1
                return self.real[name](*args, **kwargs)
            return call

        for name in self.NAMES:
            setattr(torch.distributed, name, counted(name))
        return self.calls

    def __exit__(self, *exc) -> None:
        for name, real in self.real.items():
            setattr(torch.distributed, name, real)


def _ddp_rank(rank: int, world: int, init_file: str, out: str, fused: bool,
              host_lengths: bool = False, rendezvous: str = "weight") -> None:
    """One rank: espnet2's loop, then ours, each on its DDP-wrapped copy of the same model."""
    from torch.nn.parallel import DistributedDataParallel

    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                                         world_size=world)
    try:
        opts = options(Path(out), "--ddp_step_rendezvous", rendezvous,
                       *(["--ddp_host_lengths", "false"] if host_lengths == "off" else []))
        # each batch split over the ranks as espnet2's sampler splits it; rank 1 has one batch
        # fewer (espnet2's loop then stops every rank at the shortest)
        data = [(ids[rank::world], {k: v[rank::world] for k, v in b.items()})
                for ids, b in batches(7 - rank)]
        results = {}
        for loop in ("espnet2", "ours"):
            model = DistributedDataParallel(HostLengthsToy() if host_lengths else GatherableToy())
            given_to_ddp: set[str] = set()  # the lengths' types as DDP's forward gets them
            model.register_forward_pre_hook(
                lambda _, args, kwargs: given_to_ddp.add(type(kwargs["x_lengths"]).__name__),
                with_kwargs=True)
            optimizer = torch.optim.Adam(model.parameters(), lr=0.1, fused=fused)
            scheduler = PiecewiseLinearWarmupLR(optimizer, warmup_steps_list=[0, 3, 10],
                                                warmup_lr_list=[0.0, 0.1, 0.0])
            reporter = Reporter()
            reporter.set_epoch(1)
            with reporter.observe("train") as sub, CountedCollectives() as collectives:
                if loop == "espnet2":
                    Trainer.train_one_epoch(
                        model=model, iterator=data, optimizers=[optimizer],
                        schedulers=[scheduler], scaler=None, reporter=sub, summary_writer=None,
                        options=opts, distributed_option=DistributedOption(distributed=True))
                else:
                    sync_free_step.train_one_epoch(model, data, [optimizer], [scheduler], sub,
                                                   opts, distributed=True)
            results[loop] = {"weight": model.module.proj.weight.detach().clone(),
                             "bias": model.module.proj.bias.detach().clone(),
                             "stats": {k: v for k, v in reporter.stats[1]["train"].items()
                                       if not k.endswith("time")},
                             "length_types": getattr(model.module, "length_types", None),
                             "given_to_ddp": given_to_ddp, "collectives": collectives}
            # freed while the process group lives: a DDP model's reducer destroying a gloo
            # group holds the GIL while it joins the group's threads, and a thread that still
            # has to release a gathered tensor waits for the GIL (pytorch#56297): a hang
            del model, optimizer, scheduler
            gc.collect()
        torch.save(results, Path(out) / f"rank{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.parametrize("fused,host_lengths,rendezvous", [
    (False, False, "weight"), (True, True, "weight"), (True, "off", "weight"),
    (False, True, "stats_and_weight"), (True, True, "none"), (False, False, "none")])
def test_ddp_same_parameters_and_statistics_as_espnet2s_loop(tmp_path: Path, fused: bool,
                                                             host_lengths: bool,
                                                             rendezvous: str) -> None:
    """Two CPU processes (gloo): our loop under DDP updates and reports as espnet2's does,
    uneven batch counts included, with the collectives `--ddp_step_rendezvous` says; a model
    that takes host lengths gets them as tensors through DDP's forward (passed wrapped,
    unwrapped by the hook)."""
    import torch.multiprocessing as mp

    mp.spawn(_ddp_rank, args=(2, str(tmp_path / "init"), str(tmp_path), fused, host_lengths,
                              rendezvous), nprocs=2)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    for rank, got in enumerate(ranks):
        if host_lengths is True:  # wrapped for DDP's forward, a tensor again inside it
            assert got["ours"]["given_to_ddp"] == {"HostTensor"}
            assert got["ours"]["length_types"] == {"Tensor"}
        if host_lengths == "off":  # --ddp_host_lengths false: to DDP as tensors, as before
            assert got["ours"]["given_to_ddp"] == {"Tensor"}
        assert got["espnet2"]["given_to_ddp"] == {"Tensor"}
        for name in ("weight", "bias"):
            if rendezvous == "none":  # the division after the backward: equal up to rounding
                torch.testing.assert_close(got["ours"][name], got["espnet2"][name],
                                           rtol=1e-5, atol=1e-6)
            else:
                assert torch.equal(got["ours"][name], got["espnet2"][name])
        # 6 steps, log interval 3, 2 tensor statistics (loss, peak); the batch count's MIN once;
        # "none": the weight's all-reduce issued without waiting for it
        assert got["ours"]["collectives"] == collections.Counter({
            "all_reduce": 1 + 6 * (rendezvous != "none"),
            "all_reduce async": 6 * (rendezvous == "none"),
            "all_gather": 2 * 6 if rendezvous == "stats_and_weight" else 2})
        ours, ref = got["ours"]["stats"], got["espnet2"]["stats"]
        assert sorted(ours) == sorted(ref)
        # 6 steps trained on each rank; espnet2's rank 0 also counts the batch it fetched
        # before its stop flag told it rank 1 had run out (an iter_time, no training)
        assert ours["total_count"] == 6 and ref["total_count"] == 6 + (rank == 0)
        for key in ("loss", "peak", "grad_norm", "clip", "optim0_lr0"):
            assert ours[key] == pytest.approx(ref[key], rel=1e-6), key
    # the ranks hold one model: DDP averaged the gradients
    assert torch.equal(ranks[0]["ours"]["weight"], ranks[1]["ours"]["weight"])


def test_ddp_moves_input_tensors_to_its_device_but_not_host_tensors() -> None:
    """DDP built with `device_ids` (espnet2's, one GPU a process) moves the inputs with
    `torch.distributed.utils._to_kwargs`; run here to the meta device: a plain lengths tensor
    would leave the host, a HostTensor's stays, and the hook gives the model the tensor."""
    from torch.distributed.utils import _to_kwargs

    batch = {"x": torch.ones(2, 3), "x_lengths": torch.tensor([3, 2]), "utt_id": ["a", "b"]}
    plain = _to_kwargs((), batch, torch.device("meta"), False)[1][0]
    assert plain["x"].is_meta and plain["x_lengths"].is_meta  # what round 7's 2 GPUs ran
    kept = sync_free_step._to_device(batch, "cpu", keep_lengths_on_host=True, through_ddp=True)
    moved = _to_kwargs((), kept, torch.device("meta"), False)[1][0]
    assert isinstance(moved["x_lengths"], sync_free_step.HostTensor)
    assert moved["x_lengths"].tensor is batch["x_lengths"] and moved["utt_id"] == ["a", "b"]
    _, unwrapped = sync_free_step.unwrap_host_tensors(torch.nn.Identity(), (), moved)
    assert unwrapped["x_lengths"] is batch["x_lengths"] and unwrapped["x"] is moved["x"]


def _rank_sums_rank(rank: int, world: int, init_file: str, out: str) -> None:
    """One rank: three steps' statistics averaged by espnet2's `recursive_average` step by step,
    and by `average_rank_sums` at once."""
    from espnet2.torch_utils.recursive_op import recursive_average

    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                                         world_size=world)
    try:
        nan = float("nan")
        # per step: {statistic: this rank's value}, this rank's weight; a NaN on one rank is
        # left out of the mean (x ranks), a NaN on both stays NaN; float64 apart from float32
        steps = [({"a": [1.5, 2.5][rank], "b": [nan, 4.0][rank]}, [4, 2][rank]),
                 ({"a": [nan, nan][rank], "b": [0.25, 1.0][rank]}, [3, 3][rank]),
                 ({"a": [7.0, -1.0][rank], "b": [2.0, nan][rank]}, [1, 5][rank])]
        reference, pending = [], []
        for values, weight in steps:
            stats = {"a": torch.tensor([values["a"]]),
                     "b": torch.tensor([values["b"]], dtype=torch.float64)}
            weight = torch.tensor([weight])
            averaged, total = recursive_average(dict(stats), weight, distributed=True)
            reference.append(averaged)
            total = weight.sum()
            torch.distributed.all_reduce(total)
            pending.append({k: sync_free_step.RankSum(v, weight, total) for k, v in stats.items()})
        sync_free_step.average_rank_sums([s for step in pending for s in step.values()])
        torch.save({"reference": reference,
                    "ours": [{k: s.value for k, s in step.items()} for step in pending]},
                   Path(out) / f"rank{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


def test_rank_sums_average_as_espnet2s_recursive_average(tmp_path: Path) -> None:
    """Gathered once for several steps, the statistics are espnet2's per-step averages over
    the ranks, NaN handling and dtypes included."""
    import torch.multiprocessing as mp

    mp.spawn(_rank_sums_rank, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2)
    for rank in (0, 1):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=False)
        for ours, reference in zip(got["ours"], got["reference"], strict=True):
            for key in ("a", "b"):
                assert ours[key].dtype == reference[key].dtype
                torch.testing.assert_close(ours[key], reference[key].reshape(()), rtol=0,
                                           atol=0, equal_nan=True)
        assert torch.isnan(got["ours"][1]["a"])  # NaN on every rank
        assert got["ours"][0]["b"].item() == 2 * (2 * 4.0) / 6  # rank 0's NaN left out, x 2


def test_bf16_weight_copies_on_the_cpu_are_told_at_info_and_change_nothing(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The committed XLS-R config asks for the copies; a CPU run of it trains exactly as without
    them and says so once, at INFO: an expected fallback, not a warning on every console."""
    ref = train("ours", options(tmp_path), batches(), True)
    with caplog.at_level(logging.INFO):
        ours = train("ours", options(tmp_path, "--bf16_weight_copies", "true"), batches(), True)
    said = [r for r in caplog.records if "bf16_weight_copies: off" in r.getMessage()]
    assert [(r.levelno, r.getMessage()) for r in said] == [
        (logging.INFO, "bf16_weight_copies: off, since the run is not on a GPU")]
    for a, b in zip(ours[0].parameters(), ref[0].parameters()):
        assert torch.equal(a, b)
