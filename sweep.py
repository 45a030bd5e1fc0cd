"""
A sparsity sweep: the recipe at several target sparsities and seeds, summarised the way
the paper reports its results (Peng et al. 2025, "Hybrid Pruning", arXiv 2508.16232:
EER and minDCF per test set against the number of parameters, WavLM Base+ pruned to
0-90% on VoxCeleb; the CM optimum at 10% on ASVspoof5), next to a small dense model of
the same size trained from scratch, the answer to "why prune a big model at all?".

    python sweep.py --data toy --targets 0,0.3,0.5,0.7,0.9 --seeds 3
    python sweep.py --data toy_spoof --targets 0,0.1,0.3,0.5 --seeds 3 --jobs 2
    python sweep.py --data toy --seeds 1 --steps 40 --toy-size tiny    # other flags: train.py
    python sweep.py --data toy --report-only       # the table and plot of the finished runs

Each run is a train.py process (nothing imports train.py) with one compute thread, in
<out>/<kind>_t<target>_seed<seed>/, where kind is "pruned" (target 0: the dense model,
trained without gates, the paper's 0% row) or "small" (--ssl tiny-small:<target>: dense,
no gates, as many parameters as the pruned model, from random weights, same steps). Only
--seed varies between seeds (model initialisation, crops, batches); the toy corpus
(--toy-seed) stays the same, so the spread is that of training, not of the test data.

Resumable: a run folder with report.json is reused as it is; one with a checkpoint is
continued with --resume; the command of each run is kept in its sweep.json, and a folder
made by a different command is an error rather than silently mixed in. Runs are ordered
seed by seed, so an interrupted sweep has whole curves for its first seeds.

Outputs in <out> (default runs/sweep_<data>):
  results.csv       one row per run and test set (kind, target, seed, sparsity, params, EER,
                    minDCF, seconds, and what survived per layer: CNN channels, heads, FFN
                    units, attention and FFN blocks kept as 1/0)
  results.md        the table: mean and spread over seeds per (kind, target) and test set
  eer_vs_params.png EER against SSL parameters with error bars; the paper's numbers beside it
"""

import argparse
import csv
import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

import recipes
from wavlm_masked import MaskedWavLM, WavLMConfig

ROOT = os.path.dirname(os.path.abspath(__file__))

# The paper's sweep: WavLM Base+ fine-tuned and pruned on VoxCeleb2-dev, Vox1-O EER (%), parameters
# including the MHFA head (the authors' released plot data; docs/real_data.md "The paper's numbers").
PAPER_SV = [(0.0, 95.6, 0.761), (0.3, 67.3, 0.675), (0.5, 48.4, 0.760), (0.7, 29.6, 0.803),
            (0.9, 10.6, 1.596)]
# Anti-spoofing: the one number the paper gives, WavLM Base at 10% sparsity on ASVspoof5 eval.
PAPER_CM = [(0.1, None, 3.758)]

# Flags that the sweep sets itself, per run.
OWN_FLAGS = ("--target", "--seed", "--out", "--resume", "--re-export", "--threads", "--data",
             "--prune-units")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False,
                                epilog="Any other flag (e.g. --steps, --toy-size, --cache-dir, "
                                       "--toy-seed) is passed on to every train.py run.")
    p.add_argument("--data", required=True, help="a train.py --data (toy, toy_spoof, vox2, ...)")
    p.add_argument("--targets", default="0,0.3,0.5,0.7,0.9", help="comma list of target sparsities")
    p.add_argument("--seeds", type=int, default=3, help="runs per target, with --seed 0..N-1")
    p.add_argument("--jobs", type=int, default=1, help="runs at a time, one compute thread each")
    p.add_argument("--no-small-dense", action="store_true",
                   help="leave out the small dense models trained from scratch")
    p.add_argument("--spread", choices=["std", "minmax"], default="std",
                   help="what the table gives beside the mean: the sample standard deviation "
                        "over seeds, or the range min-max")
    p.add_argument("--out", help="sweep folder (default runs/sweep_<data>)")
    p.add_argument("--report-only", action="store_true",
                   help="run nothing; tabulate the finished runs")
    p.add_argument("--dry-run", action="store_true",
                   help="print the commands of the runs still to do")
    args, extra = p.parse_known_args(argv)
    own = [a for a in extra if a.split("=")[0] in OWN_FLAGS]
    if own:
        p.error(f"the sweep sets {', '.join(sorted(set(own)))} itself for each run")
    args.targets = [float(t) for t in args.targets.split(",") if t.strip()]
    if not args.targets or any(not 0.0 <= t < 1.0 for t in args.targets):
        p.error("--targets: a comma list of sparsities in [0, 1)")
    if args.seeds < 1 or args.jobs < 1:
        p.error("--seeds and --jobs must be at least 1")
    recipe = recipes.RECIPES.get(args.data, {})
    ssl = extra[extra.index("--ssl") + 1] if "--ssl" in extra[:-1] else recipe.get("ssl", "tiny")
    if ssl != "tiny" and not args.no_small_dense:      # the small models belong to the tiny family
        p.error("the small dense baseline exists for the tiny model only: add --no-small-dense")
    args.extra = extra
    args.out = args.out or os.path.join("runs", f"sweep_{args.data}")
    return args


# ------------------------------------------------------------------------------ the runs
def small_applies(target):
    """Whether a tiny-family dense model of the pruned model's size exists (not at 0)."""
    if target <= 0:
        return False
    try:
        WavLMConfig.tiny_small(round((1 - target) * tiny_params()))
        return True
    except ValueError:
        return False


_TINY = []


def tiny_params():
    if not _TINY:
        _TINY.append(MaskedWavLM(WavLMConfig.tiny()).num_params())
    return _TINY[0]


def plan(args):
    """[(kind, target, seed)], seed by seed, so that a partial sweep has whole curves."""
    runs = []
    for seed in range(args.seeds):
        for t in args.targets:
            runs.append(("pruned", t, seed))
        if not args.no_small_dense:
            runs += [("small", t, seed) for t in args.targets if small_applies(t)]
    return runs


def run_dir(args, kind, target, seed):
    return os.path.join(args.out, f"{kind}_t{target:g}_seed{seed}")


def command(args, kind, target, seed):
    """The train.py command line of one run (without --resume)."""
    cmd = ["--data", args.data, "--seed", str(seed), "--out", run_dir(args, kind, target, seed),
           "--threads", "1", "--no-progress"]
    if kind == "small":
        cmd += ["--ssl", f"tiny-small:{target:g}"]
    elif target == 0:
        cmd += ["--target", "0", "--prune-units", ""]       # the dense model, no gates
    else:
        cmd += ["--target", f"{target:g}"]
    return cmd + args.extra


def status(args, kind, target, seed):
    """'done', 'resume', 'new'; raises if the folder was made by another command."""
    d = run_dir(args, kind, target, seed)
    meta = os.path.join(d, "sweep.json")
    if os.path.exists(meta):
        with open(meta) as fh:
            before = json.load(fh)["command"]
        if before != command(args, kind, target, seed):
            raise SystemExit(f"error: {d} was made by another command:\n  {' '.join(before)}\n"
                             f"use another --out, or delete the folder to redo it")
    if os.path.exists(os.path.join(d, "report.json")):
        return "done"
    return "resume" if os.path.exists(os.path.join(d, "checkpoint.pt")) else "new"


RUNNING = {}          # pid -> Popen of the train.py processes in flight
STOPPING = []         # set by SIGINT/SIGTERM: start no new run


def stop_runs(signum, frame):
    """Ctrl-C or SIGTERM: pass the signal on to the runs in flight (each finishes its step,
    writes a checkpoint and exits) and start no new one; the same command continues."""
    if not STOPPING:
        print(f"\n{signal.Signals(signum).name}: stopping the runs in flight at a checkpoint; "
              "run the same command again to continue", flush=True)
    STOPPING.append(signum)
    for proc in list(RUNNING.values()):
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)


def execute(args, job):
    """Run (or continue) one train.py process; its output goes to <run>/train.out."""
    kind, target, seed = job
    if STOPPING:
        return job, "not started", 0.0
    state = status(args, kind, target, seed)
    if state == "done":
        return job, "reused", 0.0
    d = run_dir(args, kind, target, seed)
    os.makedirs(d, exist_ok=True)
    cmd = command(args, kind, target, seed)
    with open(os.path.join(d, "sweep.json"), "w") as fh:
        json.dump({"command": cmd}, fh)
    full = [sys.executable, os.path.join(ROOT, "train.py"), *cmd]
    full += ["--resume"] if state == "resume" else []
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    t0 = time.time()
    with open(os.path.join(d, "train.out"), "a") as log:
        log.write(f"$ {' '.join(full)}\n")
        log.flush()
        # A process group of its own: a Ctrl-C reaches the run through stop_runs only, once.
        proc = subprocess.Popen(full, stdout=log, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
        RUNNING[proc.pid] = proc
        code = proc.wait()
        RUNNING.pop(proc.pid)
    took = time.time() - t0
    if code in (130, 143):
        return job, "stopped at a checkpoint", took
    if code != 0:
        return job, f"failed (exit {code}, see {os.path.join(d, 'train.out')})", took
    return job, "resumed" if state == "resume" else "trained", took


# ---------------------------------------------------------------------------- the results
def collect(args):
    """One row per finished run and test set."""
    rows = []
    for kind, target, seed in plan(args):
        path = os.path.join(run_dir(args, kind, target, seed), "report.json")
        if not os.path.exists(path):
            continue
        with open(path) as fh:
            r = json.load(fh)
        # A small model is dense (its own sparsity is 0): count it against the tiny model.
        sparsity = 1 - r["params_after"] / tiny_params() if kind == "small" else r["sparsity"]
        # What survived, per layer (space-separated): which structures pruning removed.
        kept = {key: " ".join(str(int(v)) for v in r["structure"][key]) for key in STRUCTURE}
        for name, m in r["pruned"].items():
            # the real-data headline is the authors' scoring (mean subtraction + AS-norm);
            # the toy's is raw cosine (docs/results.md says why)
            scored = m["asnorm"] if "asnorm" in m and not args.data.startswith("toy") else m
            rows.append(dict(kind=kind, target=target, seed=seed, test_set=name,
                             sparsity=round(sparsity, 4), params=r["params_after"],
                             params_with_head=r.get("params_with_head", ""),
                             eer=scored["eer"], min_dcf=scored["min_dcf"],
                             scoring="asnorm" if scored is not m else "cosine",
                             seconds=r["seconds"], **kept))
    return rows


STRUCTURE = ("conv_channels", "heads", "ffn_units", "attention", "ffn")


def write_csv(rows, path):
    cols = ["kind", "target", "seed", "test_set", "sparsity", "params", "params_with_head",
            "eer", "min_dcf", "scoring", "seconds", *STRUCTURE]
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, cols)
        w.writeheader()
        w.writerows(rows)


def spread(values, how, digits=2):
    """(centre, text) over seeds: 'mean ± std' (sample std) or 'mean (min–max)'."""
    v = np.asarray(values, dtype=float)
    if len(v) == 1:
        return v.mean(), ""
    if how == "std":
        return v.mean(), f" ± {v.std(ddof=1):.{digits}f}"
    return v.mean(), f" ({v.min():.{digits}f}–{v.max():.{digits}f})"


def groups(rows):
    """{(kind, target): {test_set: [rows over seeds]}}, in the order of the sweep."""
    out = {}
    for r in rows:
        out.setdefault((r["kind"], r["target"]), {}).setdefault(r["test_set"], []).append(r)
    return out


def table(rows, how):
    """Markdown, one line per (kind, target): sparsity, params, EER % and minDCF per test set."""
    sets = list(dict.fromkeys(r["test_set"] for r in rows))
    head = "| model | target | sparsity | SSL params | params incl. head | " + " | ".join(
        f"{s} EER % | {s} minDCF" for s in sets) + " | seeds | minutes per run |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    order = sorted(groups(rows).items(), key=lambda kv: (kv[0][1], kv[0][0] != "pruned"))
    for (kind, target), per_set in order:
        first = next(iter(per_set.values()))
        label = "dense (no gates)" if kind == "pruned" and target == 0 else \
            "pruned in situ" if kind == "pruned" else "small dense, from scratch"
        with_head = [r["params_with_head"] for r in first if r["params_with_head"] != ""]
        cells = [label, f"{target:g}", f"{np.mean([r['sparsity'] for r in first]):.4f}",
                 f"{np.mean([r['params'] for r in first]):,.0f}",
                 f"{np.mean(with_head):,.0f}" if with_head else "–"]
        for s in sets:
            rs = per_set.get(s, [])
            if not rs:
                cells += ["–", "–"]
                continue
            m, t = spread([100 * r["eer"] for r in rs], how)
            d, dt = spread([r["min_dcf"] for r in rs], how, digits=3)
            cells += [f"{m:.2f}{t}", f"{d:.3f}{dt}"]
        cells += [str(len(first)), f"{np.mean([r['seconds'] for r in first]) / 60:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    note = ("mean ± sample standard deviation over seeds" if how == "std"
            else "mean (min–max over seeds)")
    scoring = {r["scoring"] for r in rows}
    scored = ("mean subtraction + AS-norm (the authors' scoring)" if scoring == {"asnorm"}
              else "raw cosine" if scoring == {"cosine"} else "mixed scoring")
    return "\n".join(lines) + f"\n\nEER and minDCF: {note}; one value where there is one seed; " \
        f"scores: {scored}. SSL params: the exported WavLM without the back-end head; " \
        "params incl. head: with the pooling head (MHFA), as the paper counts.\n"


def plot(rows, path, data, how):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    sv = not data.startswith("toy_spoof") and not data.startswith("asvspoof")
    fig, (ax, ref) = plt.subplots(1, 2, figsize=(10, 3.8))
    sets = list(dict.fromkeys(r["test_set"] for r in rows))
    for kind, style in (("pruned", "o-"), ("small", "s--")):
        for s in sets if kind == "pruned" else sets[-1:]:
            pts = sorted(((t, rs) for (k, t), per in groups(rows).items() if k == kind
                          for name, rs in per.items() if name == s), key=lambda x: x[0])
            if not pts:
                continue
            x = [np.mean([r["params"] for r in rs]) / 1e3 for _, rs in pts]
            e = [np.asarray([100 * r["eer"] for r in rs]) for _, rs in pts]
            y = [v.mean() for v in e]
            if how == "std":
                err = [v.std(ddof=1) if len(v) > 1 else 0.0 for v in e]
            else:
                err = [[m - v.min() for m, v in zip(y, e)], [v.max() - m for m, v in zip(y, e)]]
            label = f"{s}, pruned in situ" if kind == "pruned" else f"{s}, small dense from scratch"
            ax.errorbar(x, y, yerr=err, fmt=style, capsize=3, label=label)
            for (t, _), xi, yi in zip(pts, x, y):
                ax.annotate(f"{t:g}", (xi, yi), textcoords="offset points", xytext=(3, 4),
                            fontsize=7)
    ax.set_xlabel("SSL parameters (thousands)")
    ax.set_ylabel("EER (%)")
    ax.set_title(f"this library, --data {data} ({'std' if how == 'std' else 'min–max'} "
                 "over seeds)", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    if sv:
        ref.plot([p for _, p, _ in PAPER_SV], [e for _, _, e in PAPER_SV], "o-", color="k")
        for t, p, e in PAPER_SV:
            ref.annotate(f"{t:g}", (p, e), textcoords="offset points", xytext=(3, 4), fontsize=7)
        ref.set_xlabel("parameters incl. MHFA (millions)")
        ref.set_title("paper: WavLM Base+ on VoxCeleb, Vox1-O", fontsize=9)
    else:
        ref.plot([t for t, _, _ in PAPER_CM], [e for _, _, e in PAPER_CM], "o", color="k")
        ref.set_xlim(-0.05, 1)
        ref.set_xlabel("sparsity")
        ref.set_title("paper: WavLM Base, ASVspoof5 eval (only 10% reported)", fontsize=9)
    ref.set_ylabel("EER (%)")
    ref.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def summarise(args):
    rows = collect(args)
    if not rows:
        print("no finished runs yet")
        return rows
    os.makedirs(args.out, exist_ok=True)
    write_csv(rows, os.path.join(args.out, "results.csv"))
    md = table(rows, args.spread)
    with open(os.path.join(args.out, "results.md"), "w") as fh:
        fh.write(md)
    plot(rows, os.path.join(args.out, "eer_vs_params.png"), args.data, args.spread)
    print(md)
    print(f"written: {args.out}/results.csv, results.md, eer_vs_params.png")
    return rows


def main(argv=None):
    args = parse_args(argv)
    runs = plan(args)
    if not args.report_only:
        todo = [(job, status(args, *job)) for job in runs]
        todo = [(job, s) for job, s in todo if s != "done"]
        print(f"{len(runs)} runs in {args.out}: {len(runs) - len(todo)} finished, "
              f"{len(todo)} to do, {args.jobs} at a time")
        if args.dry_run:
            for job, s in todo:
                print("python train.py " + " ".join(command(args, *job))
                      + (" --resume" if s == "resume" else ""))
            return 0
        t0, failed = time.time(), 0
        signal.signal(signal.SIGINT, stop_runs)
        signal.signal(signal.SIGTERM, stop_runs)
        with ThreadPoolExecutor(args.jobs) as pool:
            for (kind, target, seed), what, took in pool.map(lambda j: execute(args, j[0]), todo):
                failed += what.startswith("failed")
                if what == "not started":
                    continue
                print(f"{kind} t={target:g} seed={seed}: {what} ({took:.0f} s, "
                      f"{time.time() - t0:.0f} s so far)", flush=True)
        if failed:
            print(f"{failed} run(s) failed; run the same command again to retry them")
        if STOPPING:
            print("stopped; run the same command again to continue")
    summarise(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
