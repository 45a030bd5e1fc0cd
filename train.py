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

import math
import os
import sys
import time
from dataclasses import dataclass, replace

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
from classifier import (Classifier, HeadConfig, autocast, resolve_device, save_classifier,
                        utterance_scorer)
from recipes import RECIPES, parse_args, small_sparsity  # noqa: F401  (RECIPES: the defaults)
from wavlm_masked import MaskedWavLM, WavLMConfig

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
def build_ssl(args) -> MaskedWavLM:
    """The gated SSL model: pretrained, or the random tiny one. Seeded, so that the gate
    (and tiny model) initialisation is the same on every run and every rank."""
    small = small_sparsity(args.ssl)
    if small:    # the baseline "train a small model instead": dense, as large as the pruned one
        dense = MaskedWavLM(WavLMConfig.tiny()).num_params()
        config = WavLMConfig.tiny_small(round((1.0 - small) * dense))
        torch.manual_seed(args.seed)
        return MaskedWavLM(config)
    torch.manual_seed(args.seed)
    if args.ssl == "tiny":
        return MaskedWavLM(WavLMConfig.tiny(prune_units=args.prune_units))
    return pretrained.load_pretrained(args.ssl, prune_units=args.prune_units)


def build_classifier(args, ssl, spec) -> Classifier:
    """The SSL model with the recipe's head; CM needs the bona fide share for its LLR."""
    head = HeadConfig(kind=args.head, mhfa_heads=args.mhfa_heads,
                      mhfa_compression=args.mhfa_compression, aam_scale=args.aam_scale,
                      aam_margin=args.aam_margin, sub_centers=args.sub_centers,
                      inter_topk=args.inter_topk, inter_penalty=args.inter_penalty)
    labels = [y for _, y in spec.train_items]
    p_bonafide = sum(labels) / len(labels) if spec.task == "cm" else 0.5
    return Classifier(ssl, spec.task, spec.num_classes, head, grad_mult=args.grad_mult,
                      p_bonafide=p_bonafide)


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


def set_learning_rates(optimizer, step, args, sched):
    f = lr_factor(step, int(args.lr_warmup_epochs * sched.steps_per_epoch), sched.total_steps,
                  args.lr, args.final_lr)
    for group in optimizer.param_groups:
        if group["name"] == "ssl":
            group["lr"] = 0.0 if step < args.freeze_ssl_steps else args.lr * f
        elif group["name"] == "head":
            group["lr"] = args.lr * f
        else:                              # gates: constant lr, as in the recipe; frozen to settle
            group["lr"] = 0.0 if step >= sched.settle_start else args.reg_lr


def settle(ssl: MaskedWavLM, params0, target, logger, step):
    """Start of the settle phase: set the gates so that the exported model has exactly
    the target size (as close as its units allow), then train only the weights of that
    fixed structure. The min-max game brings the size near the target, but it ends
    wherever its oscillation stands, and one head of a small model is ~2% of it."""
    before = 1 - ssl.expected_num_params(deterministic=True).item() / params0
    shifts = ssl.shift_gates_to_size((1 - target) * params0)
    after = 1 - ssl.expected_num_params(deterministic=True).item() / params0
    logger.print(f"settle: exported sparsity {before:.4f} -> {after:.4f} (target {target:g}; gate "
                 f"logits shifted by {', '.join(f'{k} {v:+.3f}' for k, v in shifts.items())}); "
                 f"the gates are frozen from here on")
    logger.log(dict(step=step, settle=True, sparsity_before=before, sparsity_after=after,
                    shifts=shifts))


# ---------------------------------------------------------------------------- set-up
def setup_threads(threads, is_main):
    """More compute threads than free cores make OpenMP threads spin while they wait on
    each other: several jobs with one thread per core each can run 10x slower."""
    if threads:
        torch.set_num_threads(threads)
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    if is_main and load > cores and torch.get_num_threads() > 1:
        print(f"note: the machine is busy (load average {load:.1f} on {cores} cores) and this run "
              f"uses {torch.get_num_threads()} threads; "
              f"if other jobs compute too, pass --threads 1")


def setup_distributed(device_choice):
    """torchrun sets WORLD_SIZE/RANK/LOCAL_RANK; NCCL on GPUs, gloo on CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    try:
        device = resolve_device(device_choice)
    except ValueError as e:
        run_folder.fail(e)
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
    """Parse (or generate) the dataset and check every file; rank 0 first, so that only it
    writes toy corpora and the file-check cache."""
    def parse():
        spec = datasets.prepare_data(args.data, args.data_root, args.cache_dir, seed=args.toy_seed,
                                     toy_size=args.toy_size, vox1_root=args.vox1_root)
        if args.train_speakers:
            spec = spec.first_speakers(args.train_speakers)
        return datasets.check_files(spec, args.crop_seconds, args.cache_dir, args.skip_bad_files,
                                    progress=not args.no_progress and is_main)
    result = parse() if is_main else None
    barrier(world)
    return result if is_main else parse()


@dataclass
class Schedule:
    steps_per_epoch: int
    total_steps: int           # optimisation steps
    sparsity_warmup_steps: int     # steps over which the target sparsity rises from 0
    settle_start: int          # from this step on, the structure is fixed (settle)



def make_schedule(args, num_items, world) -> Schedule:
    """Steps from the recipe; a schedule the data cannot feed is an error, not a hang."""
    global_batch = args.batch_size * world
    if num_items < global_batch:
        raise ValueError(f"the training set has {num_items} files, fewer than one batch "
                         f"(--batch-size {args.batch_size} x {world} process(es) = "
                         f"{global_batch}); "
                         f"lower --batch-size to at most {num_items // world} or add data")
    steps_per_epoch = num_items // global_batch
    total = args.steps or int(round(args.epochs * steps_per_epoch))
    if total < 1:
        raise ValueError(f"--epochs {args.epochs} is less than one step ({steps_per_epoch} steps "
                         f"per epoch); pass more --epochs or --steps")
    warmup = int(round(args.sparsity_warmup * steps_per_epoch)) \
        if args.sparsity_warmup is not None else int(round(args.sparsity_warmup_frac * total))
    settle_start = (total - max(1, int(round(args.settle_frac * total)))
                    if args.settle_frac > 0 else total)
    return Schedule(steps_per_epoch, total, warmup, settle_start)


def schedule_notes(args, sched, step):
    """Say at start when the gates get too little time at the final target."""
    if step:
        return
    at_target = sched.settle_start - min(sched.sparsity_warmup_steps, sched.settle_start)
    if args.target > 0 and at_target < max(MIN_STEPS_AT_TARGET, 0.2 * sched.total_steps):
        print(f"note: the gates train at the final target for only {at_target} of "
              f"{sched.total_steps} steps (warm-up {sched.sparsity_warmup_steps}, "
              f"settle from step {sched.settle_start}); the settle phase still "
              f"exports exactly the target size, but more is cut by rule than learned. Pass more "
              f"--steps, or a shorter --sparsity-warmup.")


MIN_STEPS_AT_TARGET = 100     # steps for the multipliers to damp their oscillation (toy runs)


# ------------------------------------------------------------------------------- main
def main(argv=None):
    args = parse_args(argv)
    argv = sys.argv[1:] if argv is None else list(argv)
    stop = run_folder.StopRequest()          # Ctrl-C / SIGTERM: finish the step, save, exit
    try:
        return train(args, stop, argv)
    except KeyboardInterrupt:                # before the loop, in the final evaluation, or
        ckpt = os.path.join(args.out, "checkpoint.pt")     # a second Ctrl-C: leave at once
        print(f"\n{stop.name}: stopped. " + (
            f"The last checkpoint is {ckpt}; continue with:\n  {run_folder.resume_command(argv)}"
            if os.path.exists(ckpt) else "Nothing was saved yet; run the same command again."),
            file=sys.stderr)
        sys.exit(stop.exit_code())
    finally:
        stop.restore()


def train(args, stop, argv):
    device, rank, world = setup_process(args)
    is_main = rank == 0
    if run_folder.check_out_folder(args.out, args.resume, args.re_export):
        return None
    t_start = time.time()
    ssl, spec, data_check, sched = load_inputs(args, is_main, world)   # user errors end here
    augment = (datasets.Augmenter(args.musan, args.rir, args.aug_prob)
               if (args.musan or args.rir) else None)
    train_set = datasets.TrainCrops(spec.train_items, args.crop_seconds, seed=args.seed,
                                    augment=augment)
    model = build_classifier(args, ssl, spec).to(device)
    params0 = model.ssl.num_params()          # the dense SSL model: the denominator of s_hat
    lambdas = torch.zeros(2, device=device, requires_grad=True)        # [lambda1, lambda2]
    optimizer, lambda_optimizer = make_optimizers(model, lambdas, args)
    step, attempts = run_folder.open_run(args.out, args.resume, model, lambdas, optimizer,
                                         lambda_optimizer, is_main)
    train_model = nn.parallel.DistributedDataParallel(model) if world > 1 else model
    logger = run_folder.Logger(args.out, sched.total_steps, step, is_main, not args.no_progress)
    if is_main:
        run_folder.write_config(args.out, dict(
            vars(args), device=str(device), world_size=world, params0=params0,
            num_classes=spec.num_classes, num_train_items=len(train_set),
            p_bonafide=model.p_bonafide, **vars(sched),
            data_check=data_check), logger)
        schedule_notes(args, sched, step)

    # --- the loop: one optimisation step of eq. (1) per batch
    stop.defer()                        # from here on, a signal ends the loop after its step
    loader_gen = torch.Generator()      # the loader must not draw from the global RNG (resume)
    ckpt_path, last_save = os.path.join(args.out, "checkpoint.pt"), time.time()
    while step < sched.total_steps:
        epoch, offset = divmod(step, sched.steps_per_epoch)
        train_set.set_epoch(epoch)
        batches = datasets.epoch_batches(len(train_set), args.batch_size, epoch, args.seed,
                                         rank, world)
        loader = DataLoader(train_set, batch_sampler=batches[offset:], num_workers=args.num_workers,
                            collate_fn=datasets.collate_pad, generator=loader_gen,
                            pin_memory=device.type == "cuda")   # page-locked: async copies
        for waves, _, labels in loader:
            if step == sched.settle_start:
                settle(model.ssl, params0, args.target, logger, step)
            settling = step >= sched.settle_start
            model.train()
            for gate in model.ssl.gates().values():       # settle: train the exported masks
                gate.train(not settling)
            set_learning_rates(optimizer, step, args, sched)
            target = target_at(step, sched.sparsity_warmup_steps, args.target,
                               args.sparsity_schedule)
            if spec.task == "sv":           # AAM margin ramps up from 0 (classes separate first)
                model.loss_head.set_margin(heads.margin_schedule(step, sched.total_steps,
                                                                 args.aam_margin))
            with autocast(device, args.amp):
                task_loss = train_model(waves.to(device, non_blocking=True),
                                        labels.to(device, non_blocking=True))
            # the size and the penalty in float64, outside autocast
            size, expected, deployed = model_size(model.ssl, args.size_estimate)
            reg, s_hat = lagrangian(size, params0, target, lambdas)
            loss = task_loss.float() + reg                                        # eq. (1)

            optimizer.zero_grad(set_to_none=True)
            lambda_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
            optimizer.step()                        # model and gates: descend
            if not settling:
                lambda_optimizer.step()             # multipliers: ascend
                with torch.no_grad():
                    lambdas[0].clamp_(min=0.0)      # a price for missing sparsity is never negative
            step += 1

            # One host-device sync per step: every logged number in one transfer.
            values = torch.stack([loss.detach(), task_loss.detach().float(), s_hat.detach(),
                                  expected.detach(), deployed.detach(), *lambdas.detach()]).tolist()
            if not math.isfinite(values[0]):
                run_folder.fail(f"loss is {values[0]} at step {step}; the last good checkpoint is "
                                f"{ckpt_path}: lower --lr or --reg-lr and --resume", is_main)
            logger.log_step(step, values, target, params0, optimizer.param_groups[0]["lr"],
                            round(time.time() - t_start, 2))
            if args.eval_every and step % args.eval_every == 0 and step < sched.total_steps:
                if is_main:
                    periodic_eval(model, spec, device, args.amp, logger, step)
                barrier(world)
            stopping, saving = agree(stop.requested,
                                     time.time() - last_save > 60 * args.save_minutes,
                                     world, device)
            if saving or stopping or step % args.save_every == 0 or step == sched.total_steps:
                attempts[-1].update(last_step=step, seconds=round(time.time() - t_start, 2),
                                    ended=f"stopped by {stop.name}" if stopping else "running")
                if is_main:
                    run_folder.save_checkpoint(ckpt_path, step, model, lambdas, optimizer,
                                               lambda_optimizer,
                                               run_folder.plain_values(vars(args)), attempts)
                last_save = time.time()
                barrier(world)
            if stopping:
                run_folder.stopped(logger, stop, step, sched.total_steps, argv, world, is_main)
            if step >= sched.total_steps:
                break
    logger.close()

    stop.deferred = False                 # a signal during the final evaluation ends it at once
    report = finish(model, spec, params0, device, args, t_start, attempts) if is_main else None
    barrier(world)
    if world > 1:
        dist.destroy_process_group()
    return report


def setup_process(args):
    """Device, rank and world size (torchrun), compute threads, and what --amp can do here."""
    device, rank, world = setup_distributed(args.device)
    setup_threads(args.threads, rank == 0)
    if args.amp == "bf16" and device.type != "cuda":
        if rank == 0:
            print("note: --amp bf16 needs a CUDA device; training in fp32 on the CPU")
        args.amp = "none"                 # bf16 autocast on a CPU is slower, not faster
    return device, rank, world


def load_inputs(args, is_main, world):
    """Everything that can fail on the user's input, before anything is written to --out:
    the SSL checkpoint, the dataset (every file checked), the schedule."""
    try:
        ssl = build_ssl(args)
        rng = torch.get_rng_state()         # the head's initialisation must not depend on
        spec, data_check = prepare(args, is_main, world)   # whether a corpus was generated
        torch.set_rng_state(rng)
        return ssl, spec, data_check, make_schedule(args, len(spec.train_items), world)
    except (OSError, ValueError, RuntimeError) as e:
        run_folder.fail(e, is_main)


def agree(stop, save, world, device):
    """Every process must stop (or save) at the same step, or the others would wait for
    it forever in the next all-reduce: take the OR over processes."""
    if world == 1:
        return stop, save
    flags = torch.tensor([float(stop), float(save)], device=device)
    dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    return bool(flags[0]), bool(flags[1])


def periodic_eval(model, spec, device, amp, logger, step):
    """The validation set with deterministic masks (rank 0)."""
    metrics, _ = evaluate.evaluate_sets(utterance_scorer(model, device, amp), spec,
                                        [spec.valid_name])
    m = metrics[spec.valid_name]
    logger.log(dict(step=step, eval=spec.valid_name, eer=m["eer"], min_dcf=m["min_dcf"]))
    logger.print(f"step {step}: {spec.valid_name} EER {100 * m['eer']:.2f}% "
                 f"minDCF {m['min_dcf']:.4f} (deterministic masks)")


def finish(model: Classifier, spec, params0, device, args, t_start, attempts):
    """Evaluate masked, prune physically, evaluate pruned (the scores must agree), save
    the pruned classifier, time dense against pruned, and write the report."""
    model.eval()
    masked_metrics, masked_raw = evaluate.evaluate_sets(utterance_scorer(model, device, args.amp),
                                                        spec)
    structure = model.ssl.structure_summary()
    masked_ssl = model.ssl
    model.ssl = masked_ssl.prune()
    pruned_metrics, pruned_raw = evaluate.evaluate_sets(utterance_scorer(model, device, args.amp),
                                                        spec)
    save_classifier(model, os.path.join(args.out, "pruned_model.pt"),
                    extra={"train_args": run_folder.plain_values(vars(args))})
    dense_ssl = MaskedWavLM(replace(masked_ssl.config, prune_units=[])).to(device)
    dense_time, pruned_time = evaluate.inference_seconds([dense_ssl, model.ssl], device)
    test, params_after = spec.test_name, model.ssl.num_params()
    attempts[-1].update(seconds=round(time.time() - t_start, 2),
                        ended="re-exported" if args.re_export else "finished")
    report = dict(
        data=args.data, task=spec.task, target=args.target,
        params_before=params0, params_after=params_after, sparsity=1.0 - params_after / params0,
        eer_masked=masked_metrics[test]["eer"], eer_pruned=pruned_metrics[test]["eer"],
        min_dcf_masked=masked_metrics[test]["min_dcf"],
        min_dcf_pruned=pruned_metrics[test]["min_dcf"],
        test_set=test, masked=masked_metrics, pruned=pruned_metrics,
        max_score_diff=max(float(np.abs(masked_raw[n][0] - pruned_raw[n][0]).max())
                           for n in pruned_raw),
        speedup=dense_time / pruned_time, dense_seconds=dense_time, pruned_seconds=pruned_time,
        structure=structure, seconds=round(sum(a["seconds"] for a in attempts), 2),
        attempts=attempts)
    run_folder.write_report(args.out, report, masked_ssl.config, pruned_raw[test],
                            det_title=f"{args.data}: pruned model, "
                                      f"sparsity {report['sparsity']:.3f}")
    print(f"done in {report['seconds']:.0f} s: sparsity {report['sparsity']:.4f} "
          f"({params0:,} -> {params_after:,} params), {test} EER masked "
          f"{100 * report['eer_masked']:.2f}% / pruned {100 * report['eer_pruned']:.2f}%, minDCF "
          f"{report['min_dcf_pruned']:.4f}, speed-up x{report['speedup']:.2f}. "
          f"Outputs in {args.out}")
    return report


if __name__ == "__main__":
    main()
