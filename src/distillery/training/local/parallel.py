"""Data parallelism of the local trainer: one process per device (``devices`` > 1).

``LocalBackend.start_worker`` launches the worker with torch's elastic launcher
(``python -m torch.distributed.run --standalone --nproc_per_node N -m
distillery.training.local.worker DIR``), which sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` in
each process. :class:`DataParallel` is what a process knows of its place:

- the process group is NCCL on CUDA (rank ``r`` on ``cuda:<LOCAL_RANK>``), gloo on CPU;
- every rank loads the same student with the same seed, so the weights start equal;
- a step's examples (the job's ``batch_size`` of them, in the epoch's seeded order) are dealt out
  round-robin (:meth:`DataParallel.shard`), so the effective batch stays ``batch_size``;
- the loss is divided by the number of target tokens of the whole step (summed over ranks), and
  the gradients are summed over ranks after the backward passes (:meth:`reduce_gradients`): the
  gradient is then the one a single process gets from the whole batch, and clipping and the
  optimizer step stay identical on every rank, so the weights stay equal without broadcasts.

The gradients are reduced once per step rather than by ``DistributedDataParallel``'s hooks during
backward: packing gives ranks different numbers of forward passes per step (one per
``max_tokens_per_pass`` tokens of their share), which DDP's per-backward reduction cannot follow.
Only rank 0 writes events, checkpoints, the adapter and ``result.json``; a stop is agreed on at
step boundaries (:meth:`any`), so every rank stops at the same step.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    import torch

T = TypeVar("T")

BUCKET_ELEMENTS = 16 * 1024 * 1024  # gradients are summed in flat fp32 buckets of this size


@dataclass
class DataParallel:
    """This process's rank among ``world_size`` data-parallel training processes."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "cpu"

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> DataParallel:
        """From the launcher's ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` (one process without them)."""
        values = os.environ if env is None else env
        world_size = int(values.get("WORLD_SIZE", "1"))
        if world_size <= 1:
            return cls()
        return cls(
            rank=int(values.get("RANK", "0")),
            world_size=world_size,
            local_rank=int(values.get("LOCAL_RANK", values.get("RANK", "0"))),
        )

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device_for(self, device: str) -> str:
        """``cuda`` becomes this rank's own ``cuda:<local_rank>``; other devices are shared."""
        if self.enabled and device == "cuda":
            return f"cuda:{self.local_rank}"
        return device

    def init(self, device: str) -> None:
        """Join the process group: NCCL on CUDA, gloo on CPU."""
        import torch
        import torch.distributed as dist

        self.device = device
        if not self.enabled or dist.is_initialized():
            return
        if device.startswith("cuda"):
            if torch.cuda.device_count() < self.world_size:
                raise RuntimeError(
                    f"devices={self.world_size} asks for one GPU per process but "
                    f"{torch.cuda.device_count()} are visible"
                )
            torch.cuda.set_device(device)
            dist.init_process_group("nccl", device_id=torch.device(device))
        else:
            dist.init_process_group("gloo")

    def close(self) -> None:
        import torch.distributed as dist

        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()

    def shard(self, items: Sequence[T]) -> list[T]:
        """This rank's share of ``items`` (round-robin, so shares differ by at most one)."""
        if not self.enabled:
            return list(items)
        return list(items[self.rank :: self.world_size])

    def _sum(self, values: list[float]) -> list[float]:
        import torch
        import torch.distributed as dist

        tensor = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor)
        return [float(v) for v in tensor.tolist()]

    def sum(self, values: Sequence[float]) -> list[float]:
        """``values`` summed element-wise over all ranks (unchanged in one process)."""
        if not self.enabled:
            return list(values)
        return self._sum(list(values))

    def any(self, flag: bool) -> bool:
        """Whether any rank has ``flag`` set (so that all ranks act on it together)."""
        if not self.enabled:
            return flag
        return self._sum([1.0 if flag else 0.0])[0] > 0

    def reduce_gradients(self, params: Sequence[torch.nn.Parameter]) -> None:
        """Sum every parameter's gradient over the ranks (a missing gradient counts as zero)."""
        import torch
        import torch.distributed as dist

        if not self.enabled:
            return
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        start = 0
        while start < len(params):
            bucket = [params[start]]
            size = params[start].numel()
            start += 1
            while start < len(params) and size + params[start].numel() <= BUCKET_ELEMENTS:
                bucket.append(params[start])
                size += params[start].numel()
                start += 1
            grads = [p.grad for p in bucket if p.grad is not None]
            flat = torch.cat([g.reshape(-1).float() for g in grads])
            dist.all_reduce(flat)
            offset = 0
            for g in grads:
                n = g.numel()
                g.copy_(flat[offset : offset + n].view_as(g))
                offset += n
