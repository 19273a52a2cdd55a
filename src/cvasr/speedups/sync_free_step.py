"""`sync_free_step: true`: espnet2's training loop, issued without waiting for the GPU.

Why: espnet2's `Trainer.train_one_epoch` stops the CPU until the GPU is idle several times a
step: a blocking copy of the batch, the GradScaler's found-inf check, `isfinite(grad_norm)` in an
`if`, an `.item()` for every statistic it reports, and the model's own reads of length tensors
that the copy put on the GPU: 66 stops a step for XLS-R. After each one the GPU waits while the
CPU prepares the next work. This loop runs the same step with none of those stops (13 left a
step, inside torch's CTC and espnet2's SpecAug, which `model_conf: {ctc_impl: triton}` and
`specaug: sync_free_specaug` take out); on an H200 it gave +4% (bench/NOTES.md: the step is
bound by eager kernel issue more than by the stops):

- bf16 autocast without a GradScaler: bf16 has fp32's exponent range, so the scaler's powers of
  two change no number (espnet2 still creates and checkpoints it; it is not used);
- a non-finite gradient norm skips the update on the GPU: fused optimizers take a `found_inf`
  tensor, as GradScaler hands it to them; any other optimizer is checked on the host, as espnet2
  does;
- statistics stay on the GPU and reach espnet2's reporter once per log interval, in one
  transfer, with the same names, weights and order (logs, plots, best-model choice unchanged);
- the batch is copied with `non_blocking` from the DataLoader's pinned memory, and for models
  that say they take them (`takes_host_lengths`), the `*_lengths` tensors stay on the host, so
  the model reads lengths without a sync; under DDP too, where they pass its forward wrapped
  (`HostTensor`), since DDP copies every input tensor to its GPU;
- under DDP (one GPU a process), each step's loss and statistics are averaged over the
  processes as espnet2's loop averages them, without a host read; the batches a rank trains are
  settled once an epoch (espnet2 all-reduces a stop flag and reads it every step), and the
  statistics, only reported, are gathered once a log interval (`--ddp_step_rendezvous`: what the
  ranks still wait for each other for between the forward and the backward).

One difference from espnet2, logged when it happens: a skipped (non-finite) update still advances
the learning-rate schedule, since holding it back needs the host to know. Everything else is
espnet2's step: the same autocast, loss divided by accum_grad, gradient clipping, optimizer and
scheduler calls, in the same order. Where the loop cannot do what espnet2's would (several
GPUs in one process, fp16 autocast, gradient noise, models choosing an optimizer per batch),
`unsupported_reason` says why and the trainer runs espnet2's loop.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import time
from typing import Any, Iterable, Optional, Sequence

import torch
from espnet2.schedulers.abs_scheduler import AbsBatchStepScheduler
from espnet2.torch_utils.device_funcs import to_device
from espnet2.train.reporter import SubReporter

from cvasr.speedups import bf16_weight_copies


def unsupported_reason(options: Any, distributed: bool, autocast_dtype: Optional[torch.dtype]
                       ) -> Optional[str]:
    """Why this loop cannot replace espnet2's for these options, or None."""
    if getattr(options, "ngpu", 0) > 1 and not distributed:
        return "it runs one GPU a process (DDP), not DataParallel over several"
    if getattr(options, "use_amp", False) and autocast_dtype is not torch.bfloat16:
        return "fp16 autocast needs espnet2's GradScaler"
    if getattr(options, "grad_noise", False):
        return "grad_noise is not implemented in it"
    if getattr(options, "no_forward_run", False):
        return "no_forward_run is espnet2's own debugging loop"
    return None


#: `--ddp_step_rendezvous`: what the ranks of a DDP step exchange between its forward and its
#: backward. "stats_and_weight": espnet2's loop (each statistic all-gathered and the batch weight
#: all-reduced, every step); "weight": only the weight, which the loss is divided by before the
#: backward, the statistics gathered once a log interval (`RankSum`), the same figures;
#: "none": the weight's all-reduce runs beside the backward and the averaged gradients are
#: divided by it after it (fairseq's normalisation; equal to the others up to rounding).
DDP_STEP_RENDEZVOUS = ("stats_and_weight", "weight", "none")
#: their default, and `--ddp_host_lengths`' (the trainer's options take them from here)
DEFAULT_DDP_STEP_RENDEZVOUS = "weight"
DEFAULT_DDP_HOST_LENGTHS = True


class RankSum:
    """One statistic of one step, weighted and summed on this rank, until the flush averages it
    over the ranks (`average_rank_sums`): espnet2 gathers it every step, although it is only
    reported, which made every step wait for the slowest rank once more."""

    __slots__ = ("local", "total", "value")

    def __init__(self, value: torch.Tensor, weight: torch.Tensor, total: torch.Tensor) -> None:
        self.local = _weighted_sum(value, weight)
        self.total = total  # the ranks' total weight; all-reduced by the time of the flush
        self.value: Optional[torch.Tensor] = None


def average_rank_sums(pending: Sequence[RankSum]) -> None:
    """Set each RankSum's value to espnet2's `recursive_average` of it over the ranks: one
    all-gather for all of them (one per dtype), then per statistic `_combine_over_ranks` and
    the division by the total weight, on the device. Every rank must flush the same statistics
    in the same order, as espnet2's per-step gathers already require."""
    by_dtype: dict[torch.dtype, list[RankSum]] = {}
    for item in pending:
        by_dtype.setdefault(item.local.dtype, []).append(item)
    for group in by_dtype.values():
        local = torch.stack([item.local for item in group])
        gathered = [torch.empty_like(local) for _ in range(torch.distributed.get_world_size())]
        torch.distributed.all_gather(gathered, local)
        sums = _combine_over_ranks(torch.stack(gathered))  # from ranks x statistics
        for item, value in zip(group, sums):
            item.value = value / item.total.type(value.dtype)


class DeferredReports:
    """Reporter registrations held back and replayed in order, GPU values read in one transfer.

    `start_flush` starts that transfer without waiting for it (into pinned memory, behind the
    GPU's queued work); `complete` hands the steps over once it has arrived: a log interval's
    statistics no longer make the CPU wait for the GPU to finish all it was given, which left
    the GPU idle while the CPU issued the next step (7 ms of a 0.9 s epoch; bench/NOTES.md,
    round 18). `flush` does both, waiting."""

    def __init__(self, reporter: SubReporter) -> None:
        self.reporter = reporter
        self.steps: list[list[tuple[dict[str, Any], Any]]] = [[]]
        # (closed steps, extra tensors, [(tensors, host values, copy's event)]) in flight
        self._copies: list[tuple[list, dict[str, torch.Tensor], list]] = []

    def register(self, stats: dict[str, Any], weight: Any = None) -> None:
        self.steps[-1].append((stats, weight))

    def next(self) -> None:
        """Close the step (espnet2's `reporter.next()`)."""
        self.steps.append([])

    def start_flush(self, extra: dict[str, torch.Tensor] | None = None) -> None:
        """Start copying every closed step's values (and `extra`'s, handed to `complete`'s
        callback) to the host: one device-to-host copy a device, under DDP after one
        all-gather of the interval's `RankSum`s, launched now on every rank alike."""
        closed, self.steps = self.steps[:-1], self.steps[-1:]
        pending = [v for step in closed for stats, _ in step for v in stats.values()
                   if isinstance(v, RankSum)]
        if pending:
            average_rank_sums(pending)
        closed = [[({k: v.value if isinstance(v, RankSum) else v for k, v in stats.items()},
                    weight) for stats, weight in step] for step in closed]
        extra = {k: v.detach().clone() for k, v in (extra or {}).items()}
        tensors = [v for step in closed for stats, weight in step
                   for v in (*stats.values(), weight) if isinstance(v, torch.Tensor)]
        by_device: dict[torch.device, list[torch.Tensor]] = {}
        for t in [*tensors, *extra.values()]:
            if t.numel() != 1:
                raise ValueError(f"a reported statistic must be one number, got shape {tuple(t.shape)}")
            by_device.setdefault(t.device, []).append(t)
        copies = []
        for device, group in by_device.items():
            flat = torch.cat([t.detach().reshape(1).double() for t in group])
            event = None
            if device.type == "cuda":
                host = torch.empty(flat.shape, dtype=flat.dtype, pin_memory=True)
                host.copy_(flat, non_blocking=True)
                event = torch.cuda.Event()
                event.record()
            else:
                host = flat
            copies.append((group, host, event))
        self._copies.append((closed, extra, copies))

    def complete(self, wait: bool, on_interval=None) -> None:
        """Hand the reporter every started flush whose copy has arrived, in order (all of them,
        waiting, with `wait`); after each, `on_interval(extra)` with `extra`'s host values."""
        while self._copies:
            closed, extra, copies = self._copies[0]
            if not wait and not all(e is None or e.query() for _, _, e in copies):
                break
            self._copies.pop(0)
            values: dict[int, float] = {}
            for group, host, event in copies:
                if event is not None:
                    event.synchronize()
                values.update({id(t): v for t, v in zip(group, host.tolist())})

            def plain(v: Any) -> Any:
                return values[id(v)] if isinstance(v, torch.Tensor) else v

            for step in closed:
                for stats, weight in step:
                    self.reporter.register({k: plain(v) for k, v in stats.items()}, plain(weight))
                self.reporter.next()
            if on_interval is not None:
                on_interval({k: values[id(v)] for k, v in extra.items()})

    def flush(self, extra: dict[str, torch.Tensor] | None = None, on_interval=None) -> None:
        """Hand every closed step to the reporter now (after any flush still in flight)."""
        self.start_flush(extra)
        self.complete(wait=True, on_interval=on_interval)


def total_grad_norm(grads: Sequence[torch.Tensor], norm_type: float) -> torch.Tensor:
    """`clip_grad_norm_`'s total norm, each tensor's norm taken in fp32 (torch's own rounds the
    norms of bf16 gradients, bf16_weight_copies', to bf16; fp32 ones' are the same)."""
    if not grads:
        return torch.tensor(0.0)
    by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
    for grad in grads:  # one dtype a call: mixed lists leave foreach's multi-tensor kernel
        by_dtype.setdefault(grad.dtype, []).append(grad)
    norms = [norm for same in by_dtype.values()
             for norm in torch._foreach_norm(same, norm_type, dtype=torch.float32)]
    if math.isinf(norm_type):
        return torch.stack(norms).max()
    return torch.linalg.vector_norm(torch.stack(norms), norm_type)


def clip_scale(parameters: Iterable[torch.nn.Parameter], max_norm: float, norm_type: float
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """`clip_grad_norm_`'s total norm, and what to divide the gradients by to clip them as it
    multiplies them (1 where the norm is within `max_norm`): a fused optimizer's `grad_scale`.

    Why: `clip_grad_norm_` multiplies every gradient in place, a pass that reads and writes all
    of them (1.26 GB of fp32 for XLS-R 300M); fused Adam reads them anyway and divides by its
    `grad_scale` in the same kernel (writing the clipped gradients back, as the clip leaves
    them). The same clipping up to the rounding of x * c against x / (1 / c)."""
    grads = [p.grad for p in parameters if p.grad is not None]
    total = total_grad_norm(grads, norm_type)
    coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    return total, (1.0 / coef).float()


def _weighted_sum(value: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """One rank's part of espnet2's `recursive_sum`: the statistic times the weight, summed."""
    assert value.size() == weight.size(), (value.size(), weight.size())
    return (value * weight.type(value.dtype)).sum()


def _combine_over_ranks(gathered: torch.Tensor) -> torch.Tensor:
    """espnet2's `recursive_sum` of the ranks' weighted sums (dim 0: the ranks), without its
    host read: the NaN-skipping mean x ranks, unless every rank is NaN (then their plain sum,
    NaN), chosen on the device."""
    return torch.where(torch.isnan(gathered).all(dim=0), gathered.sum(dim=0),
                       torch.nanmean(gathered, dim=0) * gathered.size(0))


def _sum_over_ranks(value: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """espnet2's `recursive_sum` of one statistic over the ranks, gathered now (espnet2's
    exchange, `stats_and_weight`)."""
    local = _weighted_sum(value, weight)
    gathered = [torch.empty_like(local) for _ in range(torch.distributed.get_world_size())]
    torch.distributed.all_gather(gathered, local)
    return _combine_over_ranks(torch.stack(gathered))


def average_over_ranks(stats: dict[str, Any], weight: torch.Tensor
                       ) -> tuple[dict[str, Any], torch.Tensor]:
    """espnet2's `recursive_average(stats, weight, distributed=True)` (the weighted mean of each
    statistic over all ranks, and the ranks' total weight) computed on the device alone."""
    sums = {k: _sum_over_ranks(v, weight) if isinstance(v, torch.Tensor) else v
            for k, v in stats.items()}
    total = weight.sum()
    torch.distributed.all_reduce(total, op=torch.distributed.ReduceOp.SUM)
    return {k: v / total.type(v.dtype) if isinstance(v, torch.Tensor) else v
            for k, v in sums.items()}, total


def _divide_gradients(model: torch.nn.Module, total: torch.Tensor) -> None:
    """Every gradient divided by the ranks' total weight, on the device (`"none"`: the division
    espnet2 applies to the loss before the backward)."""
    by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
    for param in model.parameters():
        if param.grad is not None:
            by_dtype.setdefault(param.grad.dtype, []).append(param.grad)
    for dtype, grads in by_dtype.items():
        torch._foreach_div_(grads, total.to(dtype))


def _batches_on_every_rank(iterator: Iterable, device: str) -> int:
    """The batches each rank trains this epoch: the fewest any rank has, as espnet2's loop ends
    every rank when the first runs out (its stop flag, all-reduced every step)."""
    try:
        mine = len(iterator)  # type: ignore[arg-type]
    except TypeError:
        raise RuntimeError("sync_free_step under DDP needs an iterator with a length; train "
                           "with --sync_free_step false") from None
    count = torch.tensor([mine], device=device)
    torch.distributed.all_reduce(count, op=torch.distributed.ReduceOp.MIN)
    return int(count.item())  # once an epoch


class HostTensor:
    """A tensor that DDP's forward leaves on the host. DDP built with `device_ids`, as espnet2
    builds it (one GPU a process), copies every tensor among the model's inputs to that GPU, so
    the lengths kept on the host arrived on the GPU and each read of them in the model was a
    host sync again (the likely source of the ~49 `cudaStreamSynchronize` a step that each
    process made on 2 GPUs and none made on one, bench/NOTES.md round 7). This is no tensor, so
    DDP passes it through as it is; `unwrap_host_tensors`, a forward pre-hook on the wrapped
    module, hands the model the tensor."""

    __slots__ = ("tensor",)

    def __init__(self, tensor: torch.Tensor) -> None:
        self.tensor = tensor

    def __repr__(self) -> str:
        return f"HostTensor({self.tensor!r})"


def unwrap_host_tensors(module: torch.nn.Module, args: tuple, kwargs: dict[str, Any]
                        ) -> tuple[tuple, dict[str, Any]]:
    """Forward pre-hook (`with_kwargs=True`): each HostTensor argument as its tensor."""
    return args, {k: v.tensor if isinstance(v, HostTensor) else v for k, v in kwargs.items()}


def _host_lengths(model: torch.nn.Module, through_ddp_allowed: bool = True
                  ) -> tuple[bool, bool]:
    """Whether the model takes its `*_lengths` on the host (`takes_host_lengths`, asked of the
    model itself inside a DDP wrapper), and whether they pass DDP's forward to reach it; then
    the wrapped model unwraps them (`unwrap_host_tensors`, hooked once, a no-op on any other
    input, espnet2's validation loop's included). `through_ddp_allowed` false
    (`--ddp_host_lengths false`): under DDP the lengths go to the GPU, as before 244499d."""
    wrapped = isinstance(model, torch.nn.parallel.DistributedDataParallel)
    inner = model.module if wrapped else model
    if wrapped and not through_ddp_allowed:
        return False, False
    takes = bool(getattr(inner, "takes_host_lengths", False))
    through_ddp = takes and wrapped
    if through_ddp and not getattr(inner, "_unwraps_host_tensors", False):
        inner.register_forward_pre_hook(unwrap_host_tensors, with_kwargs=True)
        inner._unwraps_host_tensors = True
        logging.info("sync_free_step: the model's *_lengths pass DDP's forward on the host")
    return takes, through_ddp


def _to_device(batch: dict[str, Any], device: str, keep_lengths_on_host: bool,
               through_ddp: bool = False) -> dict[str, Any]:
    """espnet2's `to_device` without blocking (the DataLoader pins batches on GPU runs), the
    `*_lengths` left on the host where asked (`through_ddp`: wrapped, so DDP leaves them)."""
    def host(value: Any) -> Any:
        return HostTensor(value) if through_ddp and isinstance(value, torch.Tensor) else value

    return {key: host(value) if keep_lengths_on_host and key.endswith("_lengths")
            else to_device(value, device, non_blocking=True) for key, value in batch.items()}


def train_one_epoch(model: torch.nn.Module, iterator: Iterable,
                    optimizers: Sequence[torch.optim.Optimizer], schedulers: Sequence[Any],
                    reporter: SubReporter, options: Any, summary_writer: Any = None,
                    autocast_dtype: Optional[torch.dtype] = None, distributed: bool = False
                    ) -> bool:
    """espnet2's `Trainer.train_one_epoch` without host syncs; returns whether every update of
    the epoch was skipped (espnet2 then stops training). `distributed`: one of several DDP
    processes, each step's loss and statistics averaged over them as espnet2 does."""
    device = "cuda" if options.ngpu > 0 else "cpu"
    accum_grad, grad_clip = options.accum_grad, options.grad_clip
    log_interval = options.log_interval
    if log_interval is None:
        try:
            log_interval = max(len(iterator) // 20, 10)
        except TypeError:
            log_interval = 100
    host_lengths, through_ddp = _host_lengths(
        model, getattr(options, "ddp_host_lengths", DEFAULT_DDP_HOST_LENGTHS))
    rendezvous = getattr(options, "ddp_step_rendezvous", DEFAULT_DDP_STEP_RENDEZVOUS)
    if rendezvous not in DDP_STEP_RENDEZVOUS:
        raise ValueError(f"ddp_step_rendezvous {rendezvous!r}: one of {DDP_STEP_RENDEZVOUS}")
    if rendezvous == "none" and accum_grad > 1:
        logging.info("sync_free_step: --ddp_step_rendezvous none divides each step's gradients "
                     "after the backward, which accum_grad > 1 adds up first; using 'weight'")
        rendezvous = "weight"
    world = torch.distributed.get_world_size() if distributed else 1
    limit = _batches_on_every_rank(iterator, device) if distributed else None
    amp = dict(device_type="cuda", enabled=bool(options.use_amp) and device == "cuda")
    if autocast_dtype is not None:
        amp["dtype"] = autocast_dtype

    # the clipping's multiply done inside fused optimizers' kernels, where every one is fused
    clip_in_optimizer = (getattr(options, "clip_in_optimizer", False) and 0 < grad_clip < math.inf
                         and all(getattr(o, "_step_supports_amp_scaling", False)
                                 for o in optimizers))
    copies = None  # the linear layers trained through bf16 copies (bf16_weight_copies)
    if getattr(options, "bf16_weight_copies", False):
        why = bf16_weight_copies.unsupported_reason(
            optimizers, device, amp.get("dtype") if amp["enabled"] else None, distributed,
            accum_grad)
        if why is None:
            copies = bf16_weight_copies.Bf16WeightCopies.for_model(model, optimizers)
        elif not getattr(model, "_bf16_weight_copies_refused", False):
            # told once; a setting that rules the copies out (the optimizer, autocast,
            # accumulation) is a warning, a CPU or DDP run of a config asking for them is not
            expected = bf16_weight_copies.unavailable_here(device, distributed) is not None
            (logging.info if expected else logging.warning)(f"bf16_weight_copies: off, since {why}")
            model._bf16_weight_copies_refused = True
    model.train()
    plan = EpochPlan(device, amp, log_interval, distributed, host_lengths, through_ddp,
                     rendezvous, world, limit, clip_in_optimizer, copies)
    with copies.swapped_in() if copies is not None else contextlib.nullcontext():
        return train_steps(model, iterator, optimizers, schedulers, reporter, options,
                           summary_writer, plan)


@dataclasses.dataclass
class EpochPlan:
    """What train_one_epoch settles from the options and the setup before the first batch."""

    device: str
    amp: dict  # torch.autocast's arguments
    log_interval: int
    distributed: bool = False
    host_lengths: bool = False
    through_ddp: bool = False
    rendezvous: str = DEFAULT_DDP_STEP_RENDEZVOUS
    world: int = 1
    limit: Optional[int] = None  # the batches every rank has
    clip_in_optimizer: bool = False
    copies: Optional[bf16_weight_copies.Bf16WeightCopies] = None  # swapped in by the caller


def train_steps(model: torch.nn.Module, iterator: Iterable,
                optimizers: Sequence[torch.optim.Optimizer], schedulers: Sequence[Any],
                reporter: SubReporter, options: Any, summary_writer: Any, plan: EpochPlan
                ) -> bool:
    """train_one_epoch's loop over the batches, for a plan it settled (tests give their own,
    e.g. CPU bf16 autocast, which train_one_epoch never chooses)."""
    device, amp, log_interval, distributed = plan.device, plan.amp, plan.log_interval, \
        plan.distributed
    host_lengths, through_ddp, rendezvous = plan.host_lengths, plan.through_ddp, plan.rendezvous
    world, limit, clip_in_optimizer, copies = plan.world, plan.limit, plan.clip_in_optimizer, \
        plan.copies
    accum_grad, grad_clip = options.accum_grad, options.grad_clip
    reports = DeferredReports(reporter)
    skipped = torch.zeros((), device=device)  # updates skipped for a non-finite gradient norm
    skipped_logged, updates = 0, 0

    def skipped_so_far(extra: dict[str, float]) -> None:
        nonlocal skipped_logged
        count = int(extra["skipped"])
        if count > skipped_logged:
            logging.warning(f"{count - skipped_logged} update(s) skipped: non-finite gradient "
                            "norm (with a fused optimizer the learning-rate schedule still "
                            "advanced)")
            skipped_logged = count

    def interval_done(extra: dict[str, float]) -> None:
        """A log interval's statistics have reached the reporter: espnet2's log line for it."""
        skipped_so_far(extra)
        logging.info(reporter.log_message(-log_interval))
        if summary_writer is not None:
            reporter.tensorboard_add_scalar(summary_writer, -log_interval)
        if getattr(options, "use_wandb", False):
            reporter.wandb_log()

    start_time = time.perf_counter()
    fetch_start = time.perf_counter()
    for iiter, (utt_id, batch) in enumerate(iterator, 1):
        if limit is not None and iiter > limit:
            break
        reports.register({"iter_time": time.perf_counter() - fetch_start})
        batch["utt_id"] = utt_id
        batch = _to_device(batch, device, host_lengths, through_ddp)
        with torch.autocast(**amp):
            forward_start = time.perf_counter()
            retval = model(**batch)
            if isinstance(retval, dict):
                if retval.get("optim_idx") is not None:
                    raise RuntimeError("sync_free_step: the model picks an optimizer per batch "
                                       "(optim_idx); train with --sync_free_step false")
                loss, stats, weight = retval["loss"], retval["stats"], retval["weight"]
            else:
                loss, stats, weight = retval
            retval = None
            reports.register({"forward_time": time.perf_counter() - forward_start})
            stats = {k: v for k, v in stats.items() if v is not None}
            weight_all_reduce = None  # "none": the total weight's, waited for after the backward
            if distributed:  # as espnet2: weighted over the ranks, x ranks (DDP averages)
                loss = (loss * weight.type(loss.dtype)).sum()
                if rendezvous == "stats_and_weight":
                    stats, weight = average_over_ranks(stats, weight)
                else:
                    total = weight.sum()  # a work handle only when issued without waiting
                    weight_all_reduce = torch.distributed.all_reduce(
                        total, op=torch.distributed.ReduceOp.SUM, async_op=rendezvous == "none")
                    stats = {k: RankSum(v, weight, total) if isinstance(v, torch.Tensor) else v
                             for k, v in stats.items()}
                    weight = total
                if weight_all_reduce is None:
                    loss /= weight
                loss *= world
            # in place, as espnet2 does: the model's detached stats share the loss's storage,
            # so espnet2 reports them divided by accum_grad too; the logs stay comparable
            loss /= accum_grad
        reports.register(stats, weight)

        backward_start = time.perf_counter()
        loss.backward()
        del loss
        if weight_all_reduce is not None:
            weight_all_reduce.wait()
            _divide_gradients(model, weight)
        reports.register({"backward_time": time.perf_counter() - backward_start})

        if iiter % accum_grad == 0:
            copies_scale = None  # what the bf16 copies' update divides their gradients by
            if copies is not None:  # the norm in fp32 over bf16 and fp32 gradients alike
                grad_norm, copies_scale = clip_scale(model.parameters(), grad_clip,
                                                     options.grad_clip_type)
                if clip_in_optimizer:
                    grad_scale = copies_scale
                else:  # the other parameters' gradients clipped in place, as clip_grad_norm_
                    others = [p.grad for p in model.parameters()
                              if p.grad is not None and id(p) not in copies.ids]
                    if others and 0 < grad_clip < math.inf:
                        torch._foreach_mul_(others, 1.0 / copies_scale)
                if not 0 < grad_clip < math.inf:
                    copies_scale = None
            elif clip_in_optimizer:
                grad_norm, grad_scale = clip_scale(model.parameters(), grad_clip,
                                                   options.grad_clip_type)
            else:
                grad_norm = torch.nn.utils.clip_grad_norm_(
                    model.parameters(), max_norm=grad_clip, norm_type=options.grad_clip_type)
            if not isinstance(grad_norm, torch.Tensor):
                grad_norm = torch.tensor(grad_norm)
            finite = torch.isfinite(grad_norm)
            found_inf = (~finite).float()
            nan = torch.full_like(grad_norm, float("nan"))
            # as espnet2: a skipped step reports no grad_norm/clip (NaN, left out of averages)
            reports.register({
                "grad_norm": torch.where(finite, grad_norm, nan),
                "clip": torch.where(finite, (grad_norm > grad_clip).float() * 100, nan),
                "loss_scale": 1.0,
            })
            optim_start = time.perf_counter()
            if copies is not None:  # before the optimizers: their steps may change the lr
                copies.step(found_inf, copies_scale)
            for optimizer, scheduler in zip(optimizers, schedulers):
                if getattr(optimizer, "_step_supports_amp_scaling", False):
                    optimizer.found_inf = found_inf  # the fused kernel skips the update on it
                    if clip_in_optimizer:  # and divides the gradients by it: the clipping
                        optimizer.grad_scale = grad_scale
                    try:
                        optimizer.step()
                    finally:
                        del optimizer.found_inf
                        if clip_in_optimizer:
                            del optimizer.grad_scale
                elif bool(finite):  # other optimizers: decided on the host, as espnet2 does
                    optimizer.step()
                else:
                    continue  # as espnet2: no update, no scheduler step
                if isinstance(scheduler, AbsBatchStepScheduler):
                    scheduler.step()
            reports.register({"optim_step_time": time.perf_counter() - optim_start})
            for optimizer in optimizers:
                optimizer.zero_grad()
            if copies is not None:
                copies.zero_grad()
            skipped += found_inf
            updates += 1
            reports.register({
                **{f"optim{i}_lr{j}": group["lr"] for i, optimizer in enumerate(optimizers)
                   for j, group in enumerate(optimizer.param_groups) if "lr" in group},
                "train_time": time.perf_counter() - start_time,
            })
            start_time = time.perf_counter()

        reports.next()
        reports.complete(wait=False, on_interval=interval_done)  # an interval's copy arrived
        if iiter % log_interval == 0:
            reports.start_flush({"skipped": skipped})
        fetch_start = time.perf_counter()
    reports.complete(wait=True, on_interval=interval_done)
    reports.flush({"skipped": skipped}, on_interval=skipped_so_far)
    return updates == 0 or skipped_logged == updates
