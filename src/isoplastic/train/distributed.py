"""Data-parallel training over several processes (``torchrun``): context, broadcast, checksums.

Imported on demand by :mod:`isoplastic.train.trainer`; :mod:`torch.distributed` itself is only
imported when ``WORLD_SIZE > 1`` (see :func:`init_distributed`). See ``docs/distributed.md``.

Design (one rule: rank 0 is the authority for everything that is not a gradient step):

* Every rank holds the whole data set and draws the same per-epoch global permutation. Global
  batch ``i`` is ``order[i*B:(i+1)*B]`` with ``B = --batch-size`` (the *global* batch size, as in
  a single-process run); rank ``r`` takes chunk ``r`` of ``torch.tensor_split(batch, world)``.
  Each rank's loss is ``sum(ce over its chunk) * world / len(batch) + psi_penalty``, so the
  gradients that DistributedDataParallel averages are exactly those of the single-process mean
  over the global batch (up to round-off).
* Structural changes (the topology policy and its probe / rollback guard) run on rank 0 alone;
  rank 0 then broadcasts the adapted arms (architecture with the new widths, parameters,
  buffers and optimizer state, as a pickle-free safetensors + JSON payload) and its change log;
  the other ranks rebuild their network and optimizer from it, and every rank wraps the network
  in a new DDP (buckets are tied to parameter shapes). A decision can therefore never differ
  between ranks, whatever the SVD or the probe does on another host.
* After every adaptation step every rank hashes (sha256) all parameters, buffers and optimizer
  state of every arm plus the widths, and the digests are all-gathered: any difference raises
  :class:`DistributedDivergenceError` naming the ranks.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass, field
from datetime import timedelta

import torch

from ..core import optim_state as ostate
from ..errors import IsoplasticError

BACKEND_ENV = "ISOPLASTIC_DIST_BACKEND"
TIMEOUT_ENV = "ISOPLASTIC_DIST_TIMEOUT"


class DistributedError(IsoplasticError, RuntimeError):
    """A distributed run cannot go on (e.g. rank 0 failed while the others waited for it)."""


class DistributedDivergenceError(DistributedError):
    """Ranks that must hold bit-identical state do not."""


def world_size_from_env() -> int:
    """``WORLD_SIZE`` set by ``torchrun`` (1 when unset)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


@dataclass
class DistContext:
    """Where this process stands in a (possibly single-process) run.

    Attributes:
        rank, world_size, local_rank: from ``torchrun``'s environment.
        backend: ``"gloo"`` or ``"nccl"``; ``None`` in a single-process run.
        device: the device this rank trains on (``cpu``, or ``cuda:LOCAL_RANK`` with nccl).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # -- collectives -------------------------------------------------------------------------
    def _dist(self):
        import torch.distributed as dist

        return dist

    def barrier(self) -> None:
        if self.enabled:
            self._dist().barrier()

    def all_reduce_sum(self, values: list[float]) -> list[float]:
        """Sum of ``values`` over all ranks (float64)."""
        if not self.enabled:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        self._dist().all_reduce(t)
        return t.cpu().tolist()

    def broadcast_bytes(self, data: bytes | None, src: int = 0) -> bytes:
        """``data`` of rank ``src`` on every rank (a uint8 tensor broadcast, no pickle)."""
        if not self.enabled:
            assert data is not None
            return data
        dist = self._dist()
        n = torch.tensor([len(data) if self.rank == src and data is not None else 0],
                         dtype=torch.int64, device=self.device)
        dist.broadcast(n, src)
        size = int(n.item())
        if self.rank == src:
            assert data is not None
            buf = torch.frombuffer(bytearray(data), dtype=torch.uint8) if size else \
                torch.empty(0, dtype=torch.uint8)
            buf = buf.to(self.device)
        else:
            buf = torch.empty(size, dtype=torch.uint8, device=self.device)
        if size:
            dist.broadcast(buf, src)
        return bytes(buf.cpu().numpy().tobytes())

    def broadcast_json(self, obj: object | None, src: int = 0) -> object:
        data = json.dumps(obj).encode() if self.rank == src else None
        return json.loads(self.broadcast_bytes(data, src).decode())

    def all_gather_int64(self, values: list[int]) -> list[list[int]]:
        """Every rank's ``values`` (same length on every rank)."""
        if not self.enabled:
            return [list(values)]
        t = torch.tensor(values, dtype=torch.int64, device=self.device)
        out = [torch.empty_like(t) for _ in range(self.world_size)]
        self._dist().all_gather(out, t)
        return [o.cpu().tolist() for o in out]

    def verify_identical(self, digest: bytes, widths: list[int], what: str) -> None:
        """Raise :class:`DistributedDivergenceError` unless every rank has this digest + widths."""
        if not self.enabled:
            return
        words = [int.from_bytes(digest[i:i + 8], "little", signed=True) for i in range(0, 32, 8)]
        gathered = self.all_gather_int64([len(widths), *widths, *words])
        if any(g != gathered[0] for g in gathered):
            detail = "; ".join(
                f"rank {r}: widths {g[1:1 + g[0]]}, digest "
                f"{b''.join(w.to_bytes(8, 'little', signed=True) for w in g[1 + g[0]:]).hex()[:16]}"
                for r, g in enumerate(gathered))
            raise DistributedDivergenceError(
                f"{what}: the ranks' parameters / optimizer states are not bit-identical "
                f"({detail}); the run cannot continue consistently - resume it from the last "
                "checkpoint")

    def wrap(self, net: torch.nn.Module) -> torch.nn.Module:
        """``net`` in a fresh DistributedDataParallel (``net`` itself when single-process)."""
        if not self.enabled:
            return net
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        with warnings.catch_warnings():
            # buffers (a constant intrinsic length) only change in structural changes, which
            # are broadcast and verified: no per-step buffer broadcast is needed
            warnings.filterwarnings("ignore", message=".*broadcast_buffers.*", category=FutureWarning)
            return DistributedDataParallel(net, device_ids=ids, broadcast_buffers=False)


def init_distributed(backend: str | None = None) -> DistContext:
    """Join the process group described by ``torchrun``'s environment (``env://``).

    Single-process (``WORLD_SIZE`` unset or 1): returns a plain context and touches nothing.
    Backend: ``backend``, else ``$ISOPLASTIC_DIST_BACKEND``, else ``nccl`` when CUDA is
    available and ``gloo`` otherwise. With nccl each process uses ``cuda:LOCAL_RANK``.
    ``$ISOPLASTIC_DIST_TIMEOUT`` (seconds, default 1800) bounds every collective.
    """
    world = world_size_from_env()
    if world <= 1:
        return DistContext()
    import torch.distributed as dist

    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    backend = backend or os.environ.get(BACKEND_ENV) or (
        "nccl" if torch.cuda.is_available() else "gloo")
    if backend not in ("gloo", "nccl"):
        raise DistributedError(f"distributed backend {backend!r}: choose gloo or nccl")
    device = torch.device("cpu")
    if backend == "nccl":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        timeout = timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, "1800")))
        dist.init_process_group(backend, timeout=timeout)
    if dist.get_world_size() != world or dist.get_rank() != rank:  # pragma: no cover
        raise DistributedError(f"process group (rank {dist.get_rank()} of "
                               f"{dist.get_world_size()}) disagrees with RANK={rank}, "
                               f"WORLD_SIZE={world}")
    return DistContext(rank=rank, world_size=world, local_rank=local_rank, backend=backend,
                       device=device)


def shutdown(ctx: DistContext) -> None:
    """Leave the process group (no-op single-process)."""
    if ctx.enabled:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def state_digest(nets: dict, optimizers: dict) -> bytes:
    """sha256 over every arm's state dict (names, dtypes, shapes, bytes) and its optimizer
    (:func:`~isoplastic.core.optim_state.state_digest`: hyper-parameters and every state entry)."""
    h = hashlib.sha256()
    for arm in sorted(nets):
        for name, t in nets[arm].state_dict().items():
            flat = t.detach().cpu().contiguous().reshape(-1)
            h.update(f"{arm}.model.{name}|{flat.dtype}|{tuple(t.shape)}|".encode())
            h.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
        h.update(f"{arm}.optim|".encode() + ostate.state_digest(optimizers[arm]))
    return h.digest()


__all__ = ["DistContext", "DistributedDivergenceError", "DistributedError", "init_distributed",
           "shutdown", "state_digest", "world_size_from_env"]
