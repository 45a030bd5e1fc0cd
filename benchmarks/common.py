"""
What the benchmark scripts share: a header that says which machine the numbers came
from, interleaved timing, the MAC count of a (pruned) WavLM, and the seeded ~70%-sparse
WavLM Base+ structure that the speed-up figures are measured on.

Timing numbers mean little without the machine behind them, so every script prints
`machine_header()` first: the CPU model, the SIMD features numpy dispatches to, the
thread counts, and the load average (other processes competing for the cores make
wall times noisy, so a load above the core count is a warning sign).
"""

import os
import platform
import statistics
import sys
import time
from dataclasses import replace

import numpy as np
import torch

# The library is flat: its modules live in the repository root, one level up.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from wavlm_masked import PRUNE_UNITS, MaskedWavLM, WavLMConfig  # noqa: E402


# ----------------------------------------------------------------------------- machine
def cpu_name() -> str:
    """platform.processor() is empty on most Linux systems; /proc/cpuinfo names the CPU."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def simd_features() -> str:
    """The widest SIMD extensions numpy found on this CPU (what its kernels dispatch to)."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as features
    except ImportError:                                  # numpy < 2 keeps it elsewhere
        try:
            from numpy.core._multiarray_umath import __cpu_features__ as features
        except ImportError:
            return "unknown"
    wanted = ("AVX512F", "AVX512_SKX", "AVX512_ICL", "AVX2", "FMA3", "AVX", "SSE42", "ASIMD", "SVE")
    have = [name for name in wanted if features.get(name)]
    return " ".join(have) or "none of " + " ".join(wanted)


def machine_header(extra: str = "") -> str:
    """Lines that name the machine, to print above every table of timings."""
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    lines = [
        f"machine : {cpu_name()} ({platform.machine()}), os.cpu_count()={os.cpu_count()}",
        f"software: python {platform.python_version()}, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), numpy {np.__version__}",
        f"numpy SIMD: {simd_features()}",
        f"load    : {load} (1/5/15-min load average at start; "
        f"above {os.cpu_count()} = noisy timings)",
    ]
    if extra:
        lines.append(extra)
    bar = "=" * 78
    return "\n".join([bar, *lines, bar])


# ------------------------------------------------------------------------------ timing
def time_interleaved(fns: dict, warmup: int, reps: int):
    """Wall and CPU seconds of each callable, `reps` times. Round r runs them in an order
    rotated by r (A B C, B C A, C A B, ...) so no model always runs right after the same
    neighbour (caches, allocator state) and slow phases of background load are shared out.
    CPU time (time.process_time, summed over our threads) is a cross-check: other
    processes steal wall time from us but add little to our CPU time."""
    names = list(fns)
    for _ in range(warmup):        # first calls allocate buffers and pick kernels
        for name in names:
            fns[name]()
    wall, cpu = {name: [] for name in names}, {name: [] for name in names}
    for r in range(reps):
        for name in names[r % len(names):] + names[: r % len(names)]:
            t0, c0 = time.perf_counter(), time.process_time()
            fns[name]()
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    return wall, cpu


def spread(ts):
    """(min, max) over the repetitions: how noisy the machine was."""
    return f"[{min(ts):.3f} .. {max(ts):.3f}]"


def print_times(wall, cpu, base):
    """One row per model: median wall s, ratio to `base`, median CPU s, its ratio, spread."""
    med = {n: statistics.median(ts) for n, ts in wall.items()}
    cmed = {n: statistics.median(ts) for n, ts in cpu.items()}
    print(f"    {'model':<22}{'wall s':>8}{'ratio':>8}{'cpu s':>9}{'ratio':>8}   wall min .. max")
    for n in wall:
        print(f"    {n:<22}{med[n]:>8.3f}{med[n] / med[base]:>7.3f}x{cmed[n]:>9.3f}"
              f"{cmed[n] / cmed[base]:>7.3f}x   {spread(wall[n])}")
    return med, cmed


# --------------------------------------------------------------------------------- MACs
def macs(config: WavLMConfig, num_samples: int) -> int:
    """Multiply-accumulates of one forward pass on `num_samples` samples, batch 1.

    Counts the matrix work only: the CNN, the feature projection, the positional conv,
    the q/k/v/out projections, the two T^2 attention products (scores Q K^T and
    context A V), the relative-position gate's small Linear, and the FFN. Elementwise
    ops, norms, softmax and GELU are left out: they are O(T * width), not O(T * width^2).
    Everything is read from the config's kept structure, so the same function measures
    a dense and a pruned model.
    """
    total, length, in_ch = 0, num_samples, 1
    for out_ch, kernel, stride in config.conv_layers:
        length = (length - kernel) // stride + 1
        total += length * out_ch * in_ch * kernel
        in_ch = out_ch
    T, E, d = length, config.hidden_size, config.head_dim
    total += T * in_ch * E                                                   # feature projection
    total += T * E * (E // config.pos_conv_groups) * config.pos_conv_kernel   # positional conv
    for i in range(config.num_layers):
        if config.attention_blocks[i]:
            # width of the kept heads
            hd = len(config.heads[i]) * d
            # q, k, v, out projections
            total += 3 * T * E * hd + T * hd * E
            total += 2 * T * T * hd                                          # scores + context
            if config.relative_position:
                # gated bias: Linear(d, 8) per head
                total += T * hd * 8
        if config.ffn_blocks[i]:
            total += 2 * T * E * config.ffn_dims[i]                          # two FFN Linears
    return total


# ------------------------------------------------------------ the benchmark structure
def set_gates(model: MaskedWavLM, seed: int, keep_scale: float = 1.0):
    """Set every gate's log_alpha so that the eval mask keeps a chosen set of units.

    Kept units get log_alpha in [6, 10] (P(z != 0) > 0.9995, so round(L0) counts them
    exactly, and soft values sigmoid(1.2 log_alpha) ~ 1); removed ones get [-20, -15]
    (P(z != 0) < 2e-6). The kept fractions are drawn per layer from a seeded generator,
    so every run prunes the same structure. `keep_scale` shrinks or grows them all.
    """
    g = torch.Generator().manual_seed(seed)
    uniform = lambda lo, hi: lo + (hi - lo) * torch.rand((), generator=g).item()

    def assign(gate, k):
        k = max(0, min(gate.n, k))
        la = -15.0 - 5.0 * torch.rand(gate.n, generator=g)
        keep = torch.randperm(gate.n, generator=g)[:k]
        la[keep] = 6.0 + 4.0 * torch.rand(k, generator=g)
        with torch.no_grad():
            gate.log_alpha.copy_(la)

    L = model.config.num_layers
    # A few whole blocks go (the paper finds whole upper-layer blocks removed): two
    # attention blocks and two FFN blocks, chosen among the layers from 4 up.
    upper = torch.randperm(L - 4, generator=g) + 4
    no_att, no_ffn = set(upper[:2].tolist()), set(upper[2:4].tolist())
    for block in model.feature_extractor.conv_layers:
        n = block.channel_gate.n
        assign(block.channel_gate, round(n * min(1.0, keep_scale * uniform(0.55, 0.85))))
    for i, layer in enumerate(model.encoder.layers):
        att, ffn = layer.attention, layer.feed_forward
        assign(layer.attention_gate, 0 if i in no_att else 1)
        assign(layer.ffn_gate, 0 if i in no_ffn else 1)
        assign(att.head_gate,
               max(1, round(att.num_heads * min(1.0, keep_scale * uniform(0.35, 0.75)))))
        n = ffn.unit_gate.n
        assign(ffn.unit_gate, max(1, round(n * min(1.0, keep_scale * uniform(0.10, 0.40)))))


def pruned_pair(config: WavLMConfig, sparsity: float = 0.70, seed: int = 0):
    """(dense, masked, pruned) models of one architecture with the same random weights:
    `masked` carries all five gate kinds, set by `set_gates` so that its eval masks
    remove `sparsity` of the parameters (bisection on the keep scale), and `pruned` is
    `masked.prune()`. Eval-mode expected_num_params() is exactly the pruned size, so
    the bisection needs no prune() per step. Whole blocks are removed only in models of
    more than 4 layers (see set_gates)."""
    torch.manual_seed(seed)
    masked = MaskedWavLM(replace(config, prune_units=list(PRUNE_UNITS))).eval()
    dense = MaskedWavLM(replace(config, prune_units=[])).eval()
    # The dense model has the same weights, minus the gate logits.
    dense.load_state_dict({k: v for k, v in masked.state_dict().items()
                           if not k.endswith("log_alpha")})
    lo, hi = 0.2, 3.0
    for _ in range(30):
        mid = (lo + hi) / 2
        set_gates(masked, seed, mid)
        ratio = masked.expected_num_params().item() / dense.num_params()
        lo, hi = (mid, hi) if ratio < 1 - sparsity else (lo, mid)
    set_gates(masked, seed, (lo + hi) / 2)
    pruned = masked.prune().eval()
    assert pruned.num_params() == int(masked.expected_num_params().item()), \
        "expected size != pruned size"
    return dense, masked, pruned
