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
cosine schedule. Gate logits get their own constant learning rate. The last few percent
of the steps "settle": the structure is set to exactly the target size and frozen, the
weights fine-tune it, and the exported weights may be the average of snapshots taken
there. The recipes, the command line and the step schedules are in recipes.py
(`python train.py --help`); this file reads top to bottom: the method's small parts,
building, set-up, each step, the end (evaluate, prune, report), the run, main.
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

import augment
import checkpoints
import data as datasets
import devices
import heads
import pretrained
import run_folder
import scoring
from classifier import Classifier, HeadConfig, save_classifier, utterance_scorer
from devices import autocast, barrier
from recipes import Schedule, lr_at, make_schedule, parse_args, schedule_notes, target_at
from wavlm_masked import MaskedWavLM

# ------------------------------------------------------------------------ small parts
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


# ------------------------------------------------------------------------- building
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
    """Three groups: the SSL weights, the head (and loss head), the gate logits. Their
    lrs are set every step (set_learning_rates)."""
    gates = model.ssl.gate_parameters()
    gate_ids = {id(p) for p in gates}
    ssl_params = [p for p in model.ssl.parameters() if id(p) not in gate_ids]
    head_params = list(model.head.parameters()) + list(model.loss_head.parameters())
    groups = [dict(params=ssl_params, lr=0.0, weight_decay=args.weight_decay, name="ssl"),
              dict(params=head_params, lr=0.0, weight_decay=args.weight_decay, name="head")]
    if gates:
        groups.append(dict(params=gates, lr=args.reg_lr, weight_decay=0.0, name="gates"))
    optimizer = torch.optim.AdamW(groups)
    # Gradient ASCENT on the multipliers: they are the adversary of the min-max game.
    lambda_optimizer = torch.optim.AdamW([lambdas], lr=args.reg_lr, weight_decay=0.0, maximize=True)
    return optimizer, lambda_optimizer


def set_learning_rates(optimizer, step, args, sched) -> float:
    """The schedule's lr (times the batch scaling) for the head, that times
    --frontend-lr-ratio for the SSL weights (0 while frozen), the constant reg lr for the
    gates (0 once they settle). Returns the head's lr, the one the log shows."""
    lr = sched.lr_scale * lr_at(step, sched.lr_warmup_steps, sched.total_steps, args.lr,
                                args.final_lr, args.lr_schedule)
    for group in optimizer.param_groups:
        if group["name"] == "ssl":
            group["lr"] = 0.0 if step < args.freeze_ssl_steps else lr * args.frontend_lr_ratio
        elif group["name"] == "head":
            group["lr"] = lr
        else:
            group["lr"] = 0.0 if step >= sched.settle_start else args.reg_lr
    return lr


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
def load_inputs(args, is_main, world):
    """Everything that can fail on the user's input, before anything is written to --out:
    the SSL checkpoint, the dataset (parsed or generated, every file checked; rank 0 first,
    so that only it writes toy corpora and the file-check cache), the schedule."""
    def prepare():
        spec = datasets.prepare_data(args.data, args.data_root, args.cache_dir, seed=args.toy_seed,
                                     toy_size=args.toy_size, vox1_root=args.vox1_root)
        if args.train_speakers:
            spec = spec.first_speakers(args.train_speakers)
        return datasets.check_files(spec, args.crop_seconds, args.cache_dir, args.skip_bad_files,
                                    progress=not args.no_progress and is_main)
    try:
        ssl = pretrained.build_ssl(args.ssl, args.prune_units, args.seed)
        rng = torch.get_rng_state()         # the head's initialisation must not depend on
        if is_main:                         # whether a corpus was generated
            spec, data_check = prepare()
        barrier(world)
        if not is_main:
            spec, data_check = prepare()
        torch.set_rng_state(rng)
        return ssl, spec, data_check, make_schedule(args, len(spec.train_items), world)
    except (OSError, ValueError, RuntimeError) as e:
        run_folder.fail(e, is_main)


@dataclass
class Run:
    """What the loop works on; built by start_run."""
    model: Classifier
    train_model: nn.Module          # the model, or its DDP wrapper
    lambdas: torch.Tensor           # [lambda1, lambda2]
    optimizer: torch.optim.Optimizer
    lambda_optimizer: torch.optim.Optimizer
    train_set: datasets.TrainCrops
    spec: datasets.DataSpec
    sched: Schedule
    params0: int                    # the dense SSL model: the denominator of s_hat
    step: int
    attempts: list
    logger: run_folder.Logger
    t_start: float                  # wall clock of this attempt
    workers: int                    # data-loading processes


def start_run(args, device, world, is_main, amp, t_start) -> Run:
    """Build the model and optimisers, open (or resume) the run folder, write config.json."""
    ssl, spec, data_check, sched = load_inputs(args, is_main, world)   # user errors end here
    augmenter = (augment.Augmenter(args.musan, args.rir, args.aug_prob)
                 if (args.musan or args.rir) else None)
    reverb_later = args.reverb_on == "device" or (args.reverb_on == "auto" and device.type == "cuda")
    train_set = datasets.TrainCrops(spec.train_items, args.crop_seconds, seed=args.seed,
                                    augment=augmenter, reverb_later=reverb_later)
    model = build_classifier(args, ssl, spec).to(device)
    params0 = model.ssl.num_params()
    lambdas = torch.zeros(2, device=device, requires_grad=True)
    optimizer, lambda_optimizer = make_optimizers(model, lambdas, args)
    step, attempts = run_folder.open_run(args.out, args.resume, model, lambdas, optimizer,
                                         lambda_optimizer, is_main)
    train_model = nn.parallel.DistributedDataParallel(model) if world > 1 else model
    logger = run_folder.Logger(args.out, sched.total_steps, step, is_main, not args.no_progress)
    workers = (args.num_workers if args.num_workers is not None
               else devices.default_workers(device, world))
    if is_main:
        run_folder.write_config(args.out, dict(
            vars(args), num_workers_used=workers, amp_used=amp, device=str(device), world_size=world, params0=params0,
            num_classes=spec.num_classes, num_train_items=len(train_set),
            p_bonafide=model.p_bonafide, lr_effective=args.lr * sched.lr_scale,
            final_lr_effective=args.final_lr * sched.lr_scale, **vars(sched),
            data_check=data_check), logger)
        schedule_notes(args, sched, step)
    return Run(model, train_model, lambdas, optimizer, lambda_optimizer, train_set, spec, sched,
               params0, step, attempts, logger, t_start, workers)


# ------------------------------------------------------------------------ each step
def train_step(run: Run, waves, labels, args, device, amp, rirs=()) -> list:
    """One optimisation step of eq. (1) -> the logged values, in one host-device sync.
    rirs: (RIRs (B, L), their lengths (B,)) when the loader left the reverb to us."""
    model, sched, step = run.model, run.sched, run.step
    if step == sched.settle_start:
        settle(model.ssl, run.params0, args.target, run.logger, step)
    settling = step >= sched.settle_start
    model.train()
    for gate in model.ssl.gates().values():       # settle: train the exported masks
        gate.train(not settling)
    lr = set_learning_rates(run.optimizer, step, args, sched)
    target = target_at(step, sched.sparsity_warmup_steps, args.target, args.sparsity_schedule)
    if run.spec.task == "sv":      # the toy recipes ramp the margin up (classes separate first)
        model.loss_head.set_margin(heads.margin_schedule(step, sched.total_steps, args.aam_margin,
                                                         end_frac=args.margin_warmup))
    waves = waves.to(device, non_blocking=True)
    if rirs:
        waves = augment.reverberate(waves, *(r.to(device, non_blocking=True) for r in rirs))
    with autocast(device, amp):
        task_loss = run.train_model(waves, labels.to(device, non_blocking=True))
    # the size and the penalty in float64, outside autocast
    size, expected, deployed = model_size(model.ssl, args.size_estimate)
    reg, s_hat = lagrangian(size, run.params0, target, run.lambdas)
    loss = task_loss.float() + reg                                                # eq. (1)

    run.optimizer.zero_grad(set_to_none=True)
    run.lambda_optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if args.grad_clip:
        nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
    run.optimizer.step()                        # model and gates: descend
    if not settling:
        run.lambda_optimizer.step()             # multipliers: ascend
        with torch.no_grad():
            run.lambdas[0].clamp_(min=0.0)      # a price for missing sparsity is never negative
    run.step += 1
    values = torch.stack([loss.detach(), task_loss.detach().float(), s_hat.detach(),
                          expected.detach(), deployed.detach(), *run.lambdas.detach()]).tolist()
    return values + [target, lr]


def save_progress(run: Run, args, stop, is_main, world, device, last_save) -> tuple:
    """Checkpoint (every --save-every steps, every --save-minutes, at a stop and at the end)
    and the averaging snapshots. -> (stopping, time of the last save)."""
    step, ckpt_path = run.step, os.path.join(args.out, "checkpoint.pt")
    if is_main and len(run.sched.snapshot_steps) > 1 and step in run.sched.snapshot_steps:
        checkpoints.save_snapshot(args.out, step, run.model)
    stopping, saving = devices.agree(stop.requested,
                                     time.time() - last_save > 60 * args.save_minutes,
                                     world, device)
    if saving or stopping or step % args.save_every == 0 or step == run.sched.total_steps:
        run.attempts[-1].update(last_step=step, seconds=round(time.time() - run.t_start, 2),
                                ended=f"stopped by {stop.name}" if stopping else "running")
        if is_main:
            checkpoints.save_checkpoint(ckpt_path, step, run.model, run.lambdas, run.optimizer,
                                        run.lambda_optimizer, run_folder.plain_values(vars(args)),
                                        run.attempts)
        last_save = time.time()
        barrier(world)
    return stopping, last_save


def periodic_eval(model, spec, device, amp, logger, step):
    """The validation set with deterministic masks (rank 0)."""
    results, _ = scoring.evaluate_sets(utterance_scorer(model, device, amp), spec,
                                       [spec.valid_name])
    m = results[spec.valid_name]
    logger.log(dict(step=step, eval=spec.valid_name, eer=m["eer"], min_dcf=m["min_dcf"]))
    logger.print(f"step {step}: {spec.valid_name} EER {100 * m['eer']:.2f}% "
                 f"minDCF {m['min_dcf']:.4f} (deterministic masks)")


# ---------------------------------------------------------------------- the end
def final_scores(model, spec, device, args, amp):
    """Masked and pruned metrics (the raw scores must agree) and pruned_model.pt; for SV
    also the authors' scoring of the pruned model: mean subtraction + AS-norm against a
    cohort of the training speakers (scoring.py)."""
    masked, masked_raw = scoring.evaluate_sets(utterance_scorer(model, device, amp), spec)
    masked_ssl = model.ssl
    model.ssl = masked_ssl.prune()
    model_file = os.path.join(args.out, "pruned_model.pt")
    save_classifier(model, model_file, extra={"train_args": run_folder.plain_values(vars(args))})
    score_fn, cohort = utterance_scorer(model, device, amp), None
    if spec.task == "sv" and args.cohort_utts:
        cohort = scoring.cached_cohort(score_fn, spec.train_items, args.cohort_utts,
                                       os.path.join(args.out, "cohort.pt"),
                                       key=checkpoints.file_sha256(model_file))
    pruned, pruned_raw = scoring.evaluate_sets(score_fn, spec, cohort=cohort)
    return masked_ssl, masked, masked_raw, pruned, pruned_raw, cohort


def finish(run: Run, device, args, amp):
    """Average the snapshots, evaluate masked, prune physically, evaluate pruned (the
    scores must agree), save the pruned classifier, time dense against pruned, report."""
    model, spec, params0, attempts = run.model, run.spec, run.params0, run.attempts
    if len(run.sched.snapshot_steps) > 1:
        checkpoints.load_averaged_snapshots(args.out, run.sched.snapshot_steps, model)
    model.eval()
    masked_ssl, masked, masked_raw, pruned, pruned_raw, cohort = final_scores(
        model, spec, device, args, amp)
    dense_ssl = MaskedWavLM(replace(masked_ssl.config, prune_units=[])).to(device)
    dense_time, pruned_time = devices.inference_seconds([dense_ssl, model.ssl], device)
    test, params_after = spec.test_name, model.ssl.num_params()
    attempts[-1].update(seconds=round(time.time() - run.t_start, 2),
                        ended="re-exported" if args.re_export else "finished")
    report = dict(
        data=args.data, task=spec.task, target=args.target,
        params_before=params0, params_after=params_after, sparsity=1.0 - params_after / params0,
        params_with_head=params_after + sum(p.numel() for p in model.head.parameters()),
        eer_masked=masked[test]["eer"], eer_pruned=pruned[test]["eer"],
        min_dcf_masked=masked[test]["min_dcf"], min_dcf_pruned=pruned[test]["min_dcf"],
        test_set=test, masked=masked, pruned=pruned, averaged_steps=run.sched.snapshot_steps,
        cohort=None if cohort is None else {k: cohort[k] for k in ("speakers", "utterances",
                                                                     "per_speaker")},
        max_score_diff=max(float(np.abs(masked_raw[n][0] - pruned_raw[n][0]).max())
                           for n in pruned_raw),
        speedup=dense_time / pruned_time, dense_seconds=dense_time, pruned_seconds=pruned_time,
        structure=masked_ssl.structure_summary(), attempts=attempts,
        seconds=round(sum(a["seconds"] for a in attempts), 2))
    run_folder.write_report(args.out, report, masked_ssl.config, pruned_raw[test],
                            det_title=f"{args.data}: pruned model, "
                                      f"sparsity {report['sparsity']:.3f}")
    print(run_folder.summary_line(report, args.out))
    return report


# ------------------------------------------------------------------------ the run
def train(args, stop, argv):
    try:
        device, rank, world, amp = devices.setup_process(args.device, args.threads, args.amp)
    except ValueError as e:                              # e.g. --device cuda without one
        run_folder.fail(e)
    is_main = rank == 0
    if run_folder.check_out_folder(args.out, args.resume, args.re_export):
        return None
    run = start_run(args, device, world, is_main, amp, time.time())
    sched, logger = run.sched, run.logger

    # --- the loop: one optimisation step of eq. (1) per batch
    stop.defer()                        # from here on, a signal ends the loop after its step
    loader_gen = torch.Generator()      # the loader must not draw from the global RNG (resume)
    last_save = time.time()
    while run.step < sched.total_steps:
        epoch, offset = divmod(run.step, sched.steps_per_epoch)
        run.train_set.set_epoch(epoch)
        batches = datasets.epoch_batches(len(run.train_set), args.batch_size, epoch, args.seed,
                                         rank, world)
        loader = DataLoader(run.train_set, batch_sampler=batches[offset:],
                            num_workers=run.workers, collate_fn=datasets.collate_pad,
                            generator=loader_gen, pin_memory=device.type == "cuda")
        for waves, _, labels, *rirs in loader:
            *values, target, lr = train_step(run, waves, labels, args, device, amp, rirs)
            if not math.isfinite(values[0]):
                run_folder.fail(f"loss is {values[0]} at step {run.step}; the last good "
                                f"checkpoint is {os.path.join(args.out, 'checkpoint.pt')}: lower "
                                f"--lr or --reg-lr and --resume", is_main)
            logger.log_step(run.step, values, target, run.params0, lr,
                            round(time.time() - run.t_start, 2))
            if args.eval_every and run.step % args.eval_every == 0 and run.step < sched.total_steps:
                if is_main:
                    periodic_eval(run.model, run.spec, device, amp, logger, run.step)
                barrier(world)
            stopping, last_save = save_progress(run, args, stop, is_main, world, device, last_save)
            if stopping:
                run_folder.stopped(logger, stop, run.step, sched.total_steps, argv, world, is_main)
            if run.step >= sched.total_steps:
                break
    logger.close()

    stop.deferred = False                 # a signal during the final evaluation ends it at once
    report = finish(run, device, args, amp) if is_main else None
    barrier(world)
    if world > 1:
        dist.destroy_process_group()
    return report


# ------------------------------------------------------------------------------- main
def main(argv=None):
    args = parse_args(argv)
    argv = sys.argv[1:] if argv is None else list(argv)
    stop = devices.StopRequest()          # Ctrl-C / SIGTERM: finish the step, save, exit
    try:
        return train(args, stop, argv)
    except KeyboardInterrupt:          # before the loop, in the final evaluation, or a
        run_folder.interrupted(stop, args.out, argv)                   # second Ctrl-C
    finally:
        stop.restore()


if __name__ == "__main__":
    main()
