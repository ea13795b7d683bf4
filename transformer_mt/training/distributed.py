"""Data-parallel training on PyTorch's own engine: process group, ranks, and the few collectives we need.

Started by torchrun (``torchrun --nproc_per_node N -m transformer_mt train ...``), each process
reads its rank from the environment (RANK, WORLD_SIZE, LOCAL_RANK), joins one process group
(NCCL on CUDA, one GPU per process; gloo on CPU) and trains its shard of every epoch's batches
with DistributedDataParallel. Rank 0 is the one process that writes (logs, metrics,
checkpoints) and validates. Without torchrun there is one process and nothing here talks to
anyone: ``SINGLE_PROCESS`` answers every question locally.

Multi-node runs are torchrun's own rendezvous (``--nnodes``, ``--rdzv-endpoint``); nothing here
manages processes.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist

from ..errors import TransformerMTError

# A rank waits this long in a collective (e.g. while rank 0 validates or saves) before failing
# instead of hanging forever.
COLLECTIVE_TIMEOUT = timedelta(minutes=30)


@dataclass(frozen=True)
class DistributedContext:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    backend: str | None = None  # None: a single process, no process group

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """The one process that writes files and validates."""
        return self.rank == 0

    # --- collectives (each a no-op in a single process) ----------------------------------------

    def sum(self, values: list[float], device: torch.device) -> list[float]:
        """Element-wise sum of ``values`` over all ranks (float64, so token counts stay exact)."""
        if not self.enabled:
            return list(values)
        tensor = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor.tolist()

    def broadcast_from_main(self, value):
        """Rank 0's ``value`` (any picklable object), on every rank."""
        if not self.enabled:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather_to_main(self, value) -> list | None:
        """Every rank's ``value`` as a list on rank 0 (None on the others)."""
        if not self.enabled:
            return [value]
        gathered = [None] * self.world_size if self.is_main else None
        dist.gather_object(value, gathered, dst=0)
        return gathered

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def run_on_main(self, function, *args, **kwargs):
        """Run ``function`` on rank 0 only; the others wait. An error there is raised on every rank.

        Without this, a mistake found by rank 0 (a config that does not fit the run directory,
        say) would leave the other ranks waiting in their next collective until the timeout.
        """
        if not self.enabled:
            return function(*args, **kwargs)
        if not self.is_main:
            error = self.broadcast_from_main(None)
            if error is not None:
                raise ReportedByRankZero(error)
            return None
        try:
            result = function(*args, **kwargs)
        except BaseException as exc:
            self.broadcast_from_main(str(exc) if isinstance(exc, TransformerMTError)
                                     else f"rank 0 stopped: {type(exc).__name__}: {exc}")
            raise
        self.broadcast_from_main(None)
        return result

    def data_parallel(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        """``model`` wrapped in DistributedDataParallel for training on this rank (with several ranks)."""
        # No buffer sync in forward: the only buffer, the positional table, is the same everywhere, and
        # a broadcast in every forward would also hang rank 0's validation, which the others skip.
        ddp = torch.nn.parallel.DistributedDataParallel
        no_buffer_sync = ({"forward_sync_buffers": False} if "forward_sync_buffers" in
                          inspect.signature(ddp.__init__).parameters else {"broadcast_buffers": False})
        return ddp(model, **no_buffer_sync, device_ids=[device.index] if device.type == "cuda" else None)


SINGLE_PROCESS = DistributedContext()


class ReportedByRankZero(TransformerMTError):
    """Rank 0's error, raised on the other ranks too so that they stop; rank 0 reports it."""


def is_worker_rank() -> bool:
    """True in a torchrun process other than rank 0 (which speaks for all of them)."""
    return int(os.environ.get("RANK", "0")) > 0


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup(device: str | None = "auto") -> tuple[DistributedContext, str | None]:
    """Join the process group torchrun describes in the environment; return the context and this rank's device.

    Process-wide, so called by the entry point (the CLI's train command), once. Without torchrun
    it returns ``(SINGLE_PROCESS, device)`` and changes nothing.
    """
    if not launched_by_torchrun():
        return SINGLE_PROCESS, device
    try:
        rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
        world_size = int(os.environ["WORLD_SIZE"])
    except (KeyError, ValueError):
        raise TransformerMTError("WORLD_SIZE is set but RANK/LOCAL_RANK are not: start data-parallel training "
                                 "with torchrun, e.g. torchrun --nproc_per_node 2 -m transformer_mt train ...") from None
    wants_cuda = device in (None, "", "auto") and torch.cuda.is_available() or str(device).startswith("cuda")
    if wants_cuda:
        if not torch.cuda.is_available():
            raise TransformerMTError(f"device {device!r} was asked for but CUDA is not available here; use --device cpu")
        if local_rank >= torch.cuda.device_count():
            raise TransformerMTError(
                f"local rank {local_rank} has no GPU: this machine has {torch.cuda.device_count()}; start at most "
                f"that many processes per node (--nproc_per_node)")
        device, backend = f"cuda:{local_rank}", "nccl"
        torch.cuda.set_device(local_rank)
    else:
        device, backend = "cpu", "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, timeout=COLLECTIVE_TIMEOUT)
    return DistributedContext(rank=rank, local_rank=local_rank, world_size=world_size, backend=backend), device


def launch_local_processes(nproc: int, command: list[str]) -> int:
    """Run ``python -m transformer_mt <command>`` in ``nproc`` processes on this machine, as
    ``torchrun --standalone --nproc_per_node nproc -m transformer_mt <command>`` would (the same
    launcher, called in-process), and return the exit status to give.

    What torchrun prints on a failure (a traceback-like summary of every rank's exit code, its
    rendezvous and thread warnings) is kept back: the ranks have already said why (rank 0 speaks
    for all, see ``ReportedByRankZero``), so a config mistake reads as one ``error:`` line.
    """
    import logging

    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    logging.getLogger("torch.distributed").setLevel(logging.CRITICAL)
    # One thread per process unless the user chose (torchrun's own default, without its warning);
    # training.num_threads still applies inside each process.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    args = get_args_parser().parse_args(["--standalone", f"--nproc-per-node={nproc}", "--module", "transformer_mt",
                                         *command])
    try:
        run(args)
    except SignalException:  # Ctrl-C or SIGTERM: the ranks saved what they could and said so
        return 130
    except ChildFailedError as exc:
        rank, failure = exc.get_first_failure()
        if failure.exitcode in (2, 130):  # a reported error or an interruption: rank 0 said which
            return failure.exitcode
        if failure.exitcode < 0:
            raise TransformerMTError(f"training process {rank} (of {nproc}) was killed by signal {-failure.exitcode}; "
                                     f"resume from the last checkpoint with the same command and --resume") from None
        raise TransformerMTError(f"training process {rank} (of {nproc}) ended with exit status {failure.exitcode}; "
                                 f"its messages above say why") from None
    return 0


def teardown(finished: bool = True) -> None:
    """Leave the process group: after every rank has ``finished`` (a barrier), then destroy it.

    Nothing may still hold the group when the interpreter exits: gloo's worker threads, joined by
    the group's destructor during interpreter finalization, abort the process ("terminate called
    without an active exception", SIGABRT) after training had succeeded. So the wrappers that hold
    it (DistributedDataParallel, dropped by ``Trainer.close``) are collected first, and the group is
    destroyed while the interpreter is whole. The barrier keeps a rank from closing its connections
    while rank 0 still saves; after a failure it is skipped (the others may be gone).
    """
    if not dist.is_initialized():
        return
    import gc

    gc.collect()
    if finished:
        dist.barrier()
    dist.destroy_process_group()
    gc.collect()


def shard_batches(batches: list[np.ndarray], rank: int, world_size: int) -> list[np.ndarray]:
    """This rank's share of an epoch's batches; every rank gets the same number.

    Rank r takes batches r, r + N, r + 2N, ... of the list every rank builds alike from (seed,
    epoch). When the count does not divide by N, the list is first padded with its own first
    batches (as torch's DistributedSampler pads), so no rank waits in an all-reduce that
    another never joins: uneven batch counts deadlock data-parallel training.
    """
    if world_size == 1:
        return batches
    per_rank = -(-len(batches) // world_size)
    padded = [batches[i % len(batches)] for i in range(per_rank * world_size)]
    return padded[rank::world_size]
