"""
Single-stage in-situ pruning: fine-tune a WavLM for a downstream task while its
HardConcrete gates learn what to remove, then cut the model down. No distillation.

Peng et al. 2025, "Hybrid Pruning: In-Situ Compression of Self-Supervised Speech
Models for Speaker Verification and Anti-Spoofing", arXiv 2508.16232, Sec. 2:

    L = L_task + lambda1 * (t - s_hat) + lambda2 * (t - s_hat)^2          (1)
    s_hat = 1 - E[#params(gates)] / #params_0                                (2)

The model and gates MINIMISE L; the multipliers lambda1, lambda2 MAXIMISE it
(gradient ascent), a min-max game that settles where s_hat = t. The paper writes the
linear term as lambda1 * (s_hat - t); we write it with the opposite sign so that the
recipe's clamp lambda1 >= 0 has its meaning: lambda1 is the *price per unit of missing
sparsity*. While the model is too big (s_hat < t) the price rises and pushes gates
shut; once the target is met it decays to 0. (With the paper's sign and no clamp the
two forms are the same game; lambda2's quadratic term is identical in both.)

The target t warms up from 0 (so the model first adapts to the task) on a linear or
cosine schedule. Gate logits get their own constant learning rate.

Usage:
    python train.py --data toy --target 0.7                    # offline, CPU, minutes
    python train.py --data vox2 --data-root /data --target 0.7 # the paper's SV setting
    torchrun --nproc_per_node=8 train.py --data vox2 ...       # multi-GPU (DDP)
    python train.py ... --resume                               # continue in --out
"""

import argparse
import json
import math
import os
import sys
import time
from dataclasses import replace

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
from torch.utils.data import DataLoader

import data as datasets
import evaluate
import heads
import pretrained
import wavlm_masked
from wavlm_masked import PRUNE_UNITS, MaskedWavLM, WavLMConfig

# ----------------------------------------------------------------------------- recipes
# Each --data brings the defaults of the paper's recipe for its task (REFERENCE.md
# Sec. 1). The toy recipes train a tiny WavLM from scratch on CPU: from random weights
# there is nothing to protect, so the SSL gradient is not scaled down and the lr is high.
SV_RECIPE = dict(task="sv", ssl="wavlm_base_plus", epochs=12, steps=None, lr=1e-4, final_lr=1e-6,
                 lr_warmup_epochs=2, weight_decay=1e-7, reg_lr=0.05, grad_mult=0.1, sparsity_warmup=5.0,
                 batch_size=128, crop_seconds=3.0, head="mhfa", aam_scale=32.0, aam_margin=0.2,
                 sub_centers=3, inter_topk=5, inter_penalty=0.06, freeze_ssl_steps=0, eval_every=2000,
                 mhfa_heads=32, mhfa_compression=128, sparsity_schedule="linear")
CM_RECIPE = dict(SV_RECIPE, ssl="wavlm_base", epochs=5, lr=5e-6, final_lr=1e-7, lr_warmup_epochs=0,
                 grad_mult=0.01, sparsity_warmup=1.0, batch_size=64)
TOY = dict(ssl="tiny", epochs=None, steps=1200, lr=2e-3, final_lr=1e-4, lr_warmup_epochs=2.0, reg_lr=0.1,
           grad_mult=1.0, batch_size=16, crop_seconds=2.0, sparsity_warmup=None, eval_every=300,
           mhfa_heads=8, mhfa_compression=64)
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
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, choices=sorted(RECIPES))
    p.add_argument("--data-root", help="dataset folder (required for real data)")
    p.add_argument("--vox1-root", help="VoxCeleb1 folder for --data vox2 evaluation (default: see data.py)")
    p.add_argument("--cache-dir", help="where the toy corpora are generated")
    p.add_argument("--toy-seed", type=int, default=0,
                   help="which toy corpus (fixed apart from --seed, so runs stay comparable)")
    p.add_argument("--toy-size", choices=["default", "tiny"], default="default",
                   help="'tiny' makes a toy corpus of a few files, for smoke tests")
    p.add_argument("--ssl", help="'tiny', a short name (wavlm_base_plus, ...) or a checkpoint path")
    p.add_argument("--target", type=float, default=0.7, help="target sparsity of the SSL model, in [0, 1)")
    p.add_argument("--prune-units", default=",".join(PRUNE_UNITS), help=f"comma list from {PRUNE_UNITS}")
    p.add_argument("--sparsity-warmup", type=float, help="epochs over which the target rises from 0")
    p.add_argument("--sparsity-schedule", choices=["linear", "cosine"], help="target warm-up shape")
    p.add_argument("--size-estimate", choices=["deployed", "expected"], default="deployed",
                   help="size in s_hat: the exported size with the expectation's gradient (default), "
                        "or the paper's plain expectation (see model_size)")
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
    p.add_argument("--freeze-ssl-steps", type=int, help="train only the head for this many steps first")
    p.add_argument("--crop-seconds", type=float)
    p.add_argument("--musan", help="MUSAN folder for noise augmentation")
    p.add_argument("--rir", help="RIR folder for reverberation")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--amp", choices=["none", "bf16"], default="none", help="bf16 autocast (CUDA)")
    p.add_argument("--out", default=None, help="output folder (default runs/<data>_t<target>)")
    p.add_argument("--save-every", type=int, default=200, help="checkpoint every N steps")
    p.add_argument("--eval-every", type=int, help="evaluate every N steps (0 = only at the end)")
    p.add_argument("--resume", action="store_true", help="continue from <out>/checkpoint.pt")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-workers", type=int, default=1, help="data-loading processes")
    p.add_argument("--grad-clip", type=float, default=5.0)
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")
    p.add_argument("--stop-after", type=int, help=argparse.SUPPRESS)   # tests: simulate a crash
    args = p.parse_args(argv)

    recipe = RECIPES[args.data]
    for key, value in recipe.items():                  # fill what the user did not set
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    if not 0.0 <= args.target < 1.0:
        p.error(f"--target must lie in [0, 1), got {args.target}")
    units = [u for u in args.prune_units.split(",") if u]
    bad = [u for u in units if u not in PRUNE_UNITS]
    if bad:
        p.error(f"--prune-units: unknown unit(s) {bad}; choose from {','.join(PRUNE_UNITS)}")
    args.prune_units = units
    if not args.data.startswith("toy") and not args.data_root:
        p.error(f"--data {args.data} needs --data-root pointing to the dataset folder (see README)")
    if args.steps is None and args.epochs is None:
        p.error("give --steps or --epochs")
    if args.out is None:
        args.out = os.path.join("runs", f"{args.data}_t{args.target:g}")
    return args


# ------------------------------------------------------------------------ small parts
def target_at(step, warmup_steps, target, schedule="linear"):
    """Target sparsity t at a step: from 0 to `target` over `warmup_steps`, then flat."""
    if warmup_steps <= 0 or step >= warmup_steps:
        return target
    frac = step / warmup_steps
    if schedule == "cosine":
        frac = 0.5 * (1.0 - math.cos(math.pi * frac))
    return target * frac


def model_size(ssl: MaskedWavLM, estimate="deployed"):
    """The size that enters s_hat, as (tensor for the loss, expected, deployed).

    "expected" is the paper's E[#params], the mean over random gate draws. But the
    model we export keeps round(E[L0]) units per group and drops whole blocks whose
    gate rounds to 0; on a small model one head or block can move that count by
    several percent. "deployed" therefore uses the VALUE of the exported size with the
    GRADIENT of the expected size (a straight-through estimator): the multipliers then
    steer the size we actually ship to the target, while the gates still receive the
    smooth gradient of the expectation.
    """
    expected = ssl.expected_num_params(deterministic=False)
    with torch.no_grad():
        deployed = ssl.expected_num_params(deterministic=True)
    if estimate == "expected":
        return expected, expected, deployed
    return expected + (deployed - expected).detach(), expected, deployed


def lagrangian(expected_params, params0, target, lambdas):
    """Eq. (1)-(2): returns (regulariser, s_hat). lambdas = tensor([lambda1, lambda2])."""
    s_hat = 1.0 - expected_params / params0
    gap = target - s_hat                                   # > 0 while the model is too big
    return lambdas[0] * gap + lambdas[1] * gap ** 2, s_hat


def lr_factor(step, warmup_steps, total_steps, lr, final_lr):
    """Linear warm-up, then exponential decay from lr to final_lr (the SV recipe)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return (final_lr / lr) ** min(1.0, progress)


EMBED_DIM = 256


class Classifier(nn.Module):
    """SSL model -> pooling head -> loss head. One module, so DDP sees every parameter."""

    def __init__(self, ssl: MaskedWavLM, task: str, num_classes: int, args):
        super().__init__()
        cfg = ssl.config
        self.ssl, self.task, self.grad_mult = ssl, task, args.grad_mult
        # CM: the bona fide share of the training data, to turn logits into LLRs.
        self.p_bonafide = getattr(args, "p_bonafide", 0.5)
        if args.head == "mhfa":
            self.head = heads.MHFA(cfg.num_layers + 1, cfg.hidden_size, compression_dim=args.mhfa_compression,
                                   num_heads=args.mhfa_heads, embed_dim=EMBED_DIM)
        else:
            self.head = heads.ASPHead(cfg.num_layers + 1, cfg.hidden_size, embed_dim=EMBED_DIM)
        if task == "sv":
            self.loss_head = heads.AAMSoftmax(EMBED_DIM, num_classes, scale=args.aam_scale,
                                              margin=args.aam_margin, sub_centers=args.sub_centers,
                                              inter_topk=args.inter_topk, inter_penalty=args.inter_penalty)
        else:
            self.loss_head = heads.SpoofHead(EMBED_DIM)

    def embed(self, waves, lengths=None):
        hidden_states, frames = self.ssl(waves, lengths)
        hidden_states = [heads.scale_grad(h, self.grad_mult) for h in hidden_states]
        return self.head(hidden_states, frames)                         # (B, 256)

    def forward(self, waves, labels):
        return self.loss_head(self.embed(waves), labels)


def prepare(args):
    return datasets.prepare_data(args.data, args.data_root, args.cache_dir, seed=args.toy_seed,
                                 toy_size=args.toy_size, vox1_root=args.vox1_root)


def load_classifier(path, device="cpu"):
    """pruned_model.pt (written at the end of training) -> (Classifier, extra)."""
    ssl, extra = wavlm_masked.load(path)
    args = argparse.Namespace(**extra["train_args"])
    model = Classifier(ssl, extra["task"], extra["num_classes"], args)
    ssl_state = {f"ssl.{k}": v for k, v in ssl.state_dict().items()}
    wavlm_masked.load_state_exactly(model, {**ssl_state, **extra["head"]}, path)
    return model.to(device).eval(), extra


def build_ssl(args) -> MaskedWavLM:
    if args.ssl == "tiny":
        torch.manual_seed(args.seed)
        return MaskedWavLM(WavLMConfig.tiny(prune_units=args.prune_units))
    return pretrained.load_pretrained(args.ssl, prune_units=args.prune_units)


def make_optimizers(model: Classifier, lambdas, args):
    gates = model.ssl.gate_parameters()
    gate_ids = {id(p) for p in gates}
    ssl_params = [p for p in model.ssl.parameters() if id(p) not in gate_ids]
    head_params = list(model.head.parameters()) + list(model.loss_head.parameters())
    groups = [dict(params=ssl_params, lr=args.lr, weight_decay=args.weight_decay, name="ssl"),
              dict(params=head_params, lr=args.lr, weight_decay=args.weight_decay, name="head")]
    if gates:
        groups.append(dict(params=gates, lr=args.reg_lr, weight_decay=0.0, name="gates"))
    optimizer = torch.optim.AdamW(groups)
    # Gradient ASCENT on the multipliers: they are the adversary of the min-max game.
    lambda_optimizer = torch.optim.AdamW([lambdas], lr=args.reg_lr, weight_decay=0.0, maximize=True)
    return optimizer, lambda_optimizer


def set_learning_rates(optimizer, step, args, total_steps, steps_per_epoch):
    f = lr_factor(step, int(args.lr_warmup_epochs * steps_per_epoch), total_steps, args.lr, args.final_lr)
    for group in optimizer.param_groups:
        if group["name"] == "ssl":
            group["lr"] = 0.0 if step < args.freeze_ssl_steps else args.lr * f
        elif group["name"] == "head":
            group["lr"] = args.lr * f
        # gates: constant lr, as in the recipe


def epoch_batches(num_items, batch_size, epoch, seed, rank=0, world=1):
    """The index batches of one epoch, this rank's share. Derived from (seed, epoch)
    only, so a resumed run can regenerate them and skip the ones already done."""
    g = torch.Generator().manual_seed(seed * 100003 + epoch)
    order = torch.randperm(num_items, generator=g).tolist()
    global_batch = batch_size * world
    return [order[i + rank * batch_size: i + (rank + 1) * batch_size]
            for i in range(0, num_items - global_batch + 1, global_batch)]


# ------------------------------------------------------------------------- evaluation
@torch.no_grad()
def embed_paths(model: Classifier, paths, device, amp, num_workers=0):
    """Full utterances, one at a time: a GroupNorm extractor (Base) normalises over all
    frames including padding, so batching unequal lengths would change embeddings.
    Returns {path: embedding (256,)} for SV, {path: LLR score} for CM."""
    model.eval()
    loader = DataLoader(datasets.EvalUtterances(paths), batch_size=1, num_workers=num_workers,
                        collate_fn=datasets.collate_pad)
    out = {}
    for waves, lengths, index in loader:
        with autocast(device, amp):
            emb = model.embed(waves.to(device), lengths.to(device)).float()
        if model.task == "cm":
            emb = heads.logits_to_llr(model.loss_head.logits(emb).float(), model.p_bonafide)
        out[paths[int(index[0])]] = emb[0].cpu()
    return out


def evaluate_sets(model: Classifier, spec, device, amp, names=None):
    """Metrics on evaluation sets: {name: metrics dict}, plus the raw (scores, labels)."""
    names = names or spec.eval_names()
    cache = embed_paths(model, sorted({p for name in names for p in spec.eval_paths(name)}), device, amp)
    results, raw = {}, {}
    for name in names:
        if spec.task == "sv":
            trials = spec.sv_trials(name)
            scores = evaluate.score_sv(cache, trials)
            labels = np.array([y for y, _, _ in trials])
            results[name] = evaluate.sv_metrics(scores, labels)
        else:
            items = spec.cm_items(name)
            scores = np.array([float(cache[p]) for p, _ in items])
            labels = np.array([y for _, y in items])
            results[name] = evaluate.cm_metrics(scores, labels)
        raw[name] = (np.asarray(scores), labels)
    return results, raw


def autocast(device, amp):
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=(amp == "bf16"))


@torch.inference_mode()
def inference_seconds(models, device, seconds=4.0, repeats=7):
    """Wall time of one forward pass on `seconds` of audio (batch 1), for each model.
    The models run interleaved (A, B, A, B, ...) and the minimum is kept, so a busy
    machine slows both alike and the ratio stays meaningful."""
    x = torch.randn(1, int(seconds * datasets.SAMPLE_RATE), device=device)
    times = [[] for _ in models]
    for m in models:
        m.eval()(x)                                           # warm-up
    for _ in range(repeats):
        for m, t in zip(models, times):
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            m(x)
            if device.type == "cuda":
                torch.cuda.synchronize()
            t.append(time.perf_counter() - t0)
    return [min(t) for t in times]


# ------------------------------------------------------------------------ checkpoints
def save_checkpoint(path, step, model, lambdas, optimizer, lambda_optimizer, args):
    """Everything needed to continue bit-for-bit: weights, gates, multipliers, optimiser
    states, RNG states, data position (= step). Tensors and plain values only."""
    state = {"step": step, "model": model.state_dict(), "ssl_config": model.ssl.config.to_dict(),
             "lambdas": lambdas.detach().cpu(), "optimizer": optimizer.state_dict(),
             "lambda_optimizer": lambda_optimizer.state_dict(), "torch_rng": torch.get_rng_state(),
             "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
             "args": {k: v for k, v in vars(args).items() if k not in ("resume", "stop_after")}}
    wavlm_masked.atomic_torch_save(state, path)


def load_checkpoint(path, model, lambdas, optimizer, lambda_optimizer):
    state = wavlm_masked.read_checkpoint(path)
    wavlm_masked.load_state_exactly(model, state["model"], path)
    with torch.no_grad():
        lambdas.copy_(state["lambdas"])
    optimizer.load_state_dict(state["optimizer"])
    lambda_optimizer.load_state_dict(state["lambda_optimizer"])
    torch.set_rng_state(state["torch_rng"])
    if state["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    return state["step"]


# ---------------------------------------------------------------------------- logging
def truncate_log(path, step):
    """After a crash the log holds steps past the last checkpoint; the resumed run
    redoes them, so drop those lines (rewritten atomically) to keep one line per step."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        keep = [line for line in f if line.strip() and json.loads(line)["step"] <= step]
    with open(path + ".tmp", "w") as f:
        f.writelines(keep)
    os.replace(path + ".tmp", path)


class Logger:
    """JSON lines on disk (every logging step) and a tqdm bar on screen; rank 0 only."""

    def __init__(self, out, total, start, enabled, progress):
        self.enabled = enabled
        self.file = open(os.path.join(out, "log.jsonl"), "a") if enabled else None
        self.bar = None
        if enabled and progress:
            from tqdm import tqdm
            self.bar = tqdm(total=total, initial=start, dynamic_ncols=True, file=sys.stdout)

    def log(self, record, show=None):
        if not self.enabled:
            return
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.bar is not None and show:
            self.bar.set_postfix(show, refresh=False)

    def step(self):
        if self.bar is not None:
            self.bar.update(1)

    def print(self, *msg):
        if self.enabled:
            (self.bar.write if self.bar is not None else print)(" ".join(str(m) for m in msg))

    def close(self):
        if self.bar is not None:
            self.bar.close()
        if self.file is not None:
            self.file.close()


# ------------------------------------------------------------------------------- main
def resolve_device(choice):
    """--device auto|cpu|cuda -> torch.device; asking for CUDA without one is an error."""
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(choice)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("error: --device cuda but no CUDA device is visible; use --device cpu")
    return device


def setup_distributed(args):
    """torchrun sets WORLD_SIZE/RANK/LOCAL_RANK; NCCL on GPUs, gloo on CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = resolve_device(args.device)
    if world > 1:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
            torch.cuda.set_device(device)
    rank = dist.get_rank() if world > 1 else 0
    return device, rank, world


def barrier(world):
    if world > 1:
        dist.barrier()


def main(argv=None):
    args = parse_args(argv)
    device, rank, world = setup_distributed(args)
    is_main = rank == 0
    if args.amp == "bf16" and device.type != "cuda":
        if is_main:
            print("note: --amp bf16 needs a CUDA device; training in fp32 on the CPU")
        args.amp = "none"                 # bf16 autocast on a CPU is slower, not faster
    os.makedirs(args.out, exist_ok=True)
    ckpt_path = os.path.join(args.out, "checkpoint.pt")
    if is_main and not args.resume and os.path.exists(ckpt_path):
        sys.exit(f"error: {ckpt_path} exists; pass --resume to continue it or choose another --out")
    t_start = time.time()

    # --- data (rank 0 generates toy corpora; the others wait and then parse them)
    if is_main:
        spec = prepare(args)
    barrier(world)
    if not is_main:
        spec = prepare(args)
    augment = datasets.Augmenter(args.musan, args.rir) if (args.musan or args.rir) else None
    train_set = datasets.TrainCrops(spec.train_items, args.crop_seconds, seed=args.seed, augment=augment)
    steps_per_epoch = max(1, len(train_set) // (args.batch_size * world))
    total_steps = args.steps or int(round(args.epochs * steps_per_epoch))
    warmup_steps = int(round(args.sparsity_warmup * steps_per_epoch)) if args.sparsity_warmup is not None \
        else int(round(args.sparsity_warmup_frac * total_steps))

    if spec.task == "cm":
        args.p_bonafide = sum(label for _, label in spec.train_items) / len(spec.train_items)

    # --- model, multipliers, optimisers
    ssl = build_ssl(args)
    params0 = ssl.num_params()          # the dense SSL model: the denominator of s_hat
    model = Classifier(ssl, spec.task, spec.num_classes, args).to(device)
    lambdas = torch.zeros(2, device=device, requires_grad=True)        # [lambda1, lambda2]
    optimizer, lambda_optimizer = make_optimizers(model, lambdas, args)
    step = 0
    if args.resume:
        if not os.path.exists(ckpt_path):
            sys.exit(f"error: --resume but there is no checkpoint at {ckpt_path}")
        step = load_checkpoint(ckpt_path, model, lambdas, optimizer, lambda_optimizer)
        if is_main:
            truncate_log(os.path.join(args.out, "log.jsonl"), step)
    train_model = nn.parallel.DistributedDataParallel(model) if world > 1 else model

    config = dict(vars(args), device=str(device), world_size=world, params0=params0, total_steps=total_steps,
                  steps_per_epoch=steps_per_epoch, sparsity_warmup_steps=warmup_steps,
                  num_train_items=len(train_set), num_classes=spec.num_classes)
    logger = Logger(args.out, total_steps, step, is_main, not args.no_progress)
    if is_main:
        with open(os.path.join(args.out, "config.json"), "w") as f:
            json.dump(config, f, indent=2)
        logger.print("resolved config:\n" + json.dumps(config, indent=2))
        logger.print(f"SSL params {params0:,}; head {sum(p.numel() for p in model.head.parameters()):,}"
                     + (f"; resuming at step {step}" if step else ""))

    # --- the loop: one optimisation step per batch, top to bottom
    loader_gen = torch.Generator()      # the loader must not draw from the global RNG (resume)
    while step < total_steps:
        epoch, offset = divmod(step, steps_per_epoch)
        train_set.set_epoch(epoch)
        batches = epoch_batches(len(train_set), args.batch_size, epoch, args.seed, rank, world)[offset:]
        loader = DataLoader(train_set, batch_sampler=batches, num_workers=args.num_workers,
                            collate_fn=datasets.collate_pad, generator=loader_gen,
                            persistent_workers=False)
        for waves, _, labels in loader:
            model.train()
            set_learning_rates(optimizer, step, args, total_steps, steps_per_epoch)
            target = target_at(step, warmup_steps, args.target, args.sparsity_schedule)
            if spec.task == "sv":           # AAM margin ramps up from 0 (classes separate first)
                model.loss_head.set_margin(heads.margin_schedule(step, total_steps, args.aam_margin))
            waves, labels = waves.to(device), labels.to(device)
            with autocast(device, args.amp):
                task_loss = train_model(waves, labels)
            size, expected, deployed = model_size(model.ssl, args.size_estimate)
            reg, s_hat = lagrangian(size, params0, target, lambdas)
            loss = task_loss.float() + reg
            if not torch.isfinite(loss):
                logger.print(f"error: loss is {loss.item()} at step {step}; stopping. The last good "
                             f"checkpoint is {ckpt_path}; lower --lr or --reg-lr and --resume.")
                logger.close()
                sys.exit(1)

            optimizer.zero_grad(set_to_none=True)
            lambda_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
            optimizer.step()
            lambda_optimizer.step()
            with torch.no_grad():
                lambdas[0].clamp_(min=0.0)        # a price for missing sparsity is never negative
            step += 1

            record = dict(step=step, loss=loss.item(), task_loss=task_loss.item(), s_hat=s_hat.item(),
                          s_expected=1 - expected.item() / params0, s_deployed=1 - deployed.item() / params0,
                          target=target, lambda1=lambdas[0].item(), lambda2=lambdas[1].item(),
                          lr=optimizer.param_groups[0]["lr"], seconds=round(time.time() - t_start, 2))
            logger.log(record, show=dict(loss=f"{record['task_loss']:.3f}", s=f"{record['s_hat']:.3f}",
                                         t=f"{target:.3f}", l1=f"{record['lambda1']:.2f}",
                                         l2=f"{record['lambda2']:.2f}"))
            logger.step()
            if args.eval_every and step % args.eval_every == 0 and step < total_steps:
                if is_main:
                    metrics, _ = evaluate_sets(model, spec, device, args.amp, [spec.valid_name])
                    m = metrics[spec.valid_name]
                    logger.log(dict(step=step, eval=spec.valid_name, eer=m["eer"], min_dcf=m["min_dcf"]))
                    logger.print(f"step {step}: {spec.valid_name} EER {100 * m['eer']:.2f}% "
                                 f"minDCF {m['min_dcf']:.4f} (deterministic masks)")
                barrier(world)
            if step % args.save_every == 0 or step == total_steps:
                if is_main:
                    save_checkpoint(ckpt_path, step, model, lambdas, optimizer, lambda_optimizer, args)
                barrier(world)
            if args.stop_after is not None and step >= args.stop_after:
                logger.close()
                return None                     # tests: stop here as if the process were killed
            if step >= total_steps:
                break
    logger.close()

    if is_main:
        report = finish(model, spec, params0, device, args, t_start)
    barrier(world)
    if world > 1:
        dist.destroy_process_group()
    return report if is_main else None


def finish(model: Classifier, spec, params0, device, args, t_start):
    """Evaluate masked, prune physically, evaluate pruned, save, report and plot."""
    model.eval()
    masked_metrics, masked_raw = evaluate_sets(model, spec, device, args.amp)
    structure = model.ssl.structure_summary()
    pruned_ssl = model.ssl.prune()
    masked_ssl = model.ssl
    model.ssl = pruned_ssl
    pruned_metrics, pruned_raw = evaluate_sets(model, spec, device, args.amp)
    params_after = sum(p.numel() for p in pruned_ssl.parameters())

    head_state = {k: v.cpu() for k, v in model.state_dict().items() if not k.startswith("ssl.")}
    wavlm_masked.save(pruned_ssl, os.path.join(args.out, "pruned_model.pt"), extra={
        "head": head_state, "task": spec.task, "head_type": args.head, "num_classes": spec.num_classes,
        "train_args": {k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, bool, list))}})

    dense_ssl = MaskedWavLM(replace(masked_ssl.config, prune_units=[])).to(device)
    dense_time, pruned_time = inference_seconds([dense_ssl, pruned_ssl], device)
    test = spec.test_name
    report = dict(
        data=args.data, task=spec.task, target=args.target,
        params_before=params0, params_after=params_after, sparsity=1.0 - params_after / params0,
        eer_masked=masked_metrics[test]["eer"], eer_pruned=pruned_metrics[test]["eer"],
        min_dcf_masked=masked_metrics[test]["min_dcf"], min_dcf_pruned=pruned_metrics[test]["min_dcf"],
        test_set=test, masked=masked_metrics, pruned=pruned_metrics,
        max_score_diff=max(float(np.abs(masked_raw[n][0] - pruned_raw[n][0]).max()) for n in pruned_raw),
        speedup=dense_time / pruned_time, dense_seconds=dense_time, pruned_seconds=pruned_time,
        structure=structure, seconds=time.time() - t_start)
    with open(os.path.join(args.out, "report.json"), "w") as f:
        json.dump(report, f, indent=2)
    plot_training_curves(os.path.join(args.out, "log.jsonl"), os.path.join(args.out, "training_curves.png"))
    plot_structure(structure, masked_ssl.config, os.path.join(args.out, "pruned_structure.png"))
    evaluate.plot_det({f"pruned ({test})": pruned_raw[test]}, os.path.join(args.out, "det.png"),
                      title=f"{args.data}: pruned model, sparsity {report['sparsity']:.3f}")
    print(f"done in {report['seconds']:.0f} s: sparsity {report['sparsity']:.4f} "
          f"({params0:,} -> {params_after:,} params), {test} EER masked {100 * report['eer_masked']:.2f}% "
          f"/ pruned {100 * report['eer_pruned']:.2f}%, minDCF {report['min_dcf_pruned']:.4f}, "
          f"speed-up x{report['speedup']:.2f}. Outputs in {args.out}")
    return report


# ------------------------------------------------------------------------------ plots
def plot_training_curves(log_path, png_path):
    """Task loss, s_hat against t, and the two multipliers over training."""
    from matplotlib.figure import Figure
    rows = [json.loads(line) for line in open(log_path)]
    train = [r for r in rows if "task_loss" in r]
    steps = [r["step"] for r in train]
    fig = Figure(figsize=(11, 3.4), dpi=100)
    ax = fig.subplots(1, 3)
    ax[0].plot(steps, [r["task_loss"] for r in train], lw=0.8)
    ax[0].set(title="task loss", xlabel="step", ylabel="loss")
    ax[1].plot(steps, [r["s_expected"] for r in train], label="expected sparsity $E[s]$")
    ax[1].plot(steps, [r["s_deployed"] for r in train], label="deployed sparsity (eval masks)")
    ax[1].plot(steps, [r["target"] for r in train], "--", label="target $t$")
    ax[1].set(title="sparsity", xlabel="step", ylabel="fraction of SSL params removed", ylim=(0, 1))
    ax[1].legend(fontsize=8)
    ax[2].plot(steps, [r["lambda1"] for r in train], label="$\\lambda_1$")
    ax[2].plot(steps, [r["lambda2"] for r in train], label="$\\lambda_2$")
    ax[2].set(title="Lagrange multipliers", xlabel="step", ylabel="value")
    ax[2].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png_path)


def plot_structure(structure, config, png_path):
    """Per-layer share of what survived: heads, FFN units, conv channels."""
    from matplotlib.figure import Figure
    L = len(structure["heads"])
    fig = Figure(figsize=(11, 3.4), dpi=100)
    ax = fig.subplots(1, 3)
    layers = np.arange(L)
    ax[0].bar(layers, [h / config.num_heads for h in structure["heads"]], color="C0")
    ax[0].set(title="attention heads kept", xlabel="transformer layer", ylabel="fraction kept", ylim=(0, 1.05))
    ax[1].bar(layers, [u / config.ffn_dim for u in structure["ffn_units"]], color="C1")
    ax[1].set(title="FFN units kept", xlabel="transformer layer", ylabel="fraction kept", ylim=(0, 1.05))
    for a, key in ((ax[0], "attention"), (ax[1], "ffn")):
        for i, on in enumerate(structure[key]):
            if not on:
                a.text(i, 0.02, "block\nremoved", ha="center", fontsize=7, color="red")
    convs = [c for c, _, _ in config.conv_layers]
    ax[2].bar(np.arange(len(convs)), [k / c for k, c in zip(structure["conv_channels"], convs)], color="C2")
    ax[2].set(title="CNN channels kept", xlabel="conv layer", ylabel="fraction kept", ylim=(0, 1.05))
    fig.tight_layout()
    fig.savefig(png_path)


if __name__ == "__main__":
    main()
