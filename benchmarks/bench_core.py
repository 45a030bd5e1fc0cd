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
ratios stay closer to the truth, most of all with --threads 1. Record docs/performance.md numbers
from a quiet machine, and name it.
"""

import argparse
import os
import tempfile

import torch
import torchaudio

from common import machine_header, macs, print_times, pruned_pair, time_interleaved
from pretrained import load_pretrained, torchaudio_wavlm  # (common.py puts the root on sys.path)
from wavlm_masked import PRUNE_UNITS, WavLMConfig

SAMPLE_RATE = 16000

# ------------------------------------------------------------------------------- args
parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("--quick", action="store_true",
                    help="fewer repetitions and a 2-s training input")
parser.add_argument("--threads", type=int, default=os.cpu_count(),
                    help="torch.set_num_threads (default: all cores)")
parser.add_argument("--train-seconds", type=float, default=None,
                    help="training input length (default 4, quick 2)")
parser.add_argument("--reps", type=int, default=None,
                    help="timed training steps per model (default 10, quick 3)")
parser.add_argument("--infer-reps", type=int, default=None,
                    help="timed 10-s inferences per model (default 5, quick 2)")
parser.add_argument("--target-sparsity", type=float, default=0.70,
                    help="fraction of parameters to remove")
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--profile", action="store_true",
                    help="print torch.profiler's top ops per training step")
args = parser.parse_args()
train_seconds = args.train_seconds or (2.0 if args.quick else 4.0)
train_reps = args.reps or (3 if args.quick else 10)
train_warmup = 1 if args.quick else 2
infer_reps = args.infer_reps or (2 if args.quick else 5)
infer_warmup = 1


# --------------------------------------------------------------------------- helpers
def train_step(model, x, last_output):
    """One forward + backward. Grads go to None first, for every model alike, so each
    step allocates fresh gradient buffers (as optimizer.zero_grad() does by default)."""
    for p in model.parameters():
        p.grad = None
    loss = last_output(model, x).pow(2).mean()
    loss.backward()


# ------------------------------------------------------------------------------ main
torch.set_num_threads(args.threads)
print(machine_header(f"torchaudio {torchaudio.__version__}"))

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
print(f"\n[1] Gate overhead: fwd+bwd, train mode, WavLM Base+ architecture "
      f"({ref_params / 1e6:.1f}M params), random weights, batch 1 x {train_seconds:g} s")
print(f"    gates on: {', '.join(PRUNE_UNITS)} ({n_gates} HardConcrete groups, "
      f"{sum(g.n for g in gated.gates().values())} logits)")
print(f"    warm-up {train_warmup}, {train_reps} interleaved reps, median; "
      f"sanity: |ours(no gates) - torchaudio| max = {same:.2e}")

fns = {        # default arguments bind the models now (they are deleted below, to free memory)
    "torchaudio": lambda m=ref: train_step(m, x, ta_last),
    "ours, no gates": lambda m=plain: train_step(m, x, our_last),
    "ours, 5 gate kinds": lambda m=gated: train_step(m, x, our_last),
}
med, cmed = print_times(*time_interleaved(fns, train_warmup, train_reps), base="torchaudio")
overhead = med["ours, 5 gate kinds"] / med["torchaudio"]
print(f"    gates alone (gated / no gates): "
      f"wall {med['ours, 5 gate kinds'] / med['ours, no gates']:.3f}x, "
      f"cpu {cmed['ours, 5 gate kinds'] / cmed['ours, no gates']:.3f}x")
print(f"    goal gated / torchaudio <= 1.10x (wall): {overhead:.3f}x -> "
      f"{'MET' if overhead <= 1.10 else 'NOT MET'}")

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
dense, masked, pruned = pruned_pair(WavLMConfig.wavlm_base_plus(), args.target_sparsity, args.seed)
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
print(f"    params         : dense {dense.num_params() / 1e6:.2f}M -> "
      f"pruned {pruned.num_params() / 1e6:.2f}M, ratio {params_ratio:.3f} "
      f"(sparsity {1 - params_ratio:.1%}; target {args.target_sparsity:.0%})")
print(f"    sanity         : |masked(eval) - pruned| max over all hidden states = {diff:.2e} "
      f"({'OK' if diff <= 1e-4 else 'MISMATCH'})")


def infer(model):
    with torch.inference_mode():
        model(wave)


print(f"    GMACs          : dense {mac_dense / 1e9:.2f} -> pruned {mac_pruned / 1e9:.2f}")
print(f"    warm-up {infer_warmup}, {infer_reps} interleaved reps, median")
med, cmed = print_times(*time_interleaved({"dense": lambda: infer(dense),
                                           "pruned": lambda: infer(pruned)},
                                          infer_warmup, infer_reps), base="dense")
mac_speedup, wall_speedup = mac_dense / mac_pruned, med["dense"] / med["pruned"]
cpu_speedup = cmed["dense"] / cmed["pruned"]
print(f"    params ratio (pruned/dense) : {params_ratio:.3f}")
print(f"    MAC speed-up (dense/pruned) : {mac_speedup:.2f}x")
print(f"    wall speed-up (dense/pruned): {wall_speedup:.2f}x   "
      f"(cpu-time speed-up {cpu_speedup:.2f}x)")
eff = wall_speedup / mac_speedup
print(f"    goal wall >= 0.8 x MAC speed-up: efficiency {eff:.2f} -> "
      f"{'MET' if eff >= 0.8 else 'NOT MET'}")
print("=" * 78)
