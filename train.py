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
import run_folder
from classifier import Classifier, HeadConfig, autocast, resolve_device, save_classifier, utterance_scorer
from wavlm_masked import PRUNE_UNITS, MaskedWavLM, WavLMConfig

# ----------------------------------------------------------------------------- recipes
# Each --data brings the defaults of the paper's recipe for its task (docs/method.md
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
    p.add_argument("--threads", type=int, help="torch compute threads (default: one per core); "
                                                 "use 1 when several jobs share the machine")
    p.add_argument("--grad-clip", type=float, default=5.0)
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")
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


# ------------------------------------------------------------------------- building
def build_model(args, task, num_classes, p_bonafide=0.5):
    """The gated SSL model (pretrained or the random tiny one) with its head."""
    if args.ssl == "tiny":
        torch.manual_seed(args.seed)
        ssl = MaskedWavLM(WavLMConfig.tiny(prune_units=args.prune_units))
    else:
        ssl = pretrained.load_pretrained(args.ssl, prune_units=args.prune_units)
    head = HeadConfig(kind=args.head, mhfa_heads=args.mhfa_heads, mhfa_compression=args.mhfa_compression,
                      aam_scale=args.aam_scale, aam_margin=args.aam_margin, sub_centers=args.sub_centers,
                      inter_topk=args.inter_topk, inter_penalty=args.inter_penalty)
    return Classifier(ssl, task, num_classes, head, grad_mult=args.grad_mult, p_bonafide=p_bonafide)


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


def setup_threads(threads, is_main):
    """More compute threads than free cores make OpenMP threads spin while they wait on
    each other: several jobs with one thread per core each can run 10x slower."""
    if threads:
        torch.set_num_threads(threads)
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    if is_main and load > cores and torch.get_num_threads() > 1:
        print(f"note: the machine is busy (load average {load:.1f} on {cores} cores) and this run uses "
              f"{torch.get_num_threads()} threads; if other jobs compute too, pass --threads 1")


def setup_distributed(device_choice):
    """torchrun sets WORLD_SIZE/RANK/LOCAL_RANK; NCCL on GPUs, gloo on CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    try:
        device = resolve_device(device_choice)
    except ValueError as e:
        sys.exit(f"error: {e}")
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


def prepare(args, is_main, world):
    """Parse (or generate) the dataset; rank 0 first, so that only it writes toy corpora."""
    def parse():
        return datasets.prepare_data(args.data, args.data_root, args.cache_dir, seed=args.toy_seed,
                                     toy_size=args.toy_size, vox1_root=args.vox1_root)
    spec = parse() if is_main else None
    barrier(world)
    return spec if is_main else parse()


def make_schedule(args, num_items, world):
    """-> (steps per epoch, total steps, sparsity warm-up steps)."""
    steps_per_epoch = max(1, num_items // (args.batch_size * world))
    total_steps = args.steps or int(round(args.epochs * steps_per_epoch))
    warmup_steps = int(round(args.sparsity_warmup * steps_per_epoch)) if args.sparsity_warmup is not None \
        else int(round(args.sparsity_warmup_frac * total_steps))
    return steps_per_epoch, total_steps, warmup_steps


# ------------------------------------------------------------------------------- main
def main(argv=None):
    args = parse_args(argv)
    device, rank, world = setup_distributed(args.device)
    is_main = rank == 0
    setup_threads(args.threads, is_main)
    if args.amp == "bf16" and device.type != "cuda":
        if is_main:
            print("note: --amp bf16 needs a CUDA device; training in fp32 on the CPU")
        args.amp = "none"                 # bf16 autocast on a CPU is slower, not faster
    os.makedirs(args.out, exist_ok=True)
    ckpt_path = os.path.join(args.out, "checkpoint.pt")
    if is_main and not args.resume and os.path.exists(ckpt_path):
        sys.exit(f"error: {ckpt_path} exists; pass --resume to continue it or choose another --out")
    t_start = time.time()

    spec = prepare(args, is_main, world)
    augment = datasets.Augmenter(args.musan, args.rir) if (args.musan or args.rir) else None
    train_set = datasets.TrainCrops(spec.train_items, args.crop_seconds, seed=args.seed, augment=augment)
    steps_per_epoch, total_steps, warmup_steps = make_schedule(args, len(train_set), world)
    p_bonafide = sum(y for _, y in spec.train_items) / len(spec.train_items) if spec.task == "cm" else 0.5
    model = build_model(args, spec.task, spec.num_classes, p_bonafide).to(device)
    params0 = model.ssl.num_params()          # the dense SSL model: the denominator of s_hat
    lambdas = torch.zeros(2, device=device, requires_grad=True)        # [lambda1, lambda2]
    optimizer, lambda_optimizer = make_optimizers(model, lambdas, args)
    step = resume(args, ckpt_path, model, lambdas, optimizer, lambda_optimizer, is_main)
    train_model = nn.parallel.DistributedDataParallel(model) if world > 1 else model
    logger = run_folder.Logger(args.out, total_steps, step, is_main, not args.no_progress)
    if is_main:
        write_config(args, logger, model, step, dict(
            device=str(device), world_size=world, params0=params0, total_steps=total_steps,
            steps_per_epoch=steps_per_epoch, sparsity_warmup_steps=warmup_steps,
            num_train_items=len(train_set), num_classes=spec.num_classes, p_bonafide=p_bonafide))

    # --- the loop: one optimisation step of eq. (1) per batch
    loader_gen = torch.Generator()      # the loader must not draw from the global RNG (resume)
    while step < total_steps:
        epoch, offset = divmod(step, steps_per_epoch)
        train_set.set_epoch(epoch)
        batches = datasets.epoch_batches(len(train_set), args.batch_size, epoch, args.seed, rank, world)[offset:]
        loader = DataLoader(train_set, batch_sampler=batches, num_workers=args.num_workers,
                            collate_fn=datasets.collate_pad, generator=loader_gen)
        for waves, _, labels in loader:
            model.train()
            set_learning_rates(optimizer, step, args, total_steps, steps_per_epoch)
            target = target_at(step, warmup_steps, args.target, args.sparsity_schedule)
            if spec.task == "sv":           # AAM margin ramps up from 0 (classes separate first)
                model.loss_head.set_margin(heads.margin_schedule(step, total_steps, args.aam_margin))
            with autocast(device, args.amp):
                task_loss = train_model(waves.to(device), labels.to(device))
            size, expected, deployed = model_size(model.ssl, args.size_estimate)   # fp32, outside autocast
            reg, s_hat = lagrangian(size, params0, target, lambdas)
            loss = task_loss.float() + reg                                         # eq. (1)

            optimizer.zero_grad(set_to_none=True)
            lambda_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
            optimizer.step()                        # model and gates: descend
            lambda_optimizer.step()                 # multipliers: ascend
            with torch.no_grad():
                lambdas[0].clamp_(min=0.0)        # a price for missing sparsity is never negative
            step += 1

            # One host-device sync per step: every logged number in one transfer.
            values = torch.stack([loss.detach(), task_loss.detach().float(), s_hat.detach(), expected.detach(),
                                  deployed.detach(), *lambdas.detach()]).tolist()
            if not math.isfinite(values[0]):
                logger.close()
                sys.exit(f"error: loss is {values[0]} at step {step}; stopping. The last good "
                         f"checkpoint is {ckpt_path}; lower --lr or --reg-lr and --resume.")
            log_step(logger, step, values, target, params0, optimizer, t_start)
            if args.eval_every and step % args.eval_every == 0 and step < total_steps:
                if is_main:
                    periodic_eval(model, spec, device, args.amp, logger, step)
                barrier(world)
            if step % args.save_every == 0 or step == total_steps:
                if is_main:
                    run_folder.save_checkpoint(ckpt_path, step, model, lambdas, optimizer, lambda_optimizer,
                                               plain_args(args))
                barrier(world)
            if step >= total_steps:
                break
    logger.close()

    report = finish(model, spec, params0, device, args, t_start) if is_main else None
    barrier(world)
    if world > 1:
        dist.destroy_process_group()
    return report


def resume(args, ckpt_path, model, lambdas, optimizer, lambda_optimizer, is_main):
    """--resume: load the checkpoint and cut the log back to it; returns the step."""
    if not args.resume:
        return 0
    if not os.path.exists(ckpt_path):
        sys.exit(f"error: --resume but there is no checkpoint at {ckpt_path}")
    step = run_folder.load_checkpoint(ckpt_path, model, lambdas, optimizer, lambda_optimizer)
    if is_main:
        run_folder.truncate_log(os.path.join(args.out, "log.jsonl"), step)
    return step


def write_config(args, logger, model, step, resolved):
    config = dict(vars(args), **resolved)
    run_folder.write_json(os.path.join(args.out, "config.json"), config)
    logger.print("resolved config:\n" + json.dumps(config, indent=2))
    logger.print(f"SSL params {resolved['params0']:,}; head {sum(p.numel() for p in model.head.parameters()):,}"
                 + (f"; resuming at step {step}" if step else ""))


def log_step(logger, step, values, target, params0, optimizer, t_start):
    loss, task_loss, s_hat, expected, deployed, lambda1, lambda2 = values
    record = dict(step=step, loss=loss, task_loss=task_loss, s_hat=s_hat, s_expected=1 - expected / params0,
                  s_deployed=1 - deployed / params0, target=target, lambda1=lambda1, lambda2=lambda2,
                  lr=optimizer.param_groups[0]["lr"], seconds=round(time.time() - t_start, 2))
    logger.log(record, show=dict(loss=f"{task_loss:.3f}", s=f"{s_hat:.3f}", t=f"{target:.3f}",
                                 l1=f"{lambda1:.2f}", l2=f"{lambda2:.2f}"))
    logger.step()


def periodic_eval(model, spec, device, amp, logger, step):
    """The validation set with deterministic masks (rank 0)."""
    metrics, _ = evaluate.evaluate_sets(utterance_scorer(model, device, amp), spec, [spec.valid_name])
    m = metrics[spec.valid_name]
    logger.log(dict(step=step, eval=spec.valid_name, eer=m["eer"], min_dcf=m["min_dcf"]))
    logger.print(f"step {step}: {spec.valid_name} EER {100 * m['eer']:.2f}% "
                 f"minDCF {m['min_dcf']:.4f} (deterministic masks)")


def plain_args(args):
    """The arguments as plain values (what a checkpoint or a model file may hold)."""
    return {k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, bool, list, type(None)))
            and k != "resume"}


def finish(model: Classifier, spec, params0, device, args, t_start):
    """Evaluate masked, prune physically, evaluate pruned (the scores must agree), save
    the pruned classifier, time dense against pruned, and write the report."""
    model.eval()
    masked_metrics, masked_raw = evaluate.evaluate_sets(utterance_scorer(model, device, args.amp), spec)
    structure = model.ssl.structure_summary()
    masked_ssl = model.ssl
    model.ssl = masked_ssl.prune()
    pruned_metrics, pruned_raw = evaluate.evaluate_sets(utterance_scorer(model, device, args.amp), spec)
    save_classifier(model, os.path.join(args.out, "pruned_model.pt"), extra={"train_args": plain_args(args)})
    dense_ssl = MaskedWavLM(replace(masked_ssl.config, prune_units=[])).to(device)
    dense_time, pruned_time = evaluate.inference_seconds([dense_ssl, model.ssl], device)
    test, params_after = spec.test_name, model.ssl.num_params()
    report = dict(
        data=args.data, task=spec.task, target=args.target,
        params_before=params0, params_after=params_after, sparsity=1.0 - params_after / params0,
        eer_masked=masked_metrics[test]["eer"], eer_pruned=pruned_metrics[test]["eer"],
        min_dcf_masked=masked_metrics[test]["min_dcf"], min_dcf_pruned=pruned_metrics[test]["min_dcf"],
        test_set=test, masked=masked_metrics, pruned=pruned_metrics,
        max_score_diff=max(float(np.abs(masked_raw[n][0] - pruned_raw[n][0]).max()) for n in pruned_raw),
        speedup=dense_time / pruned_time, dense_seconds=dense_time, pruned_seconds=pruned_time,
        structure=structure, seconds=time.time() - t_start)
    run_folder.write_report(args.out, report, masked_ssl.config, pruned_raw[test],
                            det_title=f"{args.data}: pruned model, sparsity {report['sparsity']:.3f}")
    print(f"done in {report['seconds']:.0f} s: sparsity {report['sparsity']:.4f} "
          f"({params0:,} -> {params_after:,} params), {test} EER masked {100 * report['eer_masked']:.2f}% "
          f"/ pruned {100 * report['eer_pruned']:.2f}%, minDCF {report['min_dcf_pruned']:.4f}, "
          f"speed-up x{report['speedup']:.2f}. Outputs in {args.out}")
    return report


if __name__ == "__main__":
    main()
