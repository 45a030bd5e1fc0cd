"""
The first GPU run, prepared in advance: one command that checks and measures
everything the CUDA path of this library must show, in a few minutes on one
H100-class GPU, and prints one summary table (also written to a JSON file).

    python benchmarks/gpu_check.py                         # on a CUDA machine, < 6 min
    python benchmarks/gpu_check.py --json out.json --out gpu_run/   # keep the toy run
    python benchmarks/gpu_check.py --device cpu --quick    # CPU rehearsal, tiny sizes, ~1 min

Why a script and not a notebook or the test suite: a GPU is lent to this project
only now and then, for minutes. Whatever must be learnt from such a visit has to be
ready to run in one go, fast, and must report as much as possible even when a part
of it breaks. So every section below runs inside its own try/except: a failing
section is recorded as FAILED with its error, the next one runs, and the exit code
is 1 if anything failed. The CPU rehearsal (`--device cpu --quick`) runs the same
code paths on tiny sizes, and tests/test_gpu_check.py runs it, so the script cannot
silently rot between GPU visits.

Sections (the method is Peng et al. 2025, "Hybrid Pruning: In-Situ Compression of
Self-Supervised Speech Models for Speaker Verification and Anti-Spoofing",
arXiv 2508.16232; the model is WavLM, Chen et al. 2022, arXiv 2110.13900):

  oracle_torchaudio     our WavLM (loaded through pretrained.load_pretrained from a
                        torchaudio state dict) against torchaudio's WavLM on the device,
                        fp32 with TF32 off: every hidden state within 1e-4.
  pruned_equals_masked  a WavLM Base+ whose gates remove ~70% of the parameters: the
                        physically pruned model against the gated one, on the device.
  bf16_autocast         the gated WavLM Base+ (all five gate kinds) + MHFA +
                        AAM-softmax, forward and backward under bf16 autocast: no NaN,
                        the model size and the Lagrangian stay fp32/fp64, embeddings
                        compared with an fp32 pass that draws the same gates.
  train_throughput      one training step (forward, backward, AdamW) of WavLM Base+ at
                        the paper's per-GPU batch (32 x 3-s crops): torchaudio vs ours
                        without gates vs ours gated, fp32 and bf16, and peak memory.
  inference_speedup     the ~70%-pruned model against the dense one, batch 1 x 10 s
                        and batch 64 x 3 s, fp32 and bf16, next to the MAC ratio.
  reverb_on_device      augment.reverberate (train.py --reverb-on device) on a batch of
                        128 3-s crops, 0.5-s RIRs, on the device: equal to the
                        loader's per-crop Augmenter.reverb on the CPU, and its time.
  train_toy             `python train.py --data toy --target 0.7 --device cuda
                        --amp bf16` end to end, as a subprocess: wall time, sparsity
                        and EER from its report.json.

Nothing here downloads anything: every model has random weights, built from a config.
Every number docs/performance.md reports about the GPU must come from this script's table.
"""

import argparse
import contextlib
import gc
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback

import torch
import torchaudio

from common import machine_header, macs, pruned_pair, time_interleaved  # puts the root on sys.path
import augment
import classifier  # SSL -> pooling head -> loss head
import data
import devices
# (root on sys.path)
from pretrained import (load_pretrained, perturb_norms_and_biases_, torchaudio_hidden_states,
                        torchaudio_wavlm)
from wavlm_masked import PRUNE_UNITS, MaskedWavLM, WavLMConfig

ROOT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE_RATE = 16000
SECTIONS = ["oracle_torchaudio", "pruned_equals_masked", "bf16_autocast", "train_throughput",
            "inference_speedup", "reverb_on_device", "train_toy"]
NEEDS_CUDA = "needs CUDA"          # every skip reason for a GPU-only row starts with this

# Limits of the correctness checks.
ORACLE_TOL = 1e-4                  # ours vs torchaudio, fp32 (the CPU oracle test's tolerance)
# Pruned vs masked, fp32. The CPU tests hold tiny models to 1e-5; the Base+ shape over 12
# layers reaches 4.8e-6 on a CPU (batch 2 x 4 s), and other kernels sum in another order.
# A real pruning mistake (a wrong unit or scale) shows up at 1e-2 or more.
PRUNED_TOL = 2e-5
MIN_BF16_COSINE = 0.99             # bf16 vs fp32 embeddings: direction kept (cosine scoring)
OVERHEAD_GOAL = 1.10               # gated / torchaudio training step
REVERB_TOL = 1e-5                  # batched FFTs in fp32 on the device vs numpy's fp64 per crop


# =============================================================================== results
class Section:
    """The rows one section reports. A row is a check (passed / failed against a limit),
    a measurement (info, optionally against a goal), or a skip with its reason."""

    def __init__(self, name):
        self.name, self.rows, self.status, self.error, self.seconds = name, [], None, None, 0.0
        self.traceback = None

    def _add(self, **row):
        row = dict(section=self.name, **row)
        self.rows.append(row)
        shown = {"passed": "PASS", "failed": "FAIL", "skipped": "skip",
                 "info": "info"}[row["status"]]
        if row.get("goal"):
            shown = f"goal {row['goal']}"
        extra = row.get("reason") or row.get("limit") or ""
        print(f"  [{shown:>12}] {row['check']}: {row['result']}"
              + (f"   ({extra})" if extra else ""), flush=True)

    def check(self, check, value, ok, result=None, limit=""):
        self._add(check=check, value=value, result=result if result is not None else _fmt(value),
                  limit=limit, status="passed" if ok else "failed")

    def info(self, check, value, result=None, goal=None, goal_met=None):
        row = dict(check=check, value=value, result=result if result is not None else _fmt(value),
                   status="info")
        if goal is not None:
            row.update(limit=goal, goal="met" if goal_met else "NOT met")
        self._add(**row)

    def skip(self, check, reason):
        self._add(check=check, value=None, result="-", status="skipped", reason=reason)

    def to_dict(self):
        return dict(name=self.name, status=self.status, error=self.error,
                    seconds=round(self.seconds, 2), rows=self.rows, traceback=self.traceback)


def _fmt(value):
    if isinstance(value, float):
        return f"{value:.3g}" if (value != 0 and (abs(value) < 1e-2 or abs(value) >= 1e4)) \
            else f"{value:.4f}"
    return str(value)


def run_section(name, fn, ctx):
    """Run one section; any exception marks it FAILED (with the error) and the run goes on."""
    sec = Section(name)
    print(f"\n[{name}]", flush=True)
    t0 = time.perf_counter()
    try:
        fn(sec, ctx)
        statuses = {r["status"] for r in sec.rows}
        sec.status = "failed" if "failed" in statuses else ("skipped" if statuses == {"skipped"}
                                                            else "passed")
    except Exception as e:               # noqa: BLE001 (a first GPU run must report, not stop)
        sec.status, sec.error = "failed", f"{type(e).__name__}: {e}"
        sec.traceback = traceback.format_exc()
        print(f"  FAILED: {sec.error}\n" + "".join(sec.traceback.splitlines(True)[-12:]),
              flush=True)
    finally:
        sec.seconds = time.perf_counter() - t0
        free_memory(ctx.device)
    print(f"  -> {sec.status} in {sec.seconds:.1f} s", flush=True)
    return sec


def free_memory(device):
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# ============================================================================= helpers
@contextlib.contextmanager
def exact_fp32():
    """fp32 without TF32. By default cuDNN runs fp32 convolutions in TF32 (a 10-bit
    mantissa, ~1e-3 relative error), which would drown a 1e-5 comparison; the
    correctness sections therefore switch TF32 off for matmuls and convolutions."""
    old = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
    torch.set_float32_matmul_precision("highest")
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(old[0])
        torch.backends.cudnn.allow_tf32 = old[1]


def max_diff(a, b):
    return (a.float() - b.float()).abs().max().item()


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_device(fns, warmup, reps, device):
    """Median seconds per call of each callable, repetitions interleaved (A B C, B C A,
    ...). On a GPU, kernels run asynchronously: time.perf_counter() around a call would
    measure how fast Python *queues* the work. So each call is bracketed by CUDA events
    recorded on the stream and we wait for the end event; the elapsed time between the
    two events is what the GPU stream took, launch gaps and host syncs included."""
    if device.type != "cuda":
        wall, _ = time_interleaved(fns, warmup, reps)
        return {n: statistics.median(t) for n, t in wall.items()}
    names = list(fns)
    for _ in range(warmup):          # first calls pick kernels and grow the caching allocator
        for n in names:
            fns[n]()
    torch.cuda.synchronize()
    times = {n: [] for n in names}
    for r in range(reps):
        for n in names[r % len(names):] + names[: r % len(names)]:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fns[n]()
            end.record()
            end.synchronize()
            times[n].append(start.elapsed_time(end) / 1000.0)         # ms -> s
    return {n: statistics.median(t) for n, t in times.items()}


def peak_step_bytes(fn, device):
    """Bytes that one call allocates at its peak on top of what was already allocated
    (activations saved for backward, gradients, temporaries, workspaces)."""
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - before


def state_bytes(model, optimizer=None):
    """Bytes of the parameters, plus the optimiser's state (AdamW: two moments per weight)."""
    n = sum(p.numel() * p.element_size() for p in model.parameters())
    if optimizer is not None:
        n += sum(t.numel() * t.element_size() for s in optimizer.state.values() for t in s.values()
                 if torch.is_tensor(t))
    return n


def mib(n):
    return n / 2 ** 20


def ours_from_torchaudio(ref, prune_units=()):
    """Our MaskedWavLM with the weights of a torchaudio model, through the user's path:
    a torchaudio .pth on disk read back by pretrained.load_pretrained."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "torchaudio_wavlm.pth")
        torch.save(ref.state_dict(), path)
        return load_pretrained(path, prune_units=prune_units)


_PAIRS = {}


def cached_pruned_pair(config, sparsity, seed):
    """common.pruned_pair on the CPU (a bisection over the gate logits), shared by the two
    sections that use the same ~70% structure so it is built only once."""
    key = (repr(config), sparsity, seed)
    if key not in _PAIRS:
        _PAIRS[key] = pruned_pair(config, sparsity, seed)
    return _PAIRS[key]


# ============================================================================ sections
def oracle_torchaudio(sec, ctx):
    """Ours vs torchaudio.models.wavlm_model, random weights with perturbed LayerNorms and
    biases, eval, fp32 without TF32. torchaudio's extract_features returns the L layer
    outputs and leaves out the final LayerNorm of pre-LN models (the last-layer caveat
    of the CPU test); the input of layer 0 is compared too."""
    dev = ctx.device
    if ctx.quick:
        configs = [("tiny, post-LN", WavLMConfig.tiny()),
                   ("tiny, pre-LN + LayerNorm extractor",
                    WavLMConfig.tiny(extractor_mode="layer_norm", layer_norm_first=True,
                                     conv_bias=True))]
        batch, seconds = 2, 1.0
    else:
        configs = [("WavLM Base", WavLMConfig.wavlm_base()),
                   ("tiny, pre-LN + LayerNorm extractor",
                    WavLMConfig.tiny(extractor_mode="layer_norm", layer_norm_first=True,
                                     conv_bias=True))]
        batch, seconds = 4, 4.0
    for label, cfg in configs:
        torch.manual_seed(ctx.seed)
        ref = perturb_norms_and_biases_(torchaudio_wavlm(cfg))
        ours = ours_from_torchaudio(ref).eval().to(dev)
        ref = ref.to(dev)
        n_ref = sum(p.numel() for p in ref.parameters())
        sec.check(f"{label}: parameter count ours == torchaudio", ours.num_params(),
                  ours.num_params() == n_ref, result=f"{ours.num_params():,} vs {n_ref:,}",
                  limit="equal")
        x = torch.randn(batch, int(seconds * SAMPLE_RATE), device=dev)
        with torch.no_grad(), exact_fp32():
            expected = torchaudio_hidden_states(ref, x, cfg.layer_norm_first,  # L+1 states
                                                ours.config.normalize_waveform)
            got, _ = ours(x)
        diff = max(max_diff(a, b) for a, b in zip(got, expected))
        sec.check(f"{label}: max |ours - torchaudio| over {len(got)} hidden states, "
                  f"batch {batch} x {seconds:g} s, fp32 on {dev.type}", diff,
                  diff <= ORACLE_TOL and len(got) == cfg.num_layers + 1, limit=f"<= {ORACLE_TOL:g}")
        del ref, ours, x, expected, got
        free_memory(dev)


def pruned_equals_masked(sec, ctx):
    """The gated model in eval mode (deterministic masks, soft values) and the physically
    pruned dense model must compute the same hidden states, padding included. Two
    architectures: the Base+ shape (GroupNorm extractor, post-LN) and a small Large-like
    one (LayerNorm extractor, whose statistics over kept channels only are trap 1 of
    wavlm_masked.py, and pre-LN)."""
    dev = ctx.device
    large_like = WavLMConfig.tiny(num_layers=6, extractor_mode="layer_norm", layer_norm_first=True,
                                  conv_bias=True)
    pairs = [("tiny, 6 layers", WavLMConfig.tiny(num_layers=6))] if ctx.quick else \
        [("WavLM Base+", WavLMConfig.wavlm_base_plus())]
    pairs.append(("tiny Large-like, 6 layers", large_like))
    seconds = 1.0 if ctx.quick else 4.0
    for label, cfg in pairs:
        dense, masked, pruned = cached_pruned_pair(cfg, ctx.sparsity, ctx.seed)
        masked, pruned = masked.to(dev).eval(), pruned.to(dev).eval()
        sparsity = 1 - pruned.num_params() / dense.num_params()
        pc = pruned.config
        sec.info(f"{label}: structure removed", sparsity,
                 result=f"sparsity {sparsity:.3f} "
                        f"({dense.num_params():,} -> {pruned.num_params():,} params; "
                        f"attention blocks kept {sum(pc.attention_blocks)}/{pc.num_layers}, "
                        f"FFN blocks kept {sum(pc.ffn_blocks)}/{pc.num_layers})")
        # The eval-mode size, computed on the device, equals the pruned model's count.
        with torch.no_grad():
            size = int(masked.expected_num_params().item())
        sec.check(f"{label}: eval expected_num_params() on {dev.type} == pruned num_params()", size,
                  size == pruned.num_params(), result=f"{size:,} vs {pruned.num_params():,}",
                  limit="equal")
        n = int(seconds * SAMPLE_RATE)
        torch.manual_seed(ctx.seed)
        x = torch.randn(2, n, device=dev)
        lengths = torch.tensor([n, (3 * n) // 4], device=dev)             # the second one padded
        with torch.no_grad(), exact_fp32():
            a, fa = masked(x, lengths)
            b, fb = pruned(x, lengths)
        diff = max(max_diff(u, v) for u, v in zip(a, b))
        sec.check(f"{label}: max |masked - pruned| over {len(a)} hidden states, "
                  f"batch 2 x {seconds:g} s (one padded), fp32 on {dev.type}", diff,
                  diff <= PRUNED_TOL and torch.equal(fa, fb),
                  limit=f"<= {PRUNED_TOL:g}")
        masked.cpu(), pruned.cpu()                # the Base+ pair is reused by inference_speedup
        del a, b, x
        free_memory(dev)


def bf16_autocast(sec, ctx):
    """Mixed precision must not break the pruning machinery: the model size is a sum of
    ~1e8 parameters (float64 by design: fp32 is exact only to 2**24 and bf16 to 2**8),
    and the Lagrangian's gap t - s_hat is a small difference of numbers near 1, which
    bf16 (8 bits of mantissa, steps of 0.004 near 1) would round to nothing. Autocast only
    lowers ops on its list (matmuls, convolutions), so both must stay fp32/fp64 even when
    computed inside the autocast region; we check that here, and that the loss, every
    gradient and the embeddings are finite."""
    dev = ctx.device
    if ctx.quick:
        cfg = WavLMConfig.tiny(prune_units=list(PRUNE_UNITS))
        head = classifier.HeadConfig(mhfa_heads=8, mhfa_compression=64)
        batch, seconds, num_classes = 2, 1.0, 10
    else:
        cfg = WavLMConfig.wavlm_base_plus(prune_units=list(PRUNE_UNITS))
        head = classifier.HeadConfig()                # the paper's MHFA: 32 heads, compression 128
        batch, seconds, num_classes = 8, 3.0, 1000
    label = "tiny" if ctx.quick else "WavLM Base+"
    torch.manual_seed(ctx.seed)
    ssl = MaskedWavLM(cfg)
    model = classifier.Classifier(ssl, "sv", num_classes, head=head, grad_mult=0.1).to(dev).train()
    params0 = ssl.num_params()
    gate_kinds = sorted({type(g).__name__ for g in ssl.gates().values()})
    sec.info(f"{label}: gated model", len(ssl.gates()),
             result=f"{len(ssl.gates())} {'/'.join(gate_kinds)} groups "
                    f"on {', '.join(cfg.prune_units)}; "
                    f"SSL {params0:,} params, "
                    f"head {sum(p.numel() for p in model.head.parameters()):,}")
    waves = torch.randn(batch, int(seconds * SAMPLE_RATE), device=dev)
    labels = torch.randint(0, num_classes, (batch,), device=dev)
    lambdas = torch.tensor([0.5, 0.5], device=dev, requires_grad=True)
    target = 0.7

    def step(amp):
        """Forward and backward with the same gate draws (the RNG is re-seeded)."""
        model.zero_grad(set_to_none=True)
        lambdas.grad = None
        torch.manual_seed(ctx.seed + 1)
        with devices.autocast(dev, amp):
            emb = model.embed(waves)                                   # (B, 256)
            task_loss = model.loss_head(emb, labels)
            size = ssl.expected_num_params()                           # inside autocast on purpose
            s_hat = 1.0 - size / params0                               # eq. (2)
            gap = target - s_hat
            reg = lambdas[0] * gap + lambdas[1] * gap ** 2             # eq. (1)'s regulariser
            loss = task_loss.float() + reg
        loss.backward()
        grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
        return dict(emb=emb.detach(), task_loss=task_loss.detach(), size=size.detach(),
                    reg=reg.detach(), loss=loss.detach(),
                    grads={n: g.clone() for n, g in grads.items()},
                    n_params=sum(1 for _ in model.parameters()), lambda_grad=lambdas.grad.clone())

    low = step("bf16")
    full = step("none")
    lowp = (torch.bfloat16, torch.float16)
    sec.info(f"{label}: embedding dtype under autocast",
             str(low["emb"].dtype).replace("torch.", ""))
    for name in ("size", "reg", "task_loss", "loss"):
        what = {"size": "expected_num_params()", "reg": "Lagrangian regulariser",
                "task_loss": "task loss", "loss": "total loss"}[name]
        dt = low[name].dtype
        sec.check(f"{label}: {what} dtype under bf16 autocast", str(dt).replace("torch.", ""),
                  dt not in lowp and bool(torch.isfinite(low[name]).all()),
                  limit="fp32 or fp64, finite")
    sec.check(f"{label}: model size under autocast == fp32 pass", low["size"].item(),
              low["size"].item() == full["size"].item(),
              result=f"{low['size'].item():,.2f} vs {full['size'].item():,.2f}", limit="equal")
    bad = [n for n, g in low["grads"].items() if not bool(torch.isfinite(g).all())]
    missing = low["n_params"] - len(low["grads"])
    sec.check(f"{label}: parameters with a non-finite or missing gradient after bf16 backward",
              len(bad) + missing, not bad and missing == 0,
              result=f"{len(bad)} non-finite, {missing} without gradient, of {low['n_params']}"
                     + (f" (first: {bad[:3]})" if bad else ""), limit="0")
    gate_grads = [low["grads"][n] for n in low["grads"] if n.endswith("log_alpha")]
    dtypes = sorted({str(g.dtype).replace("torch.", "") for g in gate_grads})
    sec.check(f"{label}: gate-logit gradients under bf16", ",".join(dtypes),
              dtypes == ["float32"] and any(bool((g != 0).any()) for g in gate_grads),
              result=f"dtype {','.join(dtypes)}, "
                     f"non-zero in {sum(bool((g != 0).any()) for g in gate_grads)}"
                     f"/{len(gate_grads)} groups", limit="float32, non-zero")
    sec.check(f"{label}: multiplier gradients under bf16", low["lambda_grad"].tolist(),
              low["lambda_grad"].dtype == torch.float32
              and bool(torch.isfinite(low["lambda_grad"]).all()),
              result=f"{low['lambda_grad'].tolist()} (fp32 pass {full['lambda_grad'].tolist()})",
              limit="float32, finite")
    e16, e32 = low["emb"].float(), full["emb"]
    diff = (e16 - e32).abs().max().item()
    rel = diff / e32.abs().max().item()
    cos = torch.nn.functional.cosine_similarity(e16, e32, dim=1).min().item()
    sec.info(f"{label}: max |emb(bf16) - emb(fp32)|, batch {batch} x {seconds:g} s", diff,
             result=f"{diff:.3g} (relative to max |emb|: {rel:.3g}); "
                    f"task loss {low['task_loss'].item():.4f} "
                    f"vs {full['task_loss'].item():.4f}")
    sec.check(f"{label}: min cosine(emb(bf16), emb(fp32)) over the batch", cos,
              math.isfinite(cos) and cos >= MIN_BF16_COSINE, result=f"{cos:.6f}",
              limit=f">= {MIN_BF16_COSINE}")


def train_throughput(sec, ctx):
    """One training step = forward, loss, backward, AdamW step, grads to None. The loss is
    the mean square of the last hidden state (the head is the same for every model, so
    it is left out); the gated model adds the Lagrangian on its expected size, as in
    training. Four step functions per precision:
      torchaudio          the reference implementation, no gates (plain fine-tuning);
      ours, no gates      our implementation, same weights: what our code costs;
      ours, gated         all five gate kinds sampled, + E[size] in the loss (the
                          paper's estimate): what in-situ pruning costs;
      ours, gated+deploy  as above + the exported-size value of train.py's default
                          `--size-estimate deployed`, whose round()/top-k per gate
                          reads values back to the host (device syncs) every step.
    Ratios are against torchaudio at the same precision."""
    dev = ctx.device
    cuda = dev.type == "cuda"
    cfg = WavLMConfig.tiny() if ctx.quick else WavLMConfig.wavlm_base_plus()
    label = "tiny" if ctx.quick else "WavLM Base+"
    batch, seconds = (2, 1.0) if ctx.quick else (32, 3.0)
    warmup, reps = (1, 2) if ctx.quick else (3, 10)
    torch.manual_seed(ctx.seed)
    ref = torchaudio_wavlm(cfg)
    plain = ours_from_torchaudio(ref)
    gated = ours_from_torchaudio(ref, prune_units=PRUNE_UNITS)
    models = {"torchaudio": ref, "ours, no gates": plain, "ours, gated": gated}
    opts = {}
    for name, m in models.items():
        m.to(dev).train()
        opts[name] = torch.optim.AdamW(m.parameters(), lr=1e-6, weight_decay=0.0)
    params0 = plain.num_params()
    x = torch.randn(batch, int(seconds * SAMPLE_RATE), device=dev)
    lambdas = torch.tensor([0.1, 0.1], device=dev)

    def make_step(name, amp, size="none"):
        model, opt = models[name], opts[name]
        last = (lambda: model(x)[0]) if name == "torchaudio" else (lambda: model(x)[0][-1])

        def step():
            with devices.autocast(dev, amp):
                loss = last().float().pow(2).mean()
            if size != "none":
                expected = model.expected_num_params(deterministic=False)
                if size == "deployed":      # value of the exported size, gradient of E[size]
                    with torch.no_grad():
                        deployed = model.expected_num_params(deterministic=True)
                    expected = expected + (deployed - expected).detach()
                gap = 0.7 - (1.0 - expected / params0)
                loss = loss + lambdas[0] * gap + lambdas[1] * gap ** 2
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        return step

    variants = {"torchaudio": ("torchaudio", "none"), "ours, no gates": ("ours, no gates", "none"),
                "ours, gated": ("ours, gated", "expected"),
                "ours, gated+deploy": ("ours, gated", "deployed")}
    sec.info(f"{label}: setup", params0,
             result=f"{params0 / 1e6:.1f}M params, batch {batch} x {seconds:g} s, "
                    f"warm-up {warmup}, "
                    f"{reps} interleaved reps, median; {len(gated.gates())} gate groups; "
                    f"TF32 matmul {torch.get_float32_matmul_precision()}, "
                    f"cuDNN TF32 {torch.backends.cudnn.allow_tf32}"
                    + ("; quick mode: the times are a rehearsal, not results" if ctx.quick else ""))
    for amp in ("none", "bf16"):
        prec = "fp32" if amp == "none" else "bf16"
        fns = {v: make_step(m, amp, s) for v, (m, s) in variants.items()}
        med = time_device(fns, warmup, reps, dev)
        gpu_only = amp == "bf16" and not cuda
        for v, t in med.items():
            check = f"{label}: train step {prec}, {v}"
            if gpu_only:
                sec.skip(check, f"{NEEDS_CUDA}: bf16 autocast speed means nothing on a CPU "
                                f"(the step ran here only to rehearse the code)")
            else:
                sec.info(check, t, result=f"{1000 * t:.1f} ms/step, {batch / t:.1f} utt/s, "
                                          f"{t / med['torchaudio']:.3f}x torchaudio")
        ratio = med["ours, gated"] / med["torchaudio"]
        check = f"{label}: gate overhead {prec}, gated / torchaudio"
        if not cuda:
            sec.skip(check, f"{NEEDS_CUDA}: the goal is stated for the GPU "
                            f"(bench_core.py measures the CPU)")
        elif ctx.quick:
            sec.skip(check, "quick mode: the goal is stated for WavLM Base+ at batch 32 x 3 s")
        else:
            sec.info(check, ratio, result=f"{ratio:.3f}x (gated+deploy "
                                          f"{med['ours, gated+deploy'] / med['torchaudio']:.3f}x)",
                     goal=f"<= {OVERHEAD_GOAL:.2f}x", goal_met=ratio <= OVERHEAD_GOAL)
        for v, (m, s) in variants.items():
            check = f"{label}: peak memory {prec}, {v}"
            if not cuda:
                sec.skip(check, f"{NEEDS_CUDA}: torch.cuda.max_memory_allocated")
                continue
            extra = peak_step_bytes(fns[v], dev)
            total = state_bytes(models[m], opts[m]) + extra
            sec.info(check, round(mib(total)), result=f"{mib(total):,.0f} MiB "
                                                      f"(weights + AdamW state "
                                                      f"{mib(total - extra):,.0f} "
                                                      f"+ step peak {mib(extra):,.0f})")
        del fns
        free_memory(dev)


def inference_speedup(sec, ctx):
    """Pruned vs dense forward under torch.inference_mode(), same random weights; the MAC
    ratio (common.macs: the matrix work of each config) is what a perfectly efficient
    kernel library would turn into speed-up. On a GPU a small batch leaves the cores
    idle (kernel launches and the fixed-size ops dominate), so expect the large batch to
    come closer to the MAC ratio."""
    dev = ctx.device
    cuda = dev.type == "cuda"
    cfg = WavLMConfig.tiny(num_layers=6) if ctx.quick else WavLMConfig.wavlm_base_plus()
    label = "tiny, 6 layers" if ctx.quick else "WavLM Base+"
    shapes = [(1, 2.0), (4, 1.0)] if ctx.quick else [(1, 10.0), (64, 3.0)]
    warmup, reps = (1, 2) if ctx.quick else (2, 10)
    dense, _, pruned = cached_pruned_pair(cfg, ctx.sparsity, ctx.seed)
    dense, pruned = dense.to(dev).eval(), pruned.to(dev).eval()
    sparsity = 1 - pruned.num_params() / dense.num_params()
    for batch, seconds in shapes:
        n = int(seconds * SAMPLE_RATE)
        mac_ratio = macs(dense.config, n) / macs(pruned.config, n)
        x = torch.randn(batch, n, device=dev)
        for amp in ("none", "bf16"):
            prec = "fp32" if amp == "none" else "bf16"

            def run(model, x=x, amp=amp):
                with torch.inference_mode(), devices.autocast(dev, amp):
                    model(x)
            med = time_device({"dense": lambda: run(dense), "pruned": lambda: run(pruned)},
                              warmup, reps, dev)
            check = (f"{label} at sparsity {sparsity:.2f}: inference {prec}, "
                     f"batch {batch} x {seconds:g} s")
            if amp == "bf16" and not cuda:
                sec.skip(check, f"{NEEDS_CUDA}: bf16 autocast speed means nothing on a CPU "
                                f"(the forward ran here only to rehearse the code)")
                continue
            speedup = med["dense"] / med["pruned"]
            sec.info(check, speedup, result=f"dense {1000 * med['dense']:.1f} ms -> pruned "
                                            f"{1000 * med['pruned']:.1f} ms: {speedup:.2f}x; "
                                            f"MAC ratio {mac_ratio:.2f}x "
                                            f"(efficiency {speedup / mac_ratio:.2f})")
        del x
        free_memory(dev)
    dense.cpu(), pruned.cpu()


def reverb_on_device(sec, ctx):
    """The reverb a GPU does for the loader (train.py --reverb-on device): one batch of
    the SV recipe's 128 3-s crops, a third of them with a 0.5-s RIR, against the worker's
    per-crop convolution on the CPU (augment.Augmenter.reverb), and the batch's time."""
    dev = ctx.device
    batch, n = (8, SAMPLE_RATE) if ctx.quick else (128, 3 * SAMPLE_RATE)
    g = torch.Generator().manual_seed(ctx.seed)
    waves = torch.randn(batch, n, generator=g)                              # (B, S)
    raw = [torch.randn(SAMPLE_RATE // 2, generator=g) * torch.exp(-torch.arange(SAMPLE_RATE // 2)
                                                                   / 1000.0) for _ in range(batch)]
    rirs = [augment.Augmenter.aligned_rir(r) if b % 3 == 0 else torch.zeros(0)
            for b, r in enumerate(raw)]
    *_, rir_pad, rir_len = data.collate_pad([(w, 0, r) for w, r in zip(waves, rirs)])
    want = torch.stack([augment.Augmenter.reverb(w, raw[b]) if b % 3 == 0 else w
                        for b, w in enumerate(waves)])
    args = (waves.to(dev), rir_pad.to(dev), rir_len.to(dev))
    got = augment.reverberate(*args).cpu()
    diff = max_diff(got, want)
    sec.check(f"reverberate on {dev.type}, {batch} x {n / SAMPLE_RATE:g}-s crops, every third "
              f"with a RIR == Augmenter.reverb per crop on the CPU", diff, diff <= REVERB_TOL,
              limit=f"<= {REVERB_TOL:g}")
    times = time_device({"reverberate": lambda: augment.reverberate(*args)}, 2, 3 if ctx.quick else 20,
                        dev)
    ms = 1e3 * times["reverberate"]
    sec.info(f"reverberate on {dev.type}: ms per batch of {batch}", ms,
             result=f"{ms:.2f} ms ({1e3 * ms / batch:.1f} us per crop; a loader worker's CPU "
                    f"reverb takes 2,000-2,500 us per reverberated crop)")


def train_toy(sec, ctx):
    """The README's toy command on this device, as a separate process (nothing may import
    train.py), with its own output folder and a private corpus cache, so it generates
    the toy corpus from scratch as a clean checkout would."""
    out = os.path.join(ctx.out, "train_toy")
    cache = os.path.join(ctx.out, "toy_cache")
    if os.path.exists(out):
        shutil.rmtree(out)
    cmd = [sys.executable, os.path.join(ROOT_DIR, "train.py"), "--data", "toy", "--target", "0.7",
           "--device", ctx.device.type, "--amp", "bf16", "--out", out, "--cache-dir", cache,
           "--no-progress"]
    if ctx.quick:
        cmd += ["--toy-size", "tiny", "--steps", "4", "--batch-size", "2", "--crop-seconds", "0.5",
                "--eval-every", "0", "--num-workers", "0"]
    printable = " ".join(cmd[1:]).replace(ROOT_DIR + os.sep, "")
    sec.info("command", printable)
    log_path = os.path.join(ctx.out, "train_toy.log")
    t0 = time.perf_counter()
    try:
        with open(log_path, "w") as log:
            proc = subprocess.run(cmd, cwd=ROOT_DIR, stdout=log, stderr=subprocess.STDOUT,
                                  timeout=ctx.train_timeout)
        rc = proc.returncode
    except subprocess.TimeoutExpired:
        rc = None
    wall = time.perf_counter() - t0
    with open(log_path) as f:
        tail = "".join(f.readlines()[-15:])
    if rc is None:
        sec.check("train.py finished", wall, False,
                  result=f"killed after {wall:.1f} s (--train-timeout "
                         f"{ctx.train_timeout:g}); log tail:\n{tail}",
                  limit="exit code 0")
        return
    sec.check("train.py exit code", rc, rc == 0, result=f"{rc} after {wall:.1f} s wall"
              + ("" if rc == 0 else f"; log tail:\n{tail}"), limit="0")
    if rc != 0:
        return
    with open(os.path.join(out, "report.json")) as f:
        report = json.load(f)
    sec.info("wall time (script-measured, incl. start-up and toy generation)", wall,
             result=f"{wall:.1f} s")
    sec.info("report.json: seconds", report["seconds"], result=f"{report['seconds']:.1f} s")
    ms = steps_per_second(os.path.join(out, "log.jsonl"))
    if ms is not None:
        sec.info("training loop", ms[0], result=f"{1000 * ms[0]:.1f} ms/step over {ms[1]} steps "
                                                f"(from log.jsonl, evaluations included)")
    if ctx.quick:
        sec.info("report.json: sparsity (4 steps: not meant to reach the target)",
                 report["sparsity"])
    else:
        ok = abs(report["sparsity"] - 0.7) <= 0.02
        sec.check("report.json: sparsity of the exported model", report["sparsity"], ok,
                  limit="0.7 +- 0.02")
    sec.info("report.json: EER (pruned / masked), test set " + str(report.get("test_set")),
             report["eer_pruned"], result=f"{100 * report['eer_pruned']:.2f} % / "
                                          f"{100 * report['eer_masked']:.2f} %"
                                          f", minDCF {report['min_dcf_pruned']:.3f}")
    sec.info("report.json: max |score masked - score pruned|", report["max_score_diff"])
    sec.info("report.json: pruned vs dense inference speed-up", report["speedup"],
             result=f"{report['speedup']:.2f}x")


def steps_per_second(log_path):
    """(seconds per step, steps) between the first and last training lines of log.jsonl."""
    try:
        rows = [json.loads(line) for line in open(log_path) if line.strip()]
        rows = [r for r in rows if "task_loss" in r and "seconds" in r]
        if len(rows) < 2:
            return None
        return ((rows[-1]["seconds"] - rows[0]["seconds"]) / (rows[-1]["step"] - rows[0]["step"]),
                len(rows))
    except (OSError, ValueError, KeyError):
        return None


FUNCTIONS = {"oracle_torchaudio": oracle_torchaudio, "pruned_equals_masked": pruned_equals_masked,
             "bf16_autocast": bf16_autocast, "train_throughput": train_throughput,
             "inference_speedup": inference_speedup, "reverb_on_device": reverb_on_device,
             "train_toy": train_toy}
assert list(FUNCTIONS) == SECTIONS


# ================================================================================ main
def device_description(device):
    if device.type != "cuda":
        return f"device  : CPU (torch.cuda.is_available() = {torch.cuda.is_available()})"
    p = torch.cuda.get_device_properties(device)
    return (f"device  : {p.name}, {p.total_memory / 2 ** 30:.1f} GiB, "
            f"compute capability {p.major}.{p.minor}, "
            f"{p.multi_processor_count} SMs, bf16 {torch.cuda.is_bf16_supported()}\n"
            f"CUDA    : torch {torch.__version__} built for CUDA {torch.version.cuda}, "
            f"cuDNN {torch.backends.cudnn.version()}, "
            f"driver-visible devices {torch.cuda.device_count()}")


def summary_table(sections):
    """One line per row: section, check, result, limit or goal, status."""
    lines = []
    w = max(len(s.name) for s in sections)
    lines.append(f"{'section':<{w}}  {'status':<12}  check: result   [limit / goal]")
    lines.append("-" * 100)
    for s in sections:
        if s.error or not s.rows:
            lines.append(f"{s.name:<{w}}  {s.status.upper():<12}  {s.error or 'no rows'}")
        for r in s.rows:
            status = {"passed": "PASS", "failed": "FAIL", "skipped": "skipped",
                      "info": ""}[r["status"]]
            if r.get("goal"):
                status = f"goal {r['goal']}"
            extra = r.get("reason") or r.get("limit") or ""
            result = r["result"].splitlines()[0] if r["result"] else ""
            lines.append(f"{s.name:<{w}}  {status:<12}  {r['check']}: {result}"
                         + (f"   [{extra}]" if extra else ""))
    lines.append("-" * 100)
    for s in sections:
        lines.append(f"{s.name:<{w}}  {s.status.upper():<12}  {s.seconds:6.1f} s")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip(),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda",
                   help="cuda (the point of the script) or cpu (rehearsal, with --quick)")
    p.add_argument("--quick", action="store_true",
                   help="tiny sizes and few repetitions (the CPU rehearsal)")
    p.add_argument("--json", default="gpu_check.json",
                   help="where to write the results (default gpu_check.json)")
    p.add_argument("--out", help="folder for the train.py run and its toy corpus "
                                 "(default: a temporary folder, deleted at the end)")
    p.add_argument("--sections", default=",".join(SECTIONS),
                   help=f"comma list from {','.join(SECTIONS)}")
    p.add_argument("--sparsity", type=float, default=0.70, help="sparsity of the pruned/dense pair")
    p.add_argument("--train-timeout", type=float, default=300.0,
                   help="seconds before train.py is stopped")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    chosen = [s for s in args.sections.split(",") if s]
    unknown = [s for s in chosen if s not in SECTIONS]
    if unknown:
        p.error(f"--sections: unknown {unknown}; choose from {','.join(SECTIONS)}")
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("no CUDA device is visible; on a machine without a GPU rehearse with "
                "--device cpu --quick")

    ctx = argparse.Namespace(device=torch.device(args.device), quick=args.quick, seed=args.seed,
                             sparsity=args.sparsity, train_timeout=args.train_timeout)
    tmp = None
    if args.out:
        ctx.out = os.path.abspath(args.out)
        os.makedirs(ctx.out, exist_ok=True)
    else:
        ctx.out = tmp = tempfile.mkdtemp(prefix="gpu_check_")
    print(machine_header(f"torchaudio {torchaudio.__version__}\n{device_description(ctx.device)}"))
    print(f"mode    : {'quick (tiny sizes)' if args.quick else 'full (real sizes)'} "
          f"on {args.device}; outputs in {ctx.out}")
    t0 = time.perf_counter()
    sections = []

    def write_json(finished):
        """Written after every section too, so a run cut short (a lease that ends, a hung
        kernel) still leaves the sections it finished on disk."""
        failed = [s.name for s in sections if s.status == "failed"]
        goals_missed = [f"{r['section']}: {r['check']}" for s in sections for r in s.rows
                        if r.get("goal") == "NOT met"]
        result = dict(passed=finished and not failed, finished=finished, failed_sections=failed,
                      goals_missed=goals_missed, seconds=round(time.perf_counter() - t0, 1),
                      quick=args.quick,
                      device=args.device, argv=sys.argv[1:],
                      machine=dict(header=machine_header(), device=device_description(ctx.device),
                                   torch=torch.__version__, torchaudio=torchaudio.__version__,
                                   cuda=torch.version.cuda,
                                   gpu=torch.cuda.get_device_name(ctx.device)
                                   if ctx.device.type == "cuda" else None),
                      sections=[s.to_dict() for s in sections])
        tmp_json = args.json + ".tmp"
        with open(tmp_json, "w") as f:
            json.dump(result, f, indent=2, default=str)
        os.replace(tmp_json, args.json)
        return failed, goals_missed

    for name in SECTIONS:
        if name in chosen:
            sections.append(run_section(name, FUNCTIONS[name], ctx))
        else:
            s = Section(name)
            s.status, s.error = "skipped", "not selected (--sections)"
            sections.append(s)
        write_json(finished=False)
    failed, goals_missed = write_json(finished=True)
    total = time.perf_counter() - t0

    print("\n" + "=" * 100)
    print(f"SUMMARY ({'quick' if args.quick else 'full'} run on {args.device}, {total:.0f} s)")
    print(summary_table(sections))
    print(f"result  : {'all sections passed' if not failed else 'FAILED: ' + ', '.join(failed)}"
          + (f"; goals missed: {len(goals_missed)}" if goals_missed else ""))
    print("=" * 100)
    print(f"written : {args.json}")
    if tmp is not None:
        shutil.rmtree(tmp, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
