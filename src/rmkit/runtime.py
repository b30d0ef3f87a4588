"""Where a command runs: its process group, device, dtype and threads, decided in one place for all.

Under ``torchrun`` (``WORLD_SIZE`` > 1) every command joins the process group (NCCL on CUDA, gloo on CPU);
alone it runs as rank 0 of 1. The device rule, the same for train, score, eval and serve: ``"auto"`` (or
``None``) takes the local GPU of this process (``cuda:LOCAL_RANK``) when CUDA is available, else the CPU;
``"cuda"`` without CUDA is an error. Threads: ``threads`` when given; otherwise the CPU's cores are shared
among the processes of a machine, unless ``OMP_NUM_THREADS`` already says how many (torchrun sets it).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from rmkit.defaults import DTYPE_NAMES
from rmkit.errors import RMKitError

DTYPES = dict(zip(DTYPE_NAMES, (torch.float32, torch.bfloat16, torch.float16), strict=True))


def resolve_dtype(dtype: str | torch.dtype, device: torch.device | None = None) -> torch.dtype:
    """``"fp32"``, ``"bf16"``, ``"fp16"`` (or a torch dtype) as a torch dtype; ``"auto"``: bf16 on a GPU
    that computes in it (the weights of inference, whose score head stays fp32), fp32 elsewhere."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        on_gpu = device is not None and device.type == "cuda" and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if on_gpu else torch.float32
    if dtype not in DTYPES:
        raise RMKitError(f"unknown dtype '{dtype}': expected auto or one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


def keep_fp32(module: torch.nn.Module) -> torch.nn.Module:
    """``module`` (a score head) in fp32 whatever its model's dtype: its weights cast, and its input cast to
    them by a forward pre-hook. A bf16 head would round every score to 3 significant digits; a head is one
    small matrix, so fp32 costs nothing."""
    if not getattr(module, "_rmkit_fp32", False):
        module.register_forward_pre_hook(lambda m, args: (args[0].to(torch.float32), *args[1:]))
        module._rmkit_fp32 = True
    return module.float()


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``t`` on ``device``; to a GPU from pinned memory and without waiting, so the copy overlaps the work
    the GPU has queued."""
    if device.type != "cuda":
        return t.to(device)
    return (t if t.is_pinned() else t.pin_memory()).to(device, non_blocking=True)


def free_memory(device: torch.device) -> int:
    """Bytes a GPU has free, counting what torch's caching allocator holds unused."""
    free = torch.cuda.mem_get_info(device)[0]
    return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)


M_ARENA_MAX = -8  # glibc's mallopt parameter: the most malloc arenas
M_MMAP_THRESHOLD = -3  # and the size from which an allocation is its own mapping, returned when freed
# The server's threshold: a batch's activations (tens of MB) are mapped and unmapped, the many smaller
# buffers stay in the heap. Measured with benchmarks/soak_serve.py (4 minutes, MiniLM, 64 clients): RSS
# median 584, 661, 620, 633 MB a minute at 49.1 req/s, against 619, 735, 859, 882 MB (and rising) at 48.6
# req/s with glibc's own sliding threshold; 1 MB gave 496-536 MB but cost 10% of the throughput.
MAPPED_FROM = 8 << 20


@functools.cache
def _glibc() -> Any:
    """glibc's C library (which has ``malloc_trim`` and ``mallopt``), or ``None`` under another libc."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None


def bound_arenas(arenas: int = 2, mapped_from: int | None = None) -> bool:
    """Cap glibc's malloc arenas at ``arenas`` (``MALLOC_ARENA_MAX``, set from inside): the threads of a
    server share a few heaps instead of each fragmenting one of its own. With ``mapped_from`` (bytes), every
    allocation that large is its own mapping, given back the moment it is freed (glibc otherwise raises
    that threshold as large blocks come and go, and a batch's activations then stay in the heap). For the
    start of a long-running process, before its threads allocate; returns whether it applied (``False``
    without glibc)."""
    libc = _glibc()
    if libc is None:
        return False
    if mapped_from is not None and not libc.mallopt(M_MMAP_THRESHOLD, mapped_from):
        return False
    return bool(libc.mallopt(M_ARENA_MAX, arenas))


def release_memory(device: torch.device) -> None:
    """Give back the memory that the last batches freed: the C heap's free pages (glibc's ``malloc_trim(0)``;
    nothing elsewhere) and, on a GPU, the caching allocator's unused blocks. Batches of ever-changing
    shapes leave the heap fragmented, and freed memory is otherwise kept for good. It costs milliseconds:
    for idle moments and between chunks, never per batch."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
    if device.type == "cuda":
        torch.cuda.empty_cache()


def reads_ahead(device: torch.device, asked: bool | None = None) -> bool:
    """Whether host work (reading, tokenising) runs ahead in a thread: as ``asked``, else on a GPU, whose
    host is otherwise idle (on the CPU the thread would take cores from torch)."""
    return device.type == "cuda" if asked is None else asked


def dtype_name(model: torch.nn.Module) -> str:
    """The name (``DTYPES``) of the dtype most of ``model``'s weights are in."""
    counts: dict[torch.dtype, int] = {}
    for p in model.parameters():
        counts[p.dtype] = counts.get(p.dtype, 0) + p.numel()
    dtype = max(counts, key=counts.__getitem__) if counts else torch.float32
    return next((name for name, d in DTYPES.items() if d == dtype), str(dtype))


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """The device rule of the module docstring."""
    if isinstance(name, torch.device):
        return name
    if name in (None, "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RMKitError(f"--device {name}, but no CUDA device is available")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


@dataclass(frozen=True)
class Runtime:
    """This process's place in a (possibly one-process) run, and its device."""

    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def all_sum(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` summed over all processes (on the CPU)."""
        if self.world > 1:
            t = t.to(self.device)
            dist.all_reduce(t)
        return t.cpu()

    def all_max(self, value: int) -> int:
        """The largest ``value`` of all processes."""
        if self.world == 1:
            return value
        t = torch.tensor([value], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return int(t.item())

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value``, on every process."""
        if self.world == 1:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]


@contextmanager
def start(device: str | torch.device | None = "auto", threads: int | None = None) -> Iterator[Runtime]:
    """Set up this process for a command (see the module docstring) and tear down what it started."""
    target = resolve_device(device)
    if target.type == "cuda":
        torch.cuda.set_device(target)
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if threads:
        torch.set_num_threads(threads)
    elif local_world > 1 and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    started = False
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if target.type == "cuda" else "gloo")
        started = True
    rank = dist.get_rank() if world > 1 else 0
    try:
        yield Runtime(rank, dist.get_world_size() if world > 1 else 1, target)
    finally:
        if started:
            dist.destroy_process_group()
