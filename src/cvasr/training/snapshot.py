"""A training state copied at an epoch's end into one flat byte buffer per device, and back.

Why one buffer: the checkpoint writer process (cvasr.training.writer_process) receives the copy
through torch.multiprocessing, a GPU buffer as one CUDA IPC handle and a host buffer as one
shared-memory file, where a state of 1,000 tensors would otherwise need 1,000 of either; and the
copy is a few `torch.cat` kernels on the training's stream instead of a clone a tensor. Each
tensor's bytes sit at an offset that is a multiple of its element size (the tensors are laid out
by element size, largest first), so the tensors come back as views without a copy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch


@dataclass(frozen=True)
class Slot:
    """Where one tensor of the state lives: buffer, byte offset, dtype and shape."""

    buffer: int
    offset: int
    dtype: torch.dtype
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def map_leaves(obj: Any, kind: type, fn: Callable[[Any], Any]) -> Any:
    """`obj` (nested dicts, lists, tuples) with each leaf of type `kind` replaced by fn(leaf),
    in a fixed order (depth first); dicts come back as plain dicts."""
    if isinstance(obj, kind):
        return fn(obj)
    if isinstance(obj, dict):
        return {k: map_leaves(v, kind, fn) for k, v in obj.items()}
    if isinstance(obj, list):
        return [map_leaves(v, kind, fn) for v in obj]
    if isinstance(obj, tuple):
        return tuple(map_leaves(v, kind, fn) for v in obj)
    return obj


@dataclass
class Snapshot:
    """`skeleton`: the state with each tensor replaced by its Slot; `buffers`: uint8, one a
    device."""

    skeleton: Any
    buffers: list[torch.Tensor]

    @classmethod
    def take(cls, state: Any) -> "Snapshot":
        """A copy of a nested state (dicts, lists, tuples; other values as they are) that
        training can no longer change: a few copy kernels a device, queued on the current
        stream."""
        tensors: list[torch.Tensor] = []
        map_leaves(state, torch.Tensor, lambda t: tensors.append(t.detach()))
        devices: dict[torch.device, list[int]] = {}
        for i, t in enumerate(tensors):
            devices.setdefault(t.device, []).append(i)
        slots: list[Slot | None] = [None] * len(tensors)
        buffers = []
        for b, members in enumerate(devices.values()):
            members.sort(key=lambda i: -tensors[i].element_size())  # offsets stay aligned
            offset, parts = 0, []
            for i in members:
                t = tensors[i]
                slots[i] = Slot(b, offset, t.dtype, tuple(t.shape))
                parts.append(t.reshape(-1).view(torch.uint8))
                offset += t.numel() * t.element_size()
            buffers.append(torch.cat(parts))
        order = iter(slots)
        return cls(map_leaves(state, torch.Tensor, lambda _: next(order)), buffers)

    def tensor(self, slot: Slot) -> torch.Tensor:
        """The slot's tensor: a view of its buffer."""
        return self.buffers[slot.buffer].narrow(0, slot.offset, slot.nbytes) \
            .view(slot.dtype).view(slot.shape)

    def materialise(self) -> Any:
        """The state with tensors of their own on the host: torch.save writes each as a storage
        of its own, as it would the original state (views would share their buffer's)."""

        def own(slot: Slot) -> torch.Tensor:
            view = self.tensor(slot)
            return view.to("cpu", copy=True) if view.device.type != "cpu" else view.clone()

        return map_leaves(self.skeleton, Slot, own)
