"""
Benchmark of the deployed model (issue 13): per-utterance latency of the scoring path
(wave -> WavLM -> MHFA -> embedding, batch 1), dense vs pruned, PyTorch eager vs
onnxruntime (export.py), on the CPU with 1 and 2 threads. Prints tables; not a test.

    python benchmarks/bench_export.py              # Base+ shape and toy model, a few minutes
    python benchmarks/bench_export.py --quick      # fewer repetitions, toy model only
    python benchmarks/bench_export.py --int8       # also onnxruntime dynamic int8 (pruned)

Models (random weights; speed does not depend on their values):
  * "base+": the WavLM Base+ architecture, and `common.pruned_pair(..., 0.70)`: the same
    weights with seeded gates that remove 70% of the SSL parameters (heads, FFN units,
    conv channels, two attention and two FFN blocks), cut down by prune();
  * "toy": the tiny WavLM of the toy recipe, pruned the same way (or, with
    --toy-checkpoint runs/toy_t0.7/pruned_model.pt, the structure that training found).
Both carry the paper's MHFA head (32 heads, compression 128), as deployed.

Read per thread count and audio length:
  ort vs eager     = time(eager) / time(onnxruntime), same model: > 1 means onnxruntime is faster
                     (goal: >= 1, "no slower than eager");
  pruned speed-up  = time(dense) / time(pruned), same runtime;
  MAC ratio        = MACs(dense) / MACs(pruned) of the whole scoring path (common.macs for
                     the WavLM plus the MHFA head's matrix products): the speed-up a perfectly
                     efficient runtime would give;
  efficiency       = pruned speed-up / MAC ratio (goal for onnxruntime: >= 0.8).

All variants of one thread count are timed interleaved (rotated order every round, see
common.time_interleaved), so background load hits them alike; medians are reported with
the [min .. max] over repetitions, which says how much the machine let them vary.
"""

import argparse
import json
import os
import statistics
import tempfile

import torch

# common puts the repository root on sys.path.
from common import machine_header, macs, pruned_pair, spread, time_interleaved
import classifier  # noqa: E402
import export  # noqa: E402
import wavlm_masked  # noqa: E402
from wavlm_masked import WavLMConfig  # noqa: E402

SAMPLE_RATE = 16000

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("--quick", action="store_true", help="toy model only, 3 repetitions")
parser.add_argument("--models", nargs="+", default=None, choices=("base+", "toy"),
                    help="default: both")
parser.add_argument("--threads", type=int, nargs="+", default=[1, 2],
                    help="thread counts, each timed in turn")
parser.add_argument("--seconds", type=float, nargs="+", default=[4.0, 10.0],
                    help="utterance lengths")
parser.add_argument("--reps", type=int, default=None,
                    help="timed repetitions (default: 5 base+, 15 toy)")
parser.add_argument("--sparsity", type=float, default=0.70)
parser.add_argument("--toy-checkpoint", default=None,
                    help="a trained pruned_model.pt to use as the pruned toy model")
parser.add_argument("--int8", action="store_true",
                    help="also time onnxruntime dynamic int8 quantisation (pruned)")
parser.add_argument("--json", default=None, help="also write the medians here")
args = parser.parse_args()
families = args.models or (["toy"] if args.quick else ["base+", "toy"])


def head_macs(config: WavLMConfig, num_samples: int, compression=128, heads=32,
              embed=classifier.EMBED_DIM) -> int:
    """MHFA's matrix products for one utterance: two compressions (E -> C per frame), the
    attention logits (C -> H per frame), the pooling (H x C per frame) and the output
    projection (H*C -> 256)."""
    T = num_samples
    for _, kernel, stride in config.conv_layers:
        T = (T - kernel) // stride + 1
    E = config.hidden_size
    return (2 * T * E * compression + T * compression * heads + T * heads * compression
            + heads * compression * embed)


def path_macs(config, num_samples):
    return macs(config, num_samples) + head_macs(config, num_samples)


def build(family):
    """(dense Classifier, pruned Classifier) with the same weights where both have them."""
    if family == "base+":
        dense_ssl, _, pruned_ssl = pruned_pair(WavLMConfig.wavlm_base_plus(), args.sparsity)
    else:
        dense_ssl, _, pruned_ssl = pruned_pair(WavLMConfig.tiny(), args.sparsity)
        if args.toy_checkpoint:
            trained, _ = classifier.load_classifier(args.toy_checkpoint)
            pruned_ssl = trained.ssl
    torch.manual_seed(0)
    dense = classifier.Classifier(dense_ssl, "sv", num_classes=2).eval()
    pruned = classifier.Classifier(pruned_ssl, "sv", num_classes=2).eval()
    pruned.head.load_state_dict(dense.head.state_dict())
    return dense, pruned


def main():
    print(machine_header(f"onnxruntime {__import__('onnxruntime').__version__}, onnx "
                         f"{__import__('onnx').__version__}, library {wavlm_masked.__version__}"))
    results = {}
    tmp = tempfile.TemporaryDirectory()
    for family in families:
        dense, pruned = build(family)
        reps = args.reps or (3 if args.quick else (5 if family == "base+" else 15))
        torch.set_num_threads(max(args.threads))
        models = {"dense": dense, "pruned": pruned}
        files = {}
        for name, model in models.items():
            files[name] = os.path.join(tmp.name, f"{family}-{name}.onnx")
            info = export.export_onnx(model, files[name], verify_seconds=(4.0,))
            print(f"{family} {name}: {model.ssl.num_params():,} SSL params, exported in "
                  f"{info['export_seconds']} s, max |ort - eager| on 4 s = "
                  f"{info['verified']['max_abs_diff']:.1e}")
        if args.int8:
            files["pruned-int8"] = os.path.join(tmp.name, f"{family}-pruned-int8.onnx")
            export.quantize_int8(files["pruned"], files["pruned-int8"])
        removed = 1 - pruned.ssl.num_params() / dense.ssl.num_params()
        print(f"\n{family}: {100 * removed:.1f}% of the SSL parameters removed "
              f"({dense.ssl.num_params():,} -> {pruned.ssl.num_params():,})")
        for threads in args.threads:
            torch.set_num_threads(threads)
            fns = {}
            g = torch.Generator().manual_seed(0)
            for sec in args.seconds:
                wave = torch.randn(1, int(sec * SAMPLE_RATE), generator=g)
                for name, model in models.items():
                    fns[(sec, name, "eager")] = (lambda m, w: lambda: torch_run(m, w))(model, wave)
                for name, path in files.items():
                    session = export.make_session(path, threads)
                    feed = {export.INPUT_NAME: wave.numpy()}
                    model_name, _, quantised = name.partition("-")      # "pruned-int8" -> int8
                    runtime = "ort-int8" if quantised else "ort"
                    run_once = (lambda s, f: lambda: s.run(None, f))(session, feed)
                    fns[(sec, model_name, runtime)] = run_once
            wall, _ = time_interleaved(fns, warmup=1, reps=reps)
            report(family, threads, dense, pruned, wall, results)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


@torch.inference_mode()
def torch_run(model, wave):
    return model.score(wave)


def report(family, threads, dense, pruned, wall, results):
    med = {k: statistics.median(v) for k, v in wall.items()}
    runtimes = sorted({k[2] for k in wall}, key=["eager", "ort", "ort-int8"].index)
    plural = "s" if threads > 1 else ""
    print(f"\n  {family}, {threads} thread{plural}: median wall s [min .. max] over repetitions")
    print(f"    {'audio':>6} {'model':<7}" + "".join(f"{r:>24}" for r in runtimes)
          + f"{'ort vs eager':>14}")
    for sec in args.seconds:
        n = int(sec * SAMPLE_RATE)
        for name in ("dense", "pruned"):
            cells = "".join(f"{med[(sec, name, r)]:>8.3f} {spread(wall[(sec, name, r)]):>15}"
                            if (sec, name, r) in med else f"{'':>24}" for r in runtimes)
            ort_vs_eager = med[(sec, name, "eager")] / med[(sec, name, "ort")]
            print(f"    {sec:>5.0f}s {name:<7}{cells}{ort_vs_eager:>13.2f}x")
        mac_ratio = path_macs(dense.ssl.config, n) / path_macs(pruned.ssl.config, n)
        line = f"    {'':>6} {'speed-up':<7}"
        speedups = {}
        for r in runtimes:
            if (sec, "dense", r) in med:
                speedups[r] = med[(sec, "dense", r)] / med[(sec, "pruned", r)]
                line += f"{speedups[r]:>8.2f}x{'':>15}"
            else:
                speedups[r] = med[(sec, "dense", "ort")] / med[(sec, "pruned", r)]
                line += f"{speedups[r]:>8.2f}x (vs ort fp32)"
        gmacs = path_macs(dense.ssl.config, n) / 1e9, path_macs(pruned.ssl.config, n) / 1e9
        print(line + f"   MAC ratio {mac_ratio:.2f}x ({gmacs[0]:.2f} -> {gmacs[1]:.2f} GMACs); "
                     f"ort efficiency {speedups['ort'] / mac_ratio:.2f}, "
                     f"eager {speedups['eager'] / mac_ratio:.2f}")
        results[f"{family}/{threads}t/{sec:g}s"] = {
            **{f"{k[1]}/{k[2]}": v for k, v in med.items() if k[0] == sec},
            "mac_ratio": mac_ratio, "load_average": os.getloadavg()[0]}


if __name__ == "__main__":
    main()
