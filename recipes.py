"""
The training recipes and the command line of train.py: each --data brings the defaults
of its recipe, and every flag the user gives overrides one of them.

The real-data recipes are the authors' released configurations of the seed paper (Peng
et al. 2025, "Hybrid Pruning", arXiv 2508.16232, Sec. 3): WavLM Base+ with MHFA and
AAM-softmax on VoxCeleb for speaker verification, WavLM Base with MHFA and a 2-class
softmax on ASVspoof5 for anti-spoofing. docs/method.md Sec. 1 lists every value beside
the authors' config file and key, and tests/test_recipes.py pins this file to that table.
The toy recipes train a tiny random WavLM on the offline toy corpora, on a CPU, in minutes.

One declaration per setting: a recipe's value lives in RECIPES, and the flag that
overrides it is declared once, in `recipe_flags`, with RECIPES[data] as its default;
`--help` lists each recipe's value. Arguments are checked here, before any data is
touched, so that a typo costs no time.
"""

import argparse
import math
import os
from dataclasses import dataclass

import pretrained
from pretrained import small_sparsity
from wavlm_masked import PRUNE_UNITS

DESCRIPTION = """Single-stage in-situ pruning: fine-tune a WavLM for a downstream task while
its HardConcrete gates learn what to remove, then cut the model down.

  python train.py --data toy --target 0.7                    # offline, CPU, minutes
  python train.py --data vox2 --data-root /data --target 0.7 # the paper's SV setting
  torchrun --nproc_per_node=8 train.py --data vox2 ...       # multi-GPU (DDP)
  python train.py ... --resume                               # continue in --out

`python train.py --data X --help` shows recipe X's defaults."""

# ----------------------------------------------------------------------------- recipes
# SV: wespeaker_hubert (branch dev_pruning), examples/voxceleb/v4_ssl_pruning/conf/
# training_purning/MHFA_WavLM_Base_Plus-ft-s70-2.yaml and run_wavlm_pruning.sh.
SV_RECIPE = dict(
    ssl="wavlm_base_plus", target=0.7, epochs=12.0, steps=None, batch_size=128, crop_seconds=3.0,
    lr=1e-4, final_lr=1e-6, lr_warmup_epochs=2.0, lr_schedule="warmup-times-decay",
    lr_scale_batch=64, frontend_lr_ratio=1.0, weight_decay=0.0, grad_clip=0.0, grad_mult=0.1,
    reg_lr=0.05,
    head="mhfa", mhfa_heads=32, mhfa_compression=128,
    aam_scale=32.0, aam_margin=0.2, margin_warmup=0.0, sub_centers=3, inter_topk=5,
    inter_penalty=0.06,
    sparsity_warmup=5.0, sparsity_warmup_frac=None, sparsity_schedule="linear", settle_frac=0.05,
    average_last=1, aug_prob=0.6, freeze_ssl_steps=0, eval_every=2000)
# CM: wedefense, egs/detection/asvspoof5/v15_ssl_mhfa_pruning/conf/
# MHFA_wavlmbase_pruning_s10.yaml, the configuration of the paper's 3.758% eval EER.
CM_RECIPE = dict(
    SV_RECIPE, ssl="wavlm_base", target=0.1, epochs=5.0, batch_size=16,
    lr=5e-4, final_lr=5e-5, frontend_lr_ratio=0.05, weight_decay=1e-4, grad_clip=3.0,
    grad_mult=1.0, sparsity_schedule="cosine", average_last=2, aug_prob=0.8)
# The toy recipes (tuned on the toy corpora; not the authors'): from random weights there
# is nothing to protect, so the SSL gradient is not scaled down and the lr is high. Gates
# that close overshoot (Adam momentum) and reopen slowly, and one head of the tiny model
# is 1.8% of it: a cosine target warm-up over the first 30% of the steps arrives gently
# and leaves 70% of the run to settle; a reg lr of 0.1 (not 0.05) lets gates and
# multipliers settle within the short run. With random embeddings a full AAM margin
# stalls training, so it ramps up over the first 25% of the steps. No lr scaling: the
# lr was tuned for batch 16 as it stands.
TOY = dict(
    ssl="tiny", epochs=None, steps=1200, batch_size=16, crop_seconds=2.0,
    lr=2e-3, final_lr=1e-4, lr_warmup_epochs=2.0, lr_schedule="warmup-then-decay",
    lr_scale_batch=0, frontend_lr_ratio=1.0, weight_decay=1e-7, grad_clip=5.0, grad_mult=1.0,
    reg_lr=0.1, mhfa_heads=8, mhfa_compression=64,
    margin_warmup=0.25, sparsity_warmup=None, sparsity_warmup_frac=0.3,
    sparsity_schedule="cosine", average_last=1, eval_every=300)
RECIPES = {
    "toy": dict(SV_RECIPE, **TOY),
    "toy_spoof": dict(CM_RECIPE, **TOY, target=0.7),
    "vox1": dict(SV_RECIPE), "vox2": dict(SV_RECIPE),
    "asvspoof5": dict(CM_RECIPE), "asvspoof2019": dict(CM_RECIPE),
}


def recipe_values(key) -> str:
    """'toy, toy_spoof: 0.002; vox1, vox2: 0.0001; ...': every recipe's value of a setting."""
    groups = {}
    for name, recipe in RECIPES.items():
        groups.setdefault(repr(recipe[key]), []).append(name)
    if len(groups) == 1:
        return f"[all recipes: {next(iter(groups))}]"
    return "[" + "; ".join(f"{', '.join(names)}: {value}" for value, names in groups.items()) + "]"


def recipe_flags(p, recipe):
    """Every setting a recipe gives, as a flag whose default is the chosen recipe's value
    (None while --data is unknown: then --help lists all recipes)."""
    def flag(key, help, **kw):
        p.add_argument("--" + key.replace("_", "-"), default=recipe.get(key),
                       help=f"{help} {recipe_values(key)}", **kw)
    flag("ssl", "'tiny', 'tiny-small:S' (a dense tiny-family model with as many parameters as "
                "the tiny model pruned to sparsity S, trained from scratch without gates), a "
                "short name (wavlm_base_plus, ...) or a checkpoint path")
    flag("target", "target sparsity of the SSL model, in [0, 1) (0 with --ssl tiny-small:S)",
         type=float)
    flag("steps", "total optimisation steps (overrides --epochs)", type=int)
    flag("epochs", "passes over the training set", type=float)
    flag("batch_size", "crops per process (the global batch is this x processes)", type=int)
    flag("crop_seconds", "length of the random training crops", type=float)
    flag("lr", "base learning rate at the end of the warm-up, before scaling by the batch",
         type=float)
    flag("final_lr", "base learning rate at the end (exponential decay)", type=float)
    flag("lr_warmup_epochs", "lr warm-up from zero (epochs)", type=float)
    flag("lr_schedule", "the lr curve: the authors' ramp times exponential decay, or a ramp "
                        "to --lr, then the decay (see recipes.lr_at)",
         choices=["warmup-times-decay", "warmup-then-decay"])
    flag("lr_scale_batch", "the global batch the lrs are given for: both are multiplied by "
                           "processes x --batch-size / this (the authors' rule); 0 = no scaling",
         type=int)
    flag("frontend_lr_ratio", "the SSL model's weights train at this share of the lr (not its "
                              "gates)", type=float)
    flag("weight_decay", "AdamW weight decay of the SSL model and the head", type=float)
    flag("grad_clip", "clip the gradient norm of the model and gates to this (0 = no clipping)",
         type=float)
    flag("grad_mult", "gradient multiplier on the SSL features", type=float)
    flag("reg_lr", "constant lr of the gate logits and of the multipliers", type=float)
    flag("head", "pooling head", choices=["mhfa", "asp"])
    flag("mhfa_heads", "MHFA attention heads", type=int)
    flag("mhfa_compression", "MHFA compression dim", type=int)
    flag("aam_scale", "AAM-softmax scale (SV)", type=float)
    flag("aam_margin", "AAM-softmax margin (SV)", type=float)
    flag("margin_warmup", "share of the steps over which the margin ramps up from 0 (SV)",
         type=float)
    flag("sub_centers", "AAM-softmax sub-centres per speaker (SV)", type=int)
    flag("inter_topk", "inter-top-k: the hardest other speakers penalised (SV)", type=int)
    flag("inter_penalty", "inter-top-k extra margin (SV)", type=float)
    flag("sparsity_warmup", "epochs over which the target rises from 0", type=float)
    flag("sparsity_warmup_frac", "... or the share of the steps it takes, when "
                                 "--sparsity-warmup is not given", type=float)
    flag("sparsity_schedule", "target warm-up shape", choices=["linear", "cosine"])
    flag("settle_frac", "share of the steps, at the end, that fine-tune the final structure: "
                        "the gates are set to the exact target, then frozen (0 = no settle phase)",
         type=float)
    flag("average_last", "export the average of this many snapshots of the weights, evenly "
                         "spaced over the settle phase (1 = the last weights)", type=int)
    flag("aug_prob", "share of crops that --musan/--rir augment", type=float)
    flag("freeze_ssl_steps", "train only the head for this many steps first", type=int)
    flag("eval_every", "evaluate every N steps (0 = only at the end)", type=int)


def run_flags(p):
    """Where the data is, where the run goes, and how it runs: the same for every recipe."""
    p.add_argument("--data-root", help="dataset folder (required for real data)")
    p.add_argument("--vox1-root",
                   help="VoxCeleb1 folder for --data vox2 evaluation (default: see data.py)")
    p.add_argument("--cache-dir", help="where the toy corpora are generated")
    p.add_argument("--toy-seed", type=int, default=0,
                   help="which toy corpus (fixed apart from --seed, so runs stay comparable)")
    p.add_argument("--toy-size", choices=["default", "tiny"], default="default",
                   help=argparse.SUPPRESS)    # "tiny": a few files, for the tests' smoke runs
    p.add_argument("--train-speakers", type=int,
                   help="SV: train on the first N training speakers only (a low-resource "
                        "experiment); evaluation is unchanged")
    p.add_argument("--prune-units", default=None,
                   help=f"comma list from {PRUNE_UNITS} (default: all; none with --ssl "
                        "tiny-small:S)")
    p.add_argument("--size-estimate", choices=["deployed", "expected"], default="deployed",
                   help="size in s_hat: the exported size with the expectation's gradient "
                        "(default), or the paper's plain expectation (see train.model_size)")
    p.add_argument("--musan", help="MUSAN folder for noise augmentation")
    p.add_argument("--rir", help="RIR folder for reverberation")
    p.add_argument("--reverb-on", choices=["auto", "workers", "device"], default="auto",
                   help="where --rir's convolutions run: in the loader workers, or batched "
                        "on the training device (auto: the device if it is a GPU, where it "
                        "frees most of a worker's time; docs/performance.md)")
    p.add_argument("--cohort-utts", type=int, default=4,
                   help="SV: utterances per training speaker embedded for the AS-norm cohort "
                        "and the mean embedding (0 = raw cosine only)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--amp", choices=["none", "bf16"], default="none", help="bf16 autocast (CUDA)")
    p.add_argument("--out", default=None, help="output folder (default runs/<data>_t<target>)")
    p.add_argument("--save-every", type=int, default=200, help="checkpoint every N steps")
    p.add_argument("--save-minutes", type=float, default=5.0, help="... and every N minutes")
    p.add_argument("--resume", action="store_true", help="continue from <out>/checkpoint.pt")
    p.add_argument("--re-export", action="store_true",
                   help="with --resume on a finished run: evaluate, prune and export again")
    p.add_argument("--skip-bad-files", action="store_true",
                   help="leave out unreadable or too-short audio files (listed in config.json)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-workers", type=int, default=None,
                   help="data-loading processes per training process (default: 6 on a GPU, "
                        "what benchmarks/bench_loader.py measures one needs with the SV "
                        "augmentation, at most the cores per process less one; 1 on a CPU)")
    p.add_argument("--threads", type=int, help="torch compute threads (default: one per core); "
                                                 "use 1 when several jobs share the machine")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")


def build_parser(data=None):
    p = argparse.ArgumentParser(prog="train.py", description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, choices=sorted(RECIPES))
    recipe_flags(p, RECIPES.get(data, {}))
    run_flags(p)
    return p


def parse_args(argv=None):
    """Two passes: --data first, then every flag with that recipe's defaults."""
    first = argparse.ArgumentParser(add_help=False)
    first.add_argument("--data")
    data = first.parse_known_args(argv)[0].data
    p = build_parser(data)
    args = p.parse_args(argv)
    resolve_small_model(p, args)
    check_args(p, args)
    if args.out is None:
        small = small_sparsity(args.ssl)
        args.out = os.path.join("runs", f"{args.data}_small{small:g}" if small is not None
                                else f"{args.data}_t{args.target:g}")
    return args


def resolve_small_model(p, args):
    """--ssl tiny-small:S trains a dense model without gates: no target, no units to prune."""
    small = small_sparsity(args.ssl)
    if small is False:
        p.error(f"--ssl {args.ssl}: write tiny-small:S with a sparsity S in (0, 1), "
                "e.g. tiny-small:0.7")
    given_target = args.target != RECIPES[args.data]["target"]
    if small is not None:
        if (given_target and args.target != 0.0) or (args.prune_units or "").strip(","):
            p.error(f"--ssl {args.ssl} trains a dense model without gates: leave out --target "
                    "and --prune-units (or pass --target 0 --prune-units '')")
        args.target, args.prune_units = 0.0, ""
    if args.prune_units is None:
        args.prune_units = ",".join(PRUNE_UNITS)
    units = [u for u in args.prune_units.split(",") if u]
    bad = [u for u in units if u not in PRUNE_UNITS]
    if bad:
        p.error(f"--prune-units: unknown unit(s) {bad}; choose from {','.join(PRUNE_UNITS)}")
    args.prune_units = units


def check_args(p, args):
    """Every mistake that can be seen in the command line alone, as one `error:` line."""
    if not 0.0 <= args.target < 1.0:
        p.error(f"--target must lie in [0, 1), got {args.target}")
    if not args.data.startswith("toy") and not args.data_root:
        p.error(f"--data {args.data} needs --data-root pointing to the dataset folder "
                "(see docs/real_data.md)")
    if args.data_root and not os.path.isdir(args.data_root):
        p.error(f"--data-root {args.data_root}: no such folder")
    if args.steps is None and args.epochs is None:
        p.error("give --steps or --epochs")
    if ((args.steps is not None and args.steps < 1)
            or (args.batch_size is not None and args.batch_size < 1)):
        p.error("--steps and --batch-size must be at least 1")
    if not 0.0 <= args.settle_frac < 0.5:
        p.error(f"--settle-frac must lie in [0, 0.5), got {args.settle_frac}")
    if args.average_last < 1:
        p.error(f"--average-last must be at least 1 (1 = no averaging), got {args.average_last}")
    if args.average_last > 1 and args.settle_frac == 0:
        p.error("--average-last averages snapshots of the settle phase, where the structure is "
                "fixed: give --settle-frac > 0, or --average-last 1")
    if args.sparsity_warmup is None and args.sparsity_warmup_frac is None:
        p.error("give --sparsity-warmup (epochs) or --sparsity-warmup-frac (share of the steps)")
    if not 0.0 <= args.margin_warmup <= 1.0:
        p.error(f"--margin-warmup must lie in [0, 1], got {args.margin_warmup}")
    if args.lr_scale_batch < 0 or args.frontend_lr_ratio < 0:
        p.error("--lr-scale-batch and --frontend-lr-ratio must not be negative")
    if (small_sparsity(args.ssl) is None and args.ssl not in ("tiny", *pretrained.PRETRAINED_FILES)
            and not os.path.exists(args.ssl)):
        p.error(f"--ssl {args.ssl}: no such file or folder, and not one of "
                f"tiny, tiny-small:S, {', '.join(pretrained.PRETRAINED_FILES)}")
    if args.re_export and not args.resume:
        p.error("--re-export goes with --resume")


# ---------------------------------------------------------------------------- schedule
# What a recipe means step by step, once the data size and the number of processes are
# known: the learning rate, the target warm-up, the settle phase and the snapshots.
def target_at(step, warmup_steps, target, schedule="linear"):
    """Target sparsity t at a step: from 0 to `target` over `warmup_steps`, then flat."""
    if warmup_steps <= 0 or step >= warmup_steps:
        return target
    frac = step / warmup_steps
    if schedule == "cosine":
        frac = 0.5 * (1.0 - math.cos(math.pi * frac))
    return target * frac


def lr_scale(args, world: int) -> float:
    """The authors' rule (wespeaker and wedefense train.py): every lr of the schedule, peak
    and final, is multiplied by world_size x batch_size / 64, so that the lr grows with the
    global batch. 1 when scaling is off (--lr-scale-batch 0)."""
    if not args.lr_scale_batch:
        return 1.0
    return world * args.batch_size / args.lr_scale_batch


def lr_at(step, warmup_steps, total_steps, lr, final_lr, shape):
    """The base learning rate at a step, before the batch scaling (recipes.lr_scale).

    "warmup-times-decay", the authors' ExponentialDecrease with warm_from_zero (wespeaker
    and wedefense schedulers.py): lr * min(step / W, 1) * (final_lr / lr) ** (step / T).
    The decay runs from step 0 and the ramp multiplies it, so the peak, at step W, is
    lr * (final_lr / lr) ** (W / T): 0.46 lr for the SV recipe (W / T = 1/6).
    "warmup-then-decay" (the toy recipes): a linear ramp up to lr, then the decay from lr
    to final_lr over the remaining steps."""
    if shape == "warmup-times-decay":
        ramp = min(1.0, step / warmup_steps) if warmup_steps > 0 else 1.0
        return lr * ramp * (final_lr / lr) ** (step / total_steps)
    if step < warmup_steps:
        return lr * ((step + 1) / warmup_steps)    # the ramp factor first: the toy
                                                    # recipes' numbers were made so
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return lr * (final_lr / lr) ** min(1.0, progress)


MIN_STEPS_AT_TARGET = 100     # steps for the multipliers to damp their oscillation (toy runs)


@dataclass
class Schedule:
    steps_per_epoch: int
    total_steps: int               # optimisation steps
    lr_warmup_steps: int           # steps over which the lr rises from 0
    lr_scale: float                # the authors' batch scaling of every lr (recipes.lr_scale)
    sparsity_warmup_steps: int     # steps over which the target sparsity rises from 0
    settle_start: int              # from this step on, the structure is fixed (settle)
    snapshot_steps: list           # weights averaged for the export (the last is the end)


def snapshot_steps(settle_start: int, total: int, n: int) -> list:
    """The steps at which `n` weight snapshots are taken for averaging: evenly spaced over
    the settle phase, the last one at the final step. Inside the settle phase the gates
    are frozen, so every snapshot has the same structure and their average does too.
    (The authors average the last two epoch checkpoints while the gates still move, and
    average the gate logits with the rest.)"""
    if n <= 1:
        return [total]
    steps = [settle_start + round((total - settle_start) * k / n) for k in range(1, n + 1)]
    if len(set(steps)) < n or steps[0] <= settle_start:
        raise ValueError(f"the settle phase has {total - settle_start} steps, too few for "
                         f"{n} snapshots; lower --average-last or raise --settle-frac")
    return steps


def make_schedule(args, num_items, world) -> Schedule:
    """Steps from the recipe; a schedule the data cannot feed is an error, not a hang."""
    global_batch = args.batch_size * world
    if num_items < global_batch:
        raise ValueError(f"the training set has {num_items} files, fewer than one batch "
                         f"(--batch-size {args.batch_size} x {world} process(es) = "
                         f"{global_batch}); lower --batch-size to at most {num_items // world} "
                         f"or add data")
    per_epoch = num_items // global_batch
    total = args.steps or int(round(args.epochs * per_epoch))
    if total < 1:
        raise ValueError(f"--epochs {args.epochs} is less than one step ({per_epoch} steps "
                         f"per epoch); pass more --epochs or --steps")
    warmup = (int(round(args.sparsity_warmup * per_epoch)) if args.sparsity_warmup is not None
              else int(round(args.sparsity_warmup_frac * total)))
    settle_start = (total - max(1, int(round(args.settle_frac * total)))
                    if args.settle_frac > 0 else total)
    return Schedule(per_epoch, total, int(args.lr_warmup_epochs * per_epoch),
                    lr_scale(args, world), warmup, settle_start,
                    snapshot_steps(settle_start, total, args.average_last))


def schedule_notes(args, sched, step):
    """Say at start what the lr will be, and when the gates get too little time at the
    final target."""
    if step:
        return
    peak = max(lr_at(s, sched.lr_warmup_steps, sched.total_steps, args.lr, args.final_lr,
                     args.lr_schedule) for s in range(sched.lr_warmup_steps + 1))
    print(f"lr: {args.lr:g} x {sched.lr_scale:g} (batch scaling) = {args.lr * sched.lr_scale:g}; "
          f"the schedule peaks at {peak * sched.lr_scale:.3g} and ends at "
          f"{args.final_lr * sched.lr_scale:.3g} (SSL weights x{args.frontend_lr_ratio:g})")
    at_target = sched.settle_start - min(sched.sparsity_warmup_steps, sched.settle_start)
    if args.target > 0 and at_target < max(MIN_STEPS_AT_TARGET, 0.2 * sched.total_steps):
        print(f"note: the gates train at the final target for only {at_target} of "
              f"{sched.total_steps} steps (warm-up {sched.sparsity_warmup_steps}, "
              f"settle from step {sched.settle_start}); the settle phase still "
              f"exports exactly the target size, but more is cut by rule than learned. Pass more "
              f"--steps, or a shorter --sparsity-warmup.")
