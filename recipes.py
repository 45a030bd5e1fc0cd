"""
The training recipes and the command line of train.py: each --data brings the defaults
of its recipe, and every flag the user gives overrides one of them.

The real-data recipes are the seed paper's (Peng et al. 2025, "Hybrid Pruning",
arXiv 2508.16232, Sec. 3; docs/method.md Sec. 1): WavLM Base+ with MHFA and AAM-softmax
on VoxCeleb for speaker verification, WavLM Base on ASVspoof5 for anti-spoofing. The toy
recipes train a tiny random WavLM on the offline toy corpora, on a CPU, in minutes.
Arguments are checked here, before any data is touched, so that a typo costs no time.
"""

import argparse
import os

import pretrained
from wavlm_masked import PRUNE_UNITS

DESCRIPTION = """Single-stage in-situ pruning: fine-tune a WavLM for a downstream task while
its HardConcrete gates learn what to remove, then cut the model down.

  python train.py --data toy --target 0.7                    # offline, CPU, minutes
  python train.py --data vox2 --data-root /data --target 0.7 # the paper's SV setting
  torchrun --nproc_per_node=8 train.py --data vox2 ...       # multi-GPU (DDP)
  python train.py ... --resume                               # continue in --out"""

# ----------------------------------------------------------------------------- recipes
# Each --data brings the defaults of the paper's recipe for its task (docs/method.md
# Sec. 1). The toy recipes train a tiny WavLM from scratch on CPU: from random weights
# there is nothing to protect, so the SSL gradient is not scaled down and the lr is high.
SV_RECIPE = dict(task="sv", ssl="wavlm_base_plus", epochs=12, steps=None, lr=1e-4, final_lr=1e-6,
                 lr_warmup_epochs=2, weight_decay=1e-7, reg_lr=0.05, grad_mult=0.1,
                 sparsity_warmup=5.0, aug_prob=0.6, batch_size=128, crop_seconds=3.0,
                 head="mhfa", aam_scale=32.0, aam_margin=0.2, sub_centers=3, inter_topk=5,
                 inter_penalty=0.06, freeze_ssl_steps=0, eval_every=2000,
                 mhfa_heads=32, mhfa_compression=128, sparsity_schedule="linear", settle_frac=0.05)
CM_RECIPE = dict(SV_RECIPE, ssl="wavlm_base", epochs=5, lr=5e-6, final_lr=1e-7, lr_warmup_epochs=0,
                 grad_mult=0.01, sparsity_warmup=1.0, batch_size=64, aug_prob=0.8)
TOY = dict(ssl="tiny", epochs=None, steps=1200, lr=2e-3, final_lr=1e-4, lr_warmup_epochs=2.0,
           reg_lr=0.1, grad_mult=1.0, batch_size=16, crop_seconds=2.0, sparsity_warmup=None,
           eval_every=300, mhfa_heads=8, mhfa_compression=64)
RECIPES = {
    # Gates that close overshoot (Adam momentum) and reopen slowly, and one head of the
    # tiny model is 1.8% of it: a cosine warm-up over the first 30% arrives gently and
    # leaves 70% of the run to settle on the target; a reg lr of 0.1 (not 0.05) lets
    # gates and multipliers settle within the short run.
    "toy": dict(SV_RECIPE, **TOY, sparsity_warmup_frac=0.3, sparsity_schedule="cosine"),
    "toy_spoof": dict(CM_RECIPE, **TOY, sparsity_warmup_frac=0.3, sparsity_schedule="cosine"),
    "vox1": dict(SV_RECIPE), "vox2": dict(SV_RECIPE),
    "asvspoof5": dict(CM_RECIPE), "asvspoof2019": dict(CM_RECIPE),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="train.py", description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, choices=sorted(RECIPES))
    p.add_argument("--data-root", help="dataset folder (required for real data)")
    p.add_argument("--vox1-root",
                   help="VoxCeleb1 folder for --data vox2 evaluation (default: see data.py)")
    p.add_argument("--cache-dir", help="where the toy corpora are generated")
    p.add_argument("--toy-seed", type=int, default=0,
                   help="which toy corpus (fixed apart from --seed, so runs stay comparable)")
    p.add_argument("--toy-size", choices=["default", "tiny"], default="default",
                   help="'tiny' makes a toy corpus of a few files, for smoke tests")
    p.add_argument("--train-speakers", type=int,
                   help="SV: train on the first N training speakers only (a low-resource "
                        "experiment); evaluation is unchanged")
    p.add_argument("--ssl", help="'tiny', 'tiny-small:S' (a dense tiny-family model with as "
                                 "many parameters as the tiny model pruned to sparsity S, trained "
                                 "from scratch without gates), a short name (wavlm_base_plus, ...) "
                                 "or a checkpoint path")
    p.add_argument("--target", type=float,
                   help="target sparsity of the SSL model, in [0, 1) (default 0.7; 0 with "
                        "--ssl tiny-small:S)")
    p.add_argument("--prune-units",
                   help=f"comma list from {PRUNE_UNITS} (default: all; none with --ssl "
                        "tiny-small:S)")
    p.add_argument("--sparsity-warmup", type=float,
                   help="epochs over which the target rises from 0")
    p.add_argument("--sparsity-schedule", choices=["linear", "cosine"], help="target warm-up shape")
    p.add_argument("--settle-frac", type=float,
                   help="share of the steps, at the end, that fine-tune the final structure: "
                        "the gates are set to the exact target, then frozen (0 = no settle phase)")
    p.add_argument("--size-estimate", choices=["deployed", "expected"], default="deployed",
                   help="size in s_hat: the exported size with the expectation's gradient "
                        "(default), or the paper's plain expectation (see model_size)")
    p.add_argument("--steps", type=int, help="total optimisation steps (overrides --epochs)")
    p.add_argument("--epochs", type=float)
    p.add_argument("--batch-size", type=int, help="per process")
    p.add_argument("--lr", type=float)
    p.add_argument("--final-lr", type=float)
    p.add_argument("--lr-warmup-epochs", type=float, help="linear lr warm-up (epochs)")
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--reg-lr", type=float, help="lr of the gate logits and of the lambdas")
    p.add_argument("--grad-mult", type=float, help="gradient multiplier on the SSL features")
    p.add_argument("--head", choices=["mhfa", "asp"])
    p.add_argument("--mhfa-heads", type=int, help="MHFA attention heads (paper: 32)")
    p.add_argument("--mhfa-compression", type=int, help="MHFA compression dim (paper: 128)")
    p.add_argument("--freeze-ssl-steps", type=int,
                   help="train only the head for this many steps first")
    p.add_argument("--crop-seconds", type=float)
    p.add_argument("--musan", help="MUSAN folder for noise augmentation")
    p.add_argument("--rir", help="RIR folder for reverberation")
    p.add_argument("--aug-prob", type=float, help="share of crops that --musan/--rir augment")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--amp", choices=["none", "bf16"], default="none", help="bf16 autocast (CUDA)")
    p.add_argument("--out", default=None, help="output folder (default runs/<data>_t<target>)")
    p.add_argument("--save-every", type=int, default=200, help="checkpoint every N steps")
    p.add_argument("--save-minutes", type=float, default=5.0, help="... and every N minutes")
    p.add_argument("--eval-every", type=int, help="evaluate every N steps (0 = only at the end)")
    p.add_argument("--resume", action="store_true", help="continue from <out>/checkpoint.pt")
    p.add_argument("--re-export", action="store_true",
                   help="with --resume on a finished run: evaluate, prune and export again")
    p.add_argument("--skip-bad-files", action="store_true",
                   help="leave out unreadable or too-short audio files (listed in config.json)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-workers", type=int, default=1, help="data-loading processes")
    p.add_argument("--threads", type=int, help="torch compute threads (default: one per core); "
                                                 "use 1 when several jobs share the machine")
    p.add_argument("--grad-clip", type=float, default=5.0)
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")
    args = p.parse_args(argv)

    recipe = RECIPES[args.data]
    for key, value in recipe.items():                  # fill what the user did not set
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    small = small_sparsity(args.ssl)
    if small is False:
        p.error(f"--ssl {args.ssl}: write tiny-small:S with a sparsity S in (0, 1), "
                "e.g. tiny-small:0.7")
    if small is not None:                      # the small dense baseline: nothing to prune
        if args.target not in (None, 0.0) or (args.prune_units or "").strip(","):
            p.error(f"--ssl {args.ssl} trains a dense model without gates: leave out --target "
                    "and --prune-units (or pass --target 0 --prune-units '')")
        args.target, args.prune_units = 0.0, ""
    if args.target is None:
        args.target = 0.7
    if args.prune_units is None:
        args.prune_units = ",".join(PRUNE_UNITS)
    if not 0.0 <= args.target < 1.0:
        p.error(f"--target must lie in [0, 1), got {args.target}")
    units = [u for u in args.prune_units.split(",") if u]
    bad = [u for u in units if u not in PRUNE_UNITS]
    if bad:
        p.error(f"--prune-units: unknown unit(s) {bad}; choose from {','.join(PRUNE_UNITS)}")
    args.prune_units = units
    if not args.data.startswith("toy") and not args.data_root:
        p.error(f"--data {args.data} needs --data-root pointing to the dataset folder (see README)")
    if args.data_root and not os.path.isdir(args.data_root):
        p.error(f"--data-root {args.data_root}: no such folder")
    if args.steps is None and args.epochs is None:
        p.error("give --steps or --epochs")
    if ((args.steps is not None and args.steps < 1)
            or (args.batch_size is not None and args.batch_size < 1)):
        p.error("--steps and --batch-size must be at least 1")
    if not 0.0 <= args.settle_frac < 0.5:
        p.error(f"--settle-frac must lie in [0, 0.5), got {args.settle_frac}")
    if (small is None and args.ssl not in ("tiny", *pretrained.PRETRAINED_FILES)
            and not os.path.exists(args.ssl)):
        p.error(f"--ssl {args.ssl}: no such file or folder, and not one of "
                f"tiny, tiny-small:S, {', '.join(pretrained.PRETRAINED_FILES)}")
    if args.re_export and not args.resume:
        p.error("--re-export goes with --resume")
    if args.out is None:
        args.out = os.path.join("runs", f"{args.data}_small{small:g}" if small is not None
                                else f"{args.data}_t{args.target:g}")
    return args


def small_sparsity(ssl):
    """For --ssl tiny-small:S, the sparsity S whose size the small dense model matches;
    None for any other --ssl, False for a malformed tiny-small name."""
    if not isinstance(ssl, str) or not ssl.startswith("tiny-small"):
        return None
    try:
        s = float(ssl.split(":", 1)[1])
    except (IndexError, ValueError):
        return False
    return s if 0.0 < s < 1.0 else False
