"""bf16 copies of the linear layers' weights, kept by the optimizer: `bf16_weight_copies: true`.

Why: under bf16 autocast every training step casts each fp32 weight of a linear layer to bf16 in
the forward (read 4 bytes, write 2 a parameter) and each bf16 weight gradient the GEMM makes
back to fp32 in the backward (read 2, write 4), and fused Adam then reads the fp32 gradient
(4): for XLS-R 300M's 302 M linear parameters about 4.2 GB of memory traffic a step, ~1.1 ms
of an H200's ~53 ms step predicted; measured, the GPU's work an epoch 4.4% less and the step
3.6% faster in the same run (bench/NOTES.md, rounds 20-21). Here, for the training epoch, each
trainable `nn.Linear`'s weight and bias are swapped in the module for a bf16 copy (a parameter
of its own): autocast finds them in bf16 and casts nothing, and the backward leaves the GEMMs' bf16
gradients on the copies. One Triton kernel then updates the fp32 weights with Adam from those
bf16 gradients and writes the new bf16 copies in the same pass (28 bytes a parameter, as fused
Adam's fp32 update reads and writes).

The numbers are those of the fp32 weights under autocast: a copy is its weight rounded to
nearest (as autocast's cast rounds it), the gradients are the same bf16 values, and the update
is fused Adam's formula in fp32 from them (tests/test_bf16_weight_copies.py: against
`torch.optim.Adam`). The fp32 weights stay the model's parameters outside the training epoch
and the optimizer's throughout: validation, state_dict, checkpoints and the optimizer's state
(`step`, `exp_avg`, `exp_avg_sq`, torch's own layout) are as without the option, so a run
resumes with or without it. The gradient clipping's norm is taken in fp32 over the bf16
gradients and applied inside the update (the clip in the optimizer's kernel).

Limits, checked before the first batch: CUDA, bf16 autocast, one process (DDP's reducer holds
the fp32 parameters), no gradient accumulation (it would add up in bf16), `torch.optim.Adam` or
`AdamW` without amsgrad or maximize and with a float learning rate. Elsewhere training runs
without it (logged).
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
import triton
import triton.language as tl

#: elements a Triton program updates (8 a thread at 4 warps): a block never spans two tensors
BLOCK = 1024
#: bytes every tensor's address is a multiple of for 16-byte (vector) loads and stores
ALIGN = 16


@triton.jit
def _bf16_bits(x):
    """fp32 -> the bits of bf16 rounded to nearest even, as torch's `.to(torch.bfloat16)`
    (written out: Triton's interpreter truncates where the GPU rounds, and the tests run it)."""
    bits = x.to(tl.uint32, bitcast=True)
    bits = bits + 0x7FFF + ((bits >> 16) & 1)
    return (bits >> 16).to(tl.uint16)


@triton.jit
def _address(entry_ptr, ALIGNED: tl.constexpr):
    """A tensor's address from a table, marked a multiple of 16 where the host checked it."""
    address = tl.load(entry_ptr)
    if ALIGNED:
        address = tl.multiple_of(address, 16)
    return address


@triton.jit
def _adam_bf16_copies_kernel(block_tensor_ptr, block_start_ptr, numel_ptr, param_table,
                             grad_table, exp_avg_table, exp_avg_sq_table, copy_table,
                             bias_correction1_ptr, bias_correction2_sqrt_ptr, found_inf_ptr,
                             grad_scale_ptr, lr, beta1, beta2, eps, weight_decay,
                             HAS_FOUND_INF: tl.constexpr, HAS_GRAD_SCALE: tl.constexpr,
                             DECOUPLED: tl.constexpr, ALIGNED: tl.constexpr,
                             BLOCK: tl.constexpr):
    """One block of one tensor: torch's fused Adam (fused_adam_utils.cuh) from a bf16 gradient,
    the fp32 weight and moments updated in place and the weight's bf16 copy written."""
    if HAS_FOUND_INF:
        if tl.load(found_inf_ptr) != 0:  # a non-finite gradient norm: no update
            return
    pid = tl.program_id(0)
    t = tl.load(block_tensor_ptr + pid)
    start = tl.multiple_of(tl.load(block_start_ptr + pid), BLOCK)
    offsets = tl.max_contiguous(start + tl.arange(0, BLOCK), BLOCK)
    mask = offsets < tl.load(numel_ptr + t)
    # the addresses come from tables, so the compiler knows nothing of their alignment: said
    # here where the host checked it, else every load and store is one element wide
    param_ptr = _address(param_table + t, ALIGNED).to(tl.pointer_type(tl.float32))
    grad_ptr = _address(grad_table + t, ALIGNED).to(tl.pointer_type(tl.bfloat16))
    exp_avg_ptr = _address(exp_avg_table + t, ALIGNED).to(tl.pointer_type(tl.float32))
    exp_avg_sq_ptr = _address(exp_avg_sq_table + t, ALIGNED).to(tl.pointer_type(tl.float32))
    copy_ptr = _address(copy_table + t, ALIGNED).to(tl.pointer_type(tl.uint16))

    param = tl.load(param_ptr + offsets, mask=mask)
    grad = tl.load(grad_ptr + offsets, mask=mask).to(tl.float32)
    exp_avg = tl.load(exp_avg_ptr + offsets, mask=mask)
    exp_avg_sq = tl.load(exp_avg_sq_ptr + offsets, mask=mask)
    if HAS_GRAD_SCALE:
        grad = grad / tl.load(grad_scale_ptr)
    if DECOUPLED:  # AdamW
        param = param - lr * weight_decay * param
    else:
        grad = grad + param * weight_decay
    exp_avg = beta1 * exp_avg + (1 - beta1) * grad
    exp_avg_sq = beta2 * exp_avg_sq + (1 - beta2) * grad * grad
    step_size = lr / tl.load(bias_correction1_ptr + t)
    denom = tl.sqrt(exp_avg_sq) / tl.load(bias_correction2_sqrt_ptr + t) + eps
    param = param - step_size * exp_avg / denom
    tl.store(param_ptr + offsets, param, mask=mask)
    tl.store(exp_avg_ptr + offsets, exp_avg, mask=mask)
    tl.store(exp_avg_sq_ptr + offsets, exp_avg_sq, mask=mask)
    tl.store(copy_ptr + offsets, _bf16_bits(param), mask=mask)


@dataclass
class _Copied:
    """One parameter of a linear layer and its bf16 copy."""

    module: torch.nn.Module
    name: str  # "weight" or "bias"
    param: torch.nn.Parameter  # fp32: the model's and the optimizer's
    copy: torch.nn.Parameter  # bf16: the module's during the training epoch


@dataclass
class _Group:
    """The copied parameters of one optimizer parameter group, with its blocks' tables."""

    @property
    def group(self) -> dict:
        """The group's settings as they are now (a resume's `load_state_dict` replaces the
        dicts, and the scheduler sets the learning rate in the new one)."""
        return self.optimizer.param_groups[self.index]

    optimizer: torch.optim.Optimizer
    index: int  # in optimizer.param_groups
    members: list[_Copied]
    block_tensor: torch.Tensor | None = None
    block_start: torch.Tensor | None = None
    numel: torch.Tensor | None = None
    static_tables: torch.Tensor | None = None  # param, exp_avg, exp_avg_sq, copy pointers
    state_ptrs: tuple[int, ...] = ()  # the moments' addresses the tables were built for
    aligned: bool = False  # every static address a multiple of ALIGN


def unavailable_here(device: str, distributed: bool) -> str | None:
    """Why the run's device or launch rules the copies out, or None: the expected case of a CPU
    or DDP run of a config that asks for them (the trainer says it at INFO, not as a warning)."""
    if device != "cuda":
        return "the run is not on a GPU"
    if distributed:
        return "DDP's reducer holds the fp32 parameters (one process only)"
    return None


def unsupported_reason(optimizers: Sequence[torch.optim.Optimizer], device: str,
                       autocast_dtype: torch.dtype | None, distributed: bool,
                       accum_grad: int = 1) -> str | None:
    """Why bf16 weight copies cannot be used in this run, or None."""
    here = unavailable_here(device, distributed)
    if here is not None:
        return here
    if autocast_dtype != torch.bfloat16:
        return "the step does not run under bf16 autocast (use_amp with bf16)"
    if accum_grad > 1:  # the copies' gradients would add up in bf16, the weights' in fp32
        return "accum_grad > 1 would add the gradients up in bf16"
    for optimizer in optimizers:
        if not isinstance(optimizer, torch.optim.Adam):  # AdamW is one
            return f"the optimizer is {type(optimizer).__name__}, not Adam or AdamW"
        for group in optimizer.param_groups:
            for option in ("amsgrad", "maximize", "differentiable"):
                if group.get(option):
                    return f"the optimizer's {option} is on"
            if isinstance(group["lr"], torch.Tensor):
                return "the optimizer's learning rate is a tensor"
    return None


class Bf16WeightCopies:
    """The bf16 copies of a model's trainable linear layers' parameters and their update.

    `swapped_in()` puts the copies into the modules for a training epoch; after each backward,
    `step(found_inf, grad_scale)` updates the fp32 parameters from the copies' gradients and
    rewrites the copies, before the optimizers' own step (which skips the fp32 parameters: they
    have no gradient); `zero_grad()` clears the copies' gradients.
    """

    def __init__(self, model: torch.nn.Module, optimizers: Sequence[torch.optim.Optimizer]):
        owner = {}
        for optimizer in optimizers:
            for index, group in enumerate(optimizer.param_groups):
                for param in group["params"]:
                    owner[id(param)] = (optimizer, index)
        uses: dict[int, int] = {}  # a parameter shared by two modules (tied) keeps fp32
        for _, param in model.named_parameters(remove_duplicate=False):
            uses[id(param)] = uses.get(id(param), 0) + 1
        groups: dict[tuple[int, int], _Group] = {}
        for module in model.modules():
            if not isinstance(module, torch.nn.Linear):
                continue
            for name in ("weight", "bias"):
                param = module._parameters.get(name)
                if (param is None or not param.requires_grad or param.dtype != torch.float32
                        or uses[id(param)] > 1 or id(param) not in owner):
                    continue
                optimizer, index = owner[id(param)]
                copy = torch.nn.Parameter(param.detach().to(torch.bfloat16))
                group = groups.setdefault((id(optimizer), index), _Group(optimizer, index, []))
                group.members.append(_Copied(module, name, param, copy))
        self.groups = list(groups.values())
        self.copies = [m.copy for g in self.groups for m in g.members]
        self.ids = {id(c) for c in self.copies}
        count = sum(m.param.numel() for g in self.groups for m in g.members)
        logging.info(f"bf16_weight_copies: {len(self.copies)} linear-layer parameters "
                     f"({count / 1e6:.1f} M values) trained through bf16 copies")

    @classmethod
    def for_model(cls, model: torch.nn.Module, optimizers: Sequence[torch.optim.Optimizer]
                  ) -> "Bf16WeightCopies":
        """The model's copies, made at the first call and kept: the compiled graph's inputs and
        CUDA graphs' static addresses stay the same tensors from epoch to epoch."""
        copies = getattr(model, "_bf16_weight_copies", None)
        if copies is None:
            copies = cls(model, optimizers)
            model._bf16_weight_copies = copies
        return copies

    @contextlib.contextmanager
    def swapped_in(self) -> Iterator[None]:
        """The copies in the modules (rewritten from the fp32 parameters first: a resume or an
        initialisation may have loaded new values), the fp32 parameters back on leaving."""
        members = [m for g in self.groups for m in g.members]
        with torch.no_grad():
            for m in members:
                m.copy.copy_(m.param)
        for m in members:
            m.module._parameters[m.name] = m.copy
        try:
            yield
        finally:
            for m in members:
                m.module._parameters[m.name] = m.param
            self.zero_grad()

    def zero_grad(self) -> None:
        for copy in self.copies:
            copy.grad = None

    def _tables(self, g: _Group) -> None:
        """The blocks and the pointers that change only when the optimizer's state does (a
        resume loads new moment tensors)."""
        states = []
        for m in g.members:
            state = g.optimizer.state[m.param]
            if not state:  # as torch's Adam starts a parameter (step a float32 tensor)
                state["step"] = torch.tensor(0.0, dtype=torch.float32, device=m.param.device)
                state["exp_avg"] = torch.zeros_like(m.param, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(m.param,
                                                       memory_format=torch.preserve_format)
            states.append(state)
        ptrs = tuple(s[k].data_ptr() for s in states for k in ("exp_avg", "exp_avg_sq"))
        if g.static_tables is not None and ptrs == g.state_ptrs:
            return
        for m, s in zip(g.members, states):
            for k in ("exp_avg", "exp_avg_sq"):
                if not s[k].is_contiguous() or s[k].dtype != torch.float32:
                    raise ValueError(f"bf16_weight_copies: the optimizer's {k} of a linear "
                                     "layer's parameter is not a contiguous fp32 tensor")
            if not m.param.is_contiguous():
                raise ValueError("bf16_weight_copies: a linear layer's parameter is not "
                                 "contiguous")
        device = g.members[0].param.device
        numels = [m.param.numel() for m in g.members]
        blocks = [(t, start) for t, n in enumerate(numels) for start in range(0, n, BLOCK)]
        g.block_tensor = torch.tensor([b[0] for b in blocks], dtype=torch.int32, device=device)
        g.block_start = torch.tensor([b[1] for b in blocks], dtype=torch.int64, device=device)
        g.numel = torch.tensor(numels, dtype=torch.int64, device=device)
        table = [[m.param.data_ptr() for m in g.members],
                 [s["exp_avg"].data_ptr() for s in states],
                 [s["exp_avg_sq"].data_ptr() for s in states],
                 [m.copy.data_ptr() for m in g.members]]
        g.static_tables = torch.tensor(table, dtype=torch.int64, device=device)
        g.state_ptrs = ptrs
        g.aligned = all(p % ALIGN == 0 for row in table for p in row)

    def step(self, found_inf: torch.Tensor | None = None,
             grad_scale: torch.Tensor | None = None) -> None:
        """Adam on the fp32 parameters from the copies' gradients, the copies rewritten; with
        `found_inf` (1: skip) and `grad_scale` (divide the gradients by it) on the device, as
        fused Adam takes them. A group none of whose copies has a gradient is left alone."""
        for g in self.groups:
            grads = [m.copy.grad for m in g.members]
            if all(grad is None for grad in grads):
                continue
            if any(grad is None for grad in grads):
                raise RuntimeError("bf16_weight_copies: some linear layers got no gradient this "
                                   "step; train with bf16_weight_copies: false")
            self._tables(g)
            device = g.members[0].param.device
            steps = [g.optimizer.state[m.param]["step"] for m in g.members]
            if found_inf is None:
                torch._foreach_add_(steps, 1)
            else:
                # as fused Adam: a skip counts none (a tensor list: with one 0-d tensor
                # foreach_add_ reads it on the host, a sync a step)
                torch._foreach_add_(steps, [1 - found_inf] * len(steps))
            # in float64 as fused Adam takes them: 1 - 0.999 ** 1 in fp32 is 1.3e-5 off
            step = torch.stack(steps).double()
            beta1, beta2 = g.group["betas"]
            bias_correction1 = (1 - torch.pow(beta1, step)).float()
            bias_correction2_sqrt = torch.sqrt(1 - torch.pow(beta2, step)).float()
            for grad in grads:
                if grad.dtype != torch.bfloat16 or not grad.is_contiguous():
                    raise RuntimeError("bf16_weight_copies: a copy's gradient is not a "
                                       "contiguous bf16 tensor")
            grad_ptrs = [x.data_ptr() for x in grads]
            aligned = g.aligned and all(p % ALIGN == 0 for p in grad_ptrs)
            grad_table = torch.tensor(grad_ptrs, dtype=torch.int64)
            grad_table = grad_table.pin_memory().to(device, non_blocking=True) \
                if device.type == "cuda" else grad_table.to(device)
            tables = g.static_tables
            none = bias_correction1  # any pointer: the flag says it is not read
            decoupled = bool(g.group.get("decoupled_weight_decay",
                                         isinstance(g.optimizer, torch.optim.AdamW)))
            _adam_bf16_copies_kernel[(g.block_tensor.numel(),)](
                g.block_tensor, g.block_start, g.numel, tables[0], grad_table, tables[1],
                tables[2], tables[3], bias_correction1, bias_correction2_sqrt,
                none if found_inf is None else found_inf,
                none if grad_scale is None else grad_scale,
                float(g.group["lr"]), float(beta1), float(beta2), float(g.group["eps"]),
                float(g.group["weight_decay"]),
                HAS_FOUND_INF=found_inf is not None, HAS_GRAD_SCALE=grad_scale is not None,
                DECOUPLED=decoupled, ALIGNED=aligned, BLOCK=BLOCK)

