"""
The evaluation command line: metrics from score files, or from a trained model scored on
a dataset's evaluation lists.

    python evaluate.py --scores a.txt b.txt --trials veri_test2.txt --det det.png   # SV
    python evaluate.py --task cm --scores cm.txt --protocol ASVspoof5.eval.track_1.tsv
    python evaluate.py --checkpoint runs/toy_t0.7/pruned_model.pt --data toy        # a model
    python evaluate.py --onnx model.onnx --data toy                                  # exported

The pieces live below it: the metrics in metrics.py (the conventions are in its
docstring), the file formats in trials.py, scoring a model in scoring.py, DET plots in
plots.py. The numbers are those of the seed paper (Peng et al. 2025, arXiv 2508.16232,
Sec. 4): EER on VoxCeleb1-O/E/H, and EER/minDCF on ASVspoof5.
"""

import argparse
import os
import sys
from pathlib import Path

import torch

import checkpoints
import classifier
import data
import devices
import metrics
import plots
import scoring
import trials
from metrics import ASVSPOOF5, EER_MODES, VOXCELEB, CostModel


# command line


def format_metrics(name: str, m: dict) -> str:
    pos, neg = ("bona fide", "spoof") if "act_dcf" in m else ("target", "non-target")
    rule = {"interp": "linear interpolation at the miss/false-alarm crossing",
            "asvspoof5": "ASVspoof5 rule: mean of FRR and FAR at min |FRR - FAR|"}[m["eer_mode"]]
    lines = [f"{name}: {m['n_target'] + m['n_nontarget']} trials "
             f"({m['n_target']} {pos}, {m['n_nontarget']} {neg})",
             f"  EER     {100 * m['eer']:8.3f} %   threshold {m['eer_threshold']:<10.6g} [{rule}]",
             f"  minDCF  {m['min_dcf']:8.4f}     threshold {m['min_dcf_threshold']:<10.6g} "
             f"[p_target={m['p_target']:g}, c_miss={m['c_miss']:g}, c_fa={m['c_fa']:g}]"]
    if "act_dcf" in m:
        lines.append(f"  actDCF  {m['act_dcf']:8.4f}     threshold {m['act_dcf_threshold']:<10.6g} "
                     f"[Bayes threshold; scores read as LLRs]")
        lines.append(f"  Cllr    {m['cllr']:8.4f}     bits")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="EER / minDCF for speaker verification, or the ASVspoof5 metric set "
                    "(EER, minDCF, actDCF, Cllr) for anti-spoofing, from score files.")
    p.add_argument("--task", choices=("sv", "cm"), default="sv")
    p.add_argument("--scores", nargs="+",
                   help="score file(s): 'enroll test score' (sv) or 'filename score' (cm); "
                        "several files are compared on one DET plot")
    # Checkpoint mode: embed a dataset's test audio with a trained model, then score it.
    p.add_argument("--checkpoint", help="pruned_model.pt written by train.py (instead of --scores)")
    p.add_argument("--onnx", help="model.onnx written by export.py: like --checkpoint, "
                                  "scored with onnxruntime")
    p.add_argument("--threads", type=int, default=None,
                   help="compute threads of PyTorch (--checkpoint) or onnxruntime (--onnx); "
                        "default: one per core")
    p.add_argument("--data",
                   help="checkpoint mode: toy, toy_spoof, vox1, vox2, asvspoof5, asvspoof2019")
    p.add_argument("--data-root", help="checkpoint mode: the dataset folder")
    p.add_argument("--vox1-root", help="checkpoint mode, vox2: the VoxCeleb1 folder")
    p.add_argument("--cache-dir", help="checkpoint mode: where toy corpora live")
    p.add_argument("--toy-size", default="default", choices=("default", "tiny"),
                   help=argparse.SUPPRESS)    # "tiny": a few files, for the tests
    p.add_argument("--toy-seed", type=int, default=0, help="checkpoint mode: toy corpus seed")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--cohort", help="checkpoint mode, sv: a folder of <speaker>/.../*.wav (or "
                                    "*.flac) whose speakers form the AS-norm cohort (default: "
                                    "the training speakers of --data)")
    p.add_argument("--cohort-utts", type=int, default=4,
                   help="checkpoint mode, sv: utterances per cohort speaker (0 = raw cosine only)")
    p.add_argument("--cohort-seconds", type=float, default=scoring.COHORT_SECONDS,
                   help="checkpoint mode, sv: the centre crop embedded per cohort utterance "
                        "(default: 3 s, as the authors)")
    p.add_argument("--trials", help="sv: VoxCeleb trial list, 'label enroll test'")
    p.add_argument("--protocol", help="cm: ASVspoof5 protocol with a bonafide/spoof column")
    p.add_argument("--det", help="write a DET plot (PNG) here")
    p.add_argument("--eer-mode", choices=EER_MODES, default=None,
                   help="default: interp for sv, asvspoof5 for cm")
    p.add_argument("--p-target", type=float, default=None,
                   help="target (sv) / bona fide (cm) prior; default 0.01 (sv), 0.95 (cm)")
    p.add_argument("--c-miss", type=float, default=None)
    p.add_argument("--c-fa", type=float, default=None)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.checkpoint and args.onnx:
        parser.error("give --checkpoint or --onnx, not both")
    if args.checkpoint or args.onnx:
        return checkpoint_mode(args, parser)
    if not args.scores:
        parser.error("give --scores (score files), or --checkpoint / --onnx (a trained model) "
                     "with --data")
    if args.task == "sv" and not args.trials:
        parser.error("--task sv needs --trials")
    if args.task == "cm" and not args.protocol:
        parser.error("--task cm needs --protocol")
    preset = VOXCELEB if args.task == "sv" else ASVSPOOF5
    costs = CostModel(*(v if v is not None else d
                        for v, d in zip((args.p_target, args.c_miss, args.c_fa), preset)))
    eer_mode = args.eer_mode or ("interp" if args.task == "sv" else "asvspoof5")

    systems = {}
    for path in args.scores:
        name = Path(path).stem
        while name in systems:
            name += "'"
        try:
            if args.task == "sv":
                scores, labels = trials.load_sv(path, args.trials)
                m = metrics.sv_metrics(scores, labels, *costs, eer_mode=eer_mode)
            else:
                scores, labels = trials.load_cm(path, args.protocol)
                m = metrics.cm_metrics(scores, labels, *costs, eer_mode=eer_mode)
        except (OSError, ValueError) as err:
            parser.exit(2, f"evaluate.py: error: {err}\n")
        print(format_metrics(name, m))
        systems[name] = (scores, labels)
    if args.det:
        write_det(systems, args.det, args.task)
    return 0


def write_det(systems, path, task):
    if task == "sv":
        plots.plot_det(systems, path, title="DET curve (speaker verification)")
    else:
        plots.plot_det(systems, path, title="DET curve (anti-spoofing)",
                 xlabel="Spoof accepted as bona fide (%)", ylabel="Bona fide rejected (%)")
    print(f"DET plot written to {path}")


def load_scorer(args):
    """--checkpoint or --onnx -> (score function, task)."""
    if args.onnx:
        import export                       # onnxruntime is only needed here
        score_fn, info = export.onnx_scorer(args.onnx, threads=args.threads,
                                            sample_rate=data.SAMPLE_RATE)
        return score_fn, info["task"]
    if args.threads:
        torch.set_num_threads(args.threads)
    device = devices.resolve_device(args.device)
    model, _ = classifier.load_classifier(args.checkpoint, device)
    return classifier.utterance_scorer(model, device), model.task


def load_cohort(args, score_fn, spec):
    """The AS-norm cohort: the training speakers of --data, or the speakers of --cohort;
    cached beside the model file (cohort.pt, reused when train.py wrote it)."""
    source = args.checkpoint or args.onnx
    items = spec.train_items if not args.cohort else scoring.folder_speakers(args.cohort)
    cache = os.path.join(os.path.dirname(os.path.abspath(source)),
                         "cohort.pt" if not args.cohort else "cohort_custom.pt")
    return scoring.cached_cohort(score_fn, items, args.cohort_utts, cache,
                                 key=checkpoints.file_sha256(source),
                                 crop_seconds=args.cohort_seconds)


def checkpoint_mode(args, parser) -> int:
    """Embed every test utterance of --data with the model in --checkpoint (PyTorch) or
    --onnx (onnxruntime, export.py), score the trial lists (SV: raw cosine, and mean
    subtraction + AS-norm against a cohort) or protocols (CM), and print the metrics.
    Both paths share the audio loading (resampled to 16 kHz with a notice) and everything
    after the per-utterance score function."""
    source = args.checkpoint or args.onnx
    if not args.data:
        option = "--checkpoint" if args.checkpoint else "--onnx"
        parser.error(f"{option} needs --data (and --data-root for real data)")
    try:
        score_fn, task = load_scorer(args)
        spec = data.prepare_data(args.data, args.data_root, args.cache_dir, seed=args.toy_seed,
                                 toy_size=args.toy_size, vox1_root=args.vox1_root)
        if spec.task != task:
            raise ValueError(f"{source} is a {task} model but --data {args.data} is a "
                             f"{spec.task} dataset")
        cohort = (load_cohort(args, score_fn, spec)
                  if task == "sv" and args.cohort_utts else None)
        results, raw = scoring.evaluate_sets(score_fn, spec, cohort=cohort)
    except (OSError, ValueError, ImportError) as err:   # ValueError: e.g. an utterance shorter
        parser.exit(2, f"evaluate.py: error: {err}\n")  # than an exported model accepts
    for name, m in results.items():
        print(format_metrics(name, m))
        if "asnorm" in m:
            print(format_metrics(f"{name}, mean subtraction + AS-norm (cohort: "
                                 f"{cohort['speakers']} speakers x {cohort['per_speaker']})",
                                 m["asnorm"]))
    if args.det:
        write_det(raw, args.det, spec.task)
    return 0


if __name__ == "__main__":
    sys.exit(main())
