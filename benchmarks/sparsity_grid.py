"""
Does the exported model land on --target, whatever the recipe and the run length?
Runs train.py over a grid of targets x step counts with the paper's recipes (vox1 for
speaker verification, asvspoof5 for anti-spoofing) on the offline toy corpora read
through those loaders, and prints one Markdown table. It is a measurement, not a test.

    python benchmarks/sparsity_grid.py                 # the grid in docs/results.md (~1 h on 2 cores)
    python benchmarks/sparsity_grid.py --jobs 2        # two runs at a time, one thread each
    python benchmarks/sparsity_grid.py --quick         # two short runs, to try the script

Columns: "game" is the exported sparsity that the min-max game alone reached when the
settle phase began (the eval masks at that step); "exported" is what the run shipped,
after the settle phase set the gates to the target and fine-tuned the fixed structure.
Runs are kept under --out and reused, so an interrupted grid continues where it stopped.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from common import machine_header  # also puts the repository root on sys.path
import data

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("--targets", default="0.3,0.5,0.7,0.9")
parser.add_argument("--steps", default="100,200,400", help="step counts of the vox1 runs")
parser.add_argument("--cm-steps", default="200", help="step counts of the asvspoof5 runs")
parser.add_argument("--jobs", type=int, default=1, help="runs at a time (each uses one thread)")
parser.add_argument("--out", default=os.path.join(ROOT, "runs", "sparsity_grid"))
parser.add_argument("--quick", action="store_true", help="two short runs")
args = parser.parse_args()

# The toy corpora, generated on first use, in the vox1 and asvspoof5 layouts.
sv_root = os.path.dirname(data.prepare_data("toy").eval_root)
cm_root = os.path.dirname(os.path.dirname(data.prepare_data("toy_spoof").train_items[0][0]))
# What makes the recipes' real-data settings affordable on a CPU; everything else (lr,
# sparsity warm-up in epochs, schedule, settle share) is the paper recipe's default.
common = ["--ssl", "tiny", "--batch-size", "16", "--crop-seconds", "2", "--eval-every", "0",
          "--no-progress", "--num-workers", "0", "--threads", "1"]
targets = [float(t) for t in args.targets.split(",")]
grid = [("vox1", sv_root, t, int(n)) for n in args.steps.split(",") for t in targets]
grid += [("asvspoof5", cm_root, t, int(n)) for n in args.cm_steps.split(",") for t in targets]
if args.quick:
    grid = [("vox1", sv_root, 0.5, 40), ("asvspoof5", cm_root, 0.5, 40)]


def run(job):
    name, root, target, steps = job
    out = os.path.join(args.out, f"{name}_t{target:g}_s{steps}")
    if not os.path.exists(os.path.join(out, "report.json")):
        cmd = [sys.executable, os.path.join(ROOT, "train.py"), "--data", name, "--data-root", root,
               "--target", str(target), "--steps", str(steps), "--out", out, *common]
        if os.path.exists(os.path.join(out, "checkpoint.pt")):
            cmd.append("--resume")
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            return job, None, done.stderr[-2000:]
    report = json.load(open(os.path.join(out, "report.json")))
    config = json.load(open(os.path.join(out, "config.json")))
    rows = [json.loads(line) for line in open(os.path.join(out, "log.jsonl"))]
    settle = next((r for r in rows if r.get("settle")), None)
    return job, dict(report=report, config=config, settle=settle), None


print(machine_header(f"{len(grid)} runs, {args.jobs} at a time"))
t0 = time.time()
with ThreadPoolExecutor(args.jobs) as pool:
    results = list(pool.map(run, grid))
print(f"\n{len(grid)} runs in {time.time() - t0:.0f} s (runs already in {args.out} are reused)\n")
print("| recipe | target | steps | warm-up steps | settle from | game | exported "
      "| exported - target | test EER |")
print("|---|---|---|---|---|---|---|---|---|")
worst = 0.0
for (name, _, target, steps), res, err in results:
    if res is None:
        print(f"| {name} | {target:g} | {steps} | "
              f"failed: {err.strip().splitlines()[-1] if err else '?'} |")
        continue
    r, c, s = res["report"], res["config"], res["settle"]
    game = f"{s['sparsity_before']:.4f}" if s else "–"
    worst = max(worst, abs(r["sparsity"] - target))
    print(f"| {name} | {target:g} | {steps} | {c['sparsity_warmup_steps']} | "
          f"{c['settle_start']} | {game} | "
          f"{r['sparsity']:.4f} | {r['sparsity'] - target:+.4f} | {100 * r['eer_pruned']:.2f} % |")
print(f"\nlargest |exported - target|: {worst:.4f} (goal <= 0.005)")
