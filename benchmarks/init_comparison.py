"""
Why prune a pre-trained model instead of training a small one? The comparison of Peng et
al. 2025 ("Hybrid Pruning", arXiv 2508.16232, Sec. 1 and 4), on the toy, from the
results.csv of two sweep.py folders run with the same seeds, steps and labelled speakers:

  --scratch DIR      sweep.py --targets T (default --ssl tiny): the pruned models from
                     random init, (d), and the small dense models of the same size, (b)
  --pretrained DIR   sweep.py --targets 0,T --ssl CHECKPOINT --no-small-dense: the dense
                     pre-trained model, (c), and the model pruned in situ from it, (a)

It prints the EER of (a)-(d) (mean ± sample std over seeds) and the differences that
matter, paired by seed (same seed: same head initialisation and batch order), with the
standard error of the mean paired difference, sd(diff) / sqrt(n). The decision rule of
docs/results.md, stated before the runs: pre-training earns its place if (a) beats (b)
by more than twice that standard error.

    python benchmarks/init_comparison.py --scratch runs/cmp_scratch_10spk --pretrained runs/cmp_dino_10spk
"""

import argparse
import csv
import os
import sys

import numpy as np

CONDITIONS = {"a": ("pretrained", "pruned", "pruned in situ from the pre-trained model"),
              "b": ("scratch", "small", "small dense model of the same size, from scratch"),
              "c": ("pretrained", "dense", "dense pre-trained model"),
              "d": ("scratch", "pruned", "pruned in situ from random init")}
PAIRS = [("b", "a"), ("d", "a"), ("c", "a")]      # (x, y): x - y > 0 means y is better


def read_eers(folder, target, test_set):
    """{"pruned" | "small" | "dense": {seed: EER}} from a sweep folder's results.csv."""
    path = os.path.join(folder, "results.csv")
    if not os.path.exists(path):
        sys.exit(f"error: {path} not found; run sweep.py into {folder} first (or "
                 f"`sweep.py ... --report-only` to tabulate finished runs)")
    out = {}
    with open(path) as fh:
        for r in csv.DictReader(fh):
            if r["test_set"] != test_set:
                continue
            t = float(r["target"])
            kind = "dense" if r["kind"] == "pruned" and t == 0 else r["kind"]
            if t in (0.0, target):
                out.setdefault(kind, {})[int(r["seed"])] = 100 * float(r["eer"])
    return out


def paired(x: dict, y: dict):
    """Seeds in both -> (mean of x - y, its standard error, n)."""
    seeds = sorted(set(x) & set(y))
    if not seeds:
        return float("nan"), float("nan"), 0
    d = np.array([x[s] - y[s] for s in seeds])
    se = d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else float("nan")
    return d.mean(), se, len(d)


def compare(scratch, pretrained) -> tuple:
    """-> (per condition: {seed: EER}, rows of paired differences, decision text)."""
    cells = {k: {"scratch": scratch, "pretrained": pretrained}[src].get(kind, {})
             for k, (src, kind, _) in CONDITIONS.items()}
    rows = []
    for x, y in PAIRS:
        mean, se, n = paired(cells[x], cells[y])
        rows.append((x, y, mean, se, n))
    _, _, mean, se, n = rows[0]
    if n < 2:
        decision = "no decision: (a) and (b) need at least two common seeds"
    elif mean > 2 * se:
        decision = (f"(a) beats (b) by {mean:.2f} points, more than twice the standard error "
                    f"({2 * se:.2f}): pre-training helps pruning here")
    else:
        decision = (f"(a) does not beat (b) by more than twice the standard error "
                    f"({mean:+.2f} against {2 * se:.2f}): no evidence that pre-training helps")
    return cells, rows, decision


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scratch", required=True)
    p.add_argument("--pretrained", required=True)
    p.add_argument("--target", type=float, default=0.7)
    p.add_argument("--test-set", default="vox1_o")
    args = p.parse_args(argv)
    cells, rows, decision = compare(read_eers(args.scratch, args.target, args.test_set),
                                    read_eers(args.pretrained, args.target, args.test_set))
    print(f"{args.test_set} EER %, target sparsity {args.target:g}")
    print("| | model | EER % | seeds |\n|---|---|---|---|")
    for k, (_, _, what) in CONDITIONS.items():
        v = np.array(list(cells[k].values()))
        text = (f"{v.mean():.2f} ± {v.std(ddof=1):.2f}" if len(v) > 1
                else f"{v.mean():.2f}" if len(v) else "-")
        print(f"| ({k}) | {what} | {text} | {len(v)} |")
    print("\n| difference, paired by seed | mean ± standard error | seeds |\n|---|---|---|")
    for x, y, mean, se, n in rows:
        print(f"| ({x}) - ({y}) | {mean:+.2f} ± {se:.2f} | {n} |")
    print(f"\n{decision}")
    return cells, rows, decision


if __name__ == "__main__":
    main()
