"""
The process and where it computes: the device, bf16 autocast, compute threads, the process
group of a multi-GPU run (torchrun + DDP), the signals that ask the process to stop, and
timing a model on a device.

Everything here is about the machine, nothing about the method, so the training loop in
train.py reads as the method alone. Two pitfalls it handles:
- more compute threads than free cores make OpenMP threads spin while they wait on each
  other (several jobs with one thread per core each can run 10x slower);
- in a multi-process run every process must stop, or save, at the same step, or the
  others wait forever in the next all-reduce.
"""

import os
import signal
import time

import torch
import torch.distributed as dist


def resolve_device(choice: str) -> torch.device:
    """"auto" | "cpu" | "cuda" -> torch.device; asking for CUDA without one is an error."""
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(choice)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda but no CUDA device is visible; use --device cpu")
    return device


def effective_amp(amp: str, device: torch.device) -> str:
    """bf16 autocast runs on CUDA only: on a CPU it is slower, not faster, so "bf16"
    falls back to "none" there."""
    return amp if device.type == "cuda" else "none"


def autocast(device: torch.device, amp: str):
    """bf16 autocast on CUDA when amp == "bf16", else a no-op context."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=(amp == "bf16"))


def setup_threads(threads, is_main):
    """Set the compute threads, and say when the machine is already busy."""
    if threads:
        torch.set_num_threads(threads)
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    if is_main and load > cores and torch.get_num_threads() > 1:
        print(f"note: the machine is busy (load average {load:.1f} on {cores} cores) and this run "
              f"uses {torch.get_num_threads()} threads; "
              f"if other jobs compute too, pass --threads 1")


def setup_distributed(device_choice):
    """-> (device, rank, world). torchrun sets WORLD_SIZE/RANK/LOCAL_RANK; NCCL on GPUs,
    gloo on CPU. A device that is not there is a ValueError (a user error)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = resolve_device(device_choice)
    if world > 1:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
            torch.cuda.set_device(device)
    rank = dist.get_rank() if world > 1 else 0
    return device, rank, world


def setup_process(device_choice, threads, amp):
    """A training process's start: -> (device, rank, world, the amp it can run). Sets the
    compute threads; says so when bf16 falls back to fp32 on a CPU."""
    device, rank, world = setup_distributed(device_choice)
    setup_threads(threads, rank == 0)
    runnable = effective_amp(amp, device)
    if runnable != amp and rank == 0:
        print("note: --amp bf16 needs a CUDA device; training in fp32 on the CPU")
    return device, rank, world, runnable


GPU_LOADER_WORKERS = 6    # benchmarks/bench_loader.py: a WavLM Base+ step at batch 128 eats
                          # ~3,100 augmented 3-s crops/s; one worker makes 870-1,300 with the
                          # reverb on the GPU: 3-4, and half as many again for disk reads
                          # and a step faster than estimated (docs/performance.md)


def default_workers(device: torch.device, world: int) -> int:
    """Data-loading processes per training process when --num-workers is not given: enough
    to feed a GPU, never more than the cores this process's share leaves free; one on a
    CPU, where the training itself needs the cores."""
    if device.type != "cuda":
        return 1
    return max(1, min(GPU_LOADER_WORKERS, (os.cpu_count() or 2) // world - 1))


def barrier(world):
    if world > 1:
        dist.barrier()


def agree(stop, save, world, device):
    """Every process must stop (or save) at the same step, or the others would wait for
    it forever in the next all-reduce: take the OR over processes."""
    if world == 1:
        return stop, save
    flags = torch.tensor([float(stop), float(save)], device=device)
    dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    return bool(flags[0]), bool(flags[1])


# ------------------------------------------------------------- signals to the process
class StopRequest:
    """SIGINT (Ctrl-C) and SIGTERM as a flag that the training loop reads after each
    step, so the step in flight completes and a checkpoint is written.

    Before `defer()` (data preparation, model loading) there is nothing to save, and a
    signal raises KeyboardInterrupt at once. A second signal also does, for a user who
    does not want to wait for the step to end.
    """
    EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}    # 128 + signal number

    def __init__(self):
        self.signum, self.deferred = None, False
        self.previous = {signum: signal.signal(signum, self._handle) for signum in self.EXIT_CODES}

    def restore(self):
        """Put back the handlers that were there before (train.main may run in-process)."""
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum, frame):
        first = self.signum is None
        self.signum = signum
        if not (self.deferred and first):
            raise KeyboardInterrupt

    def defer(self):
        self.deferred = True

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum or signal.SIGINT).name

    def exit_code(self) -> int:
        return self.EXIT_CODES.get(self.signum, 130)


@torch.inference_mode()
def inference_seconds(models, device, seconds=4.0, repeats=7, sample_rate=16000):
    """Wall time of one forward pass on `seconds` of audio (batch 1), for each model.
    The models run interleaved (A, B, A, B, ...) and the minimum is kept, so a busy
    machine slows both alike and the ratio stays meaningful."""
    x = torch.randn(1, int(seconds * sample_rate), device=device)
    times = [[] for _ in models]
    for m in models:
        m.eval()(x)                                           # warm-up
    for _ in range(repeats):
        for m, t in zip(models, times):
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            m(x)
            if device.type == "cuda":
                torch.cuda.synchronize()
            t.append(time.perf_counter() - t0)
    return [min(t) for t in times]
