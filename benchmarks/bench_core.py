"""
Benchmark of the core library (issue 2): what do the gates cost while training, and
what does pruning buy at inference? Prints one table; it is not a test.

    python benchmarks/bench_core.py            # full run, a few minutes on a 2-core CPU
    python benchmarks/bench_core.py --quick    # fewer repetitions, shorter training input
    python benchmarks/bench_core.py --profile  # also print the top ops of each training step

1. Gate overhead (training). One forward + backward pass of
     A. torchaudio's WavLM (`torchaudio.models.wavlm_model`), train mode, dropout 0;
     B. our MaskedWavLM with NO gates, same weights (loaded from A's state dict);
     C. our MaskedWavLM with all five gate kinds on (conv channels, heads, attention
        blocks, FFN units, FFN blocks), train mode, so every gate draws a fresh sample.
   Same WavLM Base+ architecture, same input (batch 1, a few seconds of audio), same
   loss (mean square of the last layer's output). Read:
     B / A = the cost of our own implementation (no gates) relative to the reference;
     C / A = what a user pays for in-situ pruning relative to plain fine-tuning
             (the issue's goal: <= 1.10x);
     C / B = the gates alone.
   The three are timed interleaved (A B C, B C A, C A B, ...) so that background load on
   the machine hits all of them alike; we report medians, which ignore the odd slow run.

2. Pruned speed-up (inference). A WavLM Base+-shaped model with random weights whose
   gate logits are SET (seeded) so that the eval masks remove ~70% of the parameters:
   heads, FFN units and CNN channels in every layer, plus a few whole attention and FFN
   blocks. We time the dense model (no gates) against `model.eval().prune()` on a 10-s
   input (160000 samples), batch 1, under torch.inference_mode(). Read:
     params ratio = pruned / dense parameters (~0.30 means 70% sparsity);
     MAC speed-up = MACs(dense) / MACs(pruned), counted from the two configs by `macs()`,
                    i.e. the speed-up a perfectly efficient kernel library would give;
     wall speed-up = time(dense) / time(pruned), measured;
     efficiency   = wall / MAC speed-up (the issue's goal: >= 0.8).
   Efficiency < 1 is expected: pruning leaves the fixed costs (elementwise ops,
   LayerNorms, the positional conv, the T x T attention bias) and the smaller matrices
   run at a lower fraction of peak. A sanity line checks that the masked model in eval
   mode and the pruned model give the same outputs.

Columns: "wall s" is the median wall-clock time (what the goals are stated in); "cpu s"
is the median CPU time of this process over all its threads (time.process_time). On a
quiet machine cpu ~ threads x wall. When other processes compete for the cores (see the
load average printed at the top), wall times and their ratios get noisy, while CPU-time
ratios stay closer to the truth, most of all with --threads 1. Record README numbers
from a quiet machine, and name it.
"""

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time

import torch
import torchaudio

# The library is flat: its modules live in the repository root, one level up.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from pretrained import load_pretrained  # noqa: E402
from wavlm_masked import PRUNE_UNITS, MaskedWavLM, WavLMConfig  # noqa: E402
# The same torchaudio reference (every dropout at 0) that the oracle tests build.
from tests.test_wavlm_oracles import torchaudio_model as torchaudio_wavlm  # noqa: E402

SAMPLE_RATE = 16000

# ------------------------------------------------------------------------------- args
parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("--quick", action="store_true", help="fewer repetitions and a 2-s training input")
parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch.set_num_threads (default: all cores)")
parser.add_argument("--train-seconds", type=float, default=None, help="training input length (default 4, quick 2)")
parser.add_argument("--reps", type=int, default=None, help="timed training steps per model (default 10, quick 3)")
parser.add_argument("--infer-reps", type=int, default=None, help="timed 10-s inferences per model (default 5, quick 2)")
parser.add_argument("--target-sparsity", type=float, default=0.70, help="fraction of parameters to remove")
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--profile", action="store_true", help="print torch.profiler's top ops per training step")
args = parser.parse_args()
train_seconds = args.train_seconds or (2.0 if args.quick else 4.0)
train_reps = args.reps or (3 if args.quick else 10)
train_warmup = 1 if args.quick else 2
infer_reps = args.infer_reps or (2 if args.quick else 5)
infer_warmup = 1


# --------------------------------------------------------------------------- helpers
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
            hd = len(config.heads[i]) * d                                    # width of the kept heads
            total += 3 * T * E * hd + T * hd * E                             # q, k, v, out projections
            total += 2 * T * T * hd                                          # scores + context
            if config.relative_position:
                total += T * hd * 8                                          # gated bias: Linear(d, 8) per head
        if config.ffn_blocks[i]:
            total += 2 * T * E * config.ffn_dims[i]                          # two FFN Linears
    return total


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


def print_times(wall, cpu, base):
    """One row per model: median wall s, ratio to `base`, median CPU s, its ratio, spread."""
    med = {n: statistics.median(ts) for n, ts in wall.items()}
    cmed = {n: statistics.median(ts) for n, ts in cpu.items()}
    print(f"    {'model':<22}{'wall s':>8}{'ratio':>8}{'cpu s':>9}{'ratio':>8}   wall min .. max")
    for n in wall:
        print(f"    {n:<22}{med[n]:>8.3f}{med[n] / med[base]:>7.3f}x{cmed[n]:>9.3f}{cmed[n] / cmed[base]:>7.3f}x"
              f"   {spread(wall[n])}")
    return med, cmed


def spread(ts):
    """(min, max) over the repetitions: how noisy the machine was."""
    return f"[{min(ts):.3f} .. {max(ts):.3f}]"


def train_step(model, x, last_output):
    """One forward + backward. Grads go to None first, for every model alike, so each
    step allocates fresh gradient buffers (as optimizer.zero_grad() does by default)."""
    for p in model.parameters():
        p.grad = None
    loss = last_output(model, x).pow(2).mean()
    loss.backward()


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
    # attention blocks and two FFN blocks, chosen among the last eight layers.
    upper = torch.randperm(L - 4, generator=g) + 4
    no_att, no_ffn = set(upper[:2].tolist()), set(upper[2:4].tolist())
    for block in model.feature_extractor.conv_layers:
        n = block.channel_gate.n
        assign(block.channel_gate, round(n * min(1.0, keep_scale * uniform(0.55, 0.85))))
    for i, layer in enumerate(model.encoder.layers):
        att, ffn = layer.attention, layer.feed_forward
        assign(layer.attention_gate, 0 if i in no_att else 1)
        assign(layer.ffn_gate, 0 if i in no_ffn else 1)
        assign(att.head_gate, max(1, round(att.num_heads * min(1.0, keep_scale * uniform(0.35, 0.75)))))
        n = ffn.unit_gate.n
        assign(ffn.unit_gate, max(1, round(n * min(1.0, keep_scale * uniform(0.10, 0.40)))))


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


# ------------------------------------------------------------------------------ main
torch.set_num_threads(args.threads)
print("=" * 78)
print(f"machine : {cpu_name()} ({platform.machine()}) | {platform.platform()}")
print(f"cpu     : os.cpu_count()={os.cpu_count()} | torch.get_num_threads()={torch.get_num_threads()}")
print(f"torch   : {torch.__version__} | torchaudio {torchaudio.__version__} | python {platform.python_version()}")
# Other processes compete for the cores: a load average above the core count means noisy wall times.
print(f"load    : {' '.join(f'{v:.2f}' for v in os.getloadavg())} (1/5/15-min load average at start)")
print("=" * 78)

# ----------------------------------------------------------- 1. gate overhead (train)
cfg = WavLMConfig.wavlm_base_plus()
torch.manual_seed(args.seed)
ref = torchaudio_wavlm(cfg).train()
# Same weights in our two models: go through load_pretrained, the user's path.
with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "ta.pth")
    torch.save(ref.state_dict(), path)
    plain = load_pretrained(path).train()
    gated = load_pretrained(path, prune_units=PRUNE_UNITS).train()
x = torch.randn(1, int(train_seconds * SAMPLE_RATE))

ta_last = lambda m, x: m(x)[0]              # torchaudio returns the last layer's output
our_last = lambda m, x: m(x)[0][-1]         # ours returns all hidden states
with torch.no_grad():                       # no gates + dropout 0: must be the reference
    same = (ta_last(ref, x) - our_last(plain, x)).abs().max().item()
n_gates = len(gated.gates())
ref_params = sum(p.numel() for p in ref.parameters())
print(f"\n[1] Gate overhead: fwd+bwd, train mode, WavLM Base+ architecture ({ref_params / 1e6:.1f}M params), "
      f"random weights, batch 1 x {train_seconds:g} s")
print(f"    gates on: {', '.join(PRUNE_UNITS)} ({n_gates} HardConcrete groups, "
      f"{sum(g.n for g in gated.gates().values())} logits)")
print(f"    warm-up {train_warmup}, {train_reps} interleaved reps, median; "
      f"sanity: |ours(no gates) - torchaudio| max = {same:.2e}")

fns = {
    "torchaudio": lambda: train_step(ref, x, ta_last),
    "ours, no gates": lambda: train_step(plain, x, our_last),
    "ours, 5 gate kinds": lambda: train_step(gated, x, our_last),
}
med, cmed = print_times(*time_interleaved(fns, train_warmup, train_reps), base="torchaudio")
overhead = med["ours, 5 gate kinds"] / med["torchaudio"]
print(f"    gates alone (gated / no gates): wall {med['ours, 5 gate kinds'] / med['ours, no gates']:.3f}x, "
      f"cpu {cmed['ours, 5 gate kinds'] / cmed['ours, no gates']:.3f}x")
print(f"    goal gated / torchaudio <= 1.10x (wall): {overhead:.3f}x -> {'MET' if overhead <= 1.10 else 'NOT MET'}")

if args.profile:
    from torch.profiler import ProfilerActivity, profile
    for name, fn in fns.items():
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            fn()
        print(f"\n--- profile: {name} (one fwd+bwd) ---")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
del ref, plain, gated, fns

# ------------------------------------------------------- 2. pruned speed-up (infer)
num_samples = 10 * SAMPLE_RATE
torch.manual_seed(args.seed)
masked = MaskedWavLM(WavLMConfig.wavlm_base_plus(prune_units=list(PRUNE_UNITS))).eval()
dense = MaskedWavLM(WavLMConfig.wavlm_base_plus()).eval()
# The dense model has the same weights, minus the gate logits.
dense.load_state_dict({k: v for k, v in masked.state_dict().items() if not k.endswith("log_alpha")}, strict=True)
# Scale the seeded keep fractions until the eval masks remove ~target of the params:
# expected_num_params() in eval mode is exactly the pruned size, so this needs no prune().
lo, hi = 0.2, 3.0
for _ in range(30):
    mid = (lo + hi) / 2
    set_gates(masked, args.seed, mid)
    ratio = masked.expected_num_params().item() / dense.num_params()
    lo, hi = (mid, hi) if ratio < 1 - args.target_sparsity else (lo, mid)
set_gates(masked, args.seed, (lo + hi) / 2)
pruned = masked.prune()
assert pruned.num_params() == int(masked.expected_num_params().item()), "expected_num_params != pruned size"

wave = torch.randn(1, num_samples)
with torch.inference_mode():
    diff = max((a - b).abs().max().item() for a, b in zip(masked(wave)[0], pruned(wave)[0]))
del masked
pc = pruned.config
params_ratio = pruned.num_params() / dense.num_params()
mac_dense, mac_pruned = macs(dense.config, num_samples), macs(pc, num_samples)

print(f"\n[2] Pruned speed-up: inference, eval, torch.inference_mode(), batch 1 x 10 s "
      f"({num_samples} samples), seed {args.seed}")
print(f"    conv channels  : {[c for c, _, _ in pc.conv_layers]}")
print(f"    heads / layer  : {[len(h) for h in pc.heads]}")
print(f"    FFN units      : {pc.ffn_dims}")
print(f"    attention kept : {''.join('1' if b else '0' for b in pc.attention_blocks)}   "
      f"FFN kept: {''.join('1' if b else '0' for b in pc.ffn_blocks)}")
print(f"    params         : dense {dense.num_params() / 1e6:.2f}M -> pruned {pruned.num_params() / 1e6:.2f}M, "
      f"ratio {params_ratio:.3f} (sparsity {1 - params_ratio:.1%}; target {args.target_sparsity:.0%})")
print(f"    sanity         : |masked(eval) - pruned| max over all hidden states = {diff:.2e} "
      f"({'OK' if diff <= 1e-4 else 'MISMATCH'})")


def infer(model):
    with torch.inference_mode():
        model(wave)


print(f"    GMACs          : dense {mac_dense / 1e9:.2f} -> pruned {mac_pruned / 1e9:.2f}")
print(f"    warm-up {infer_warmup}, {infer_reps} interleaved reps, median")
med, cmed = print_times(*time_interleaved({"dense": lambda: infer(dense), "pruned": lambda: infer(pruned)},
                                          infer_warmup, infer_reps), base="dense")
mac_speedup, wall_speedup = mac_dense / mac_pruned, med["dense"] / med["pruned"]
cpu_speedup = cmed["dense"] / cmed["pruned"]
print(f"    params ratio (pruned/dense) : {params_ratio:.3f}")
print(f"    MAC speed-up (dense/pruned) : {mac_speedup:.2f}x")
print(f"    wall speed-up (dense/pruned): {wall_speedup:.2f}x   (cpu-time speed-up {cpu_speedup:.2f}x)")
eff = wall_speedup / mac_speedup
print(f"    goal wall >= 0.8 x MAC speed-up: efficiency {eff:.2f} -> {'MET' if eff >= 0.8 else 'NOT MET'}")
print("=" * 78)
