"""
What a training run keeps in its folder (`--out`), and how it is written.

    runs/<data>_t<target>/
      config.json            the resolved recipe (every default filled in)
      log.jsonl              one JSON line per step, plus the periodic evaluations
      checkpoint.pt          everything needed to continue bit-for-bit (--resume)
      pruned_model.pt        the exported classifier (classifier.save_classifier)
      report.json            final metrics, sizes, speed-up, structure
      training_curves.png    task loss, sparsity against target, the two multipliers
      pruned_structure.png   what survived, per layer

Nothing is lost on a crash: every file that is rewritten goes to a temporary name first
and is renamed over the old one (os.replace is atomic on POSIX and Windows), so a
reader never sees half a file. The log is appended line by line and flushed. Ctrl-C
(SIGINT) and a scheduler's pre-emption (SIGTERM) let the step in flight finish, write a
checkpoint, and exit with the shell's code for the signal (devices.StopRequest, `stopped`).
"""

import json
import os
import shlex
import sys
import time

import checkpoints
import plots
from checkpoints import write_json


# ---------------------------------------------------------------------- interruptions
def stopped(logger, stop, step, total, argv, world, is_main):
    """The end of a run stopped by a signal, after its checkpoint was written."""
    logger.close()
    if is_main:
        print(f"\n{stop.name}: stopped after step {step} of {total}; checkpoint written. Continue "
              f"with:\n  {resume_command(argv, world)}", file=sys.stderr)
    sys.exit(stop.exit_code())


def interrupted(stop, out, argv):
    """A signal outside the loop (loading, the final evaluation) or a second Ctrl-C: leave
    at once, and say where the run can continue from."""
    ckpt = os.path.join(out, "checkpoint.pt")
    print(f"\n{stop.name}: stopped. " + (
        f"The last checkpoint is {ckpt}; continue with:\n  {resume_command(argv)}"
        if os.path.exists(ckpt) else "Nothing was saved yet; run the same command again."),
        file=sys.stderr)
    sys.exit(stop.exit_code())


def resume_command(argv, world=1) -> str:
    """The command line that continues this run: the same arguments plus --resume."""
    args = [a for a in argv if a not in ("--resume", "--re-export")] + ["--resume"]
    launcher = f"torchrun --nproc_per_node={world} " if world > 1 else "python "
    return launcher + " ".join(shlex.quote(a) for a in [sys.argv[0]] + args)


# --------------------------------------------------------------------------- attempts
def new_attempt(first_step) -> dict:
    """One start of the run, fresh or resumed; its seconds grow as it goes."""
    return dict(started=time.strftime("%Y-%m-%dT%H:%M:%S"), first_step=first_step,
                last_step=first_step, seconds=0.0, ended="running")


def close_crashed_attempt(attempts, log_path, step):
    """The attempt saved in a checkpoint went on after it: by the log, up to which step
    and for how long, before it crashed or was killed (read before truncate_log)."""
    last = attempts[-1]
    if last["ended"] != "running":                 # it stopped cleanly (a signal)
        return attempts
    rows = ([json.loads(line) for line in open(log_path) if line.strip()]
            if os.path.exists(log_path) else [])
    rows = [r for r in rows if "seconds" in r and r["step"] >= last["last_step"]]
    if rows:
        last.update(last_step=rows[-1]["step"], seconds=max(last["seconds"], rows[-1]["seconds"]))
    last["ended"] = f"crashed or killed; steps {step + 1}..{last['last_step']} redone"
    return attempts


def start_fresh(out):
    """A run folder without a checkpoint but with a log: an earlier attempt died before
    its first checkpoint. Move its log aside (said), so that the new log has one line
    per step."""
    log = os.path.join(out, "log.jsonl")
    if os.path.exists(log) and os.path.getsize(log) > 0:
        os.replace(log, os.path.join(out, "log.previous.jsonl"))
        print(f"note: {out} holds the log of an earlier attempt that stopped before its first "
              f"checkpoint; starting over (that log is now log.previous.jsonl)")


# ------------------------------------------------------------------ opening a run
def fail(message, is_main=True):
    """A user error: one clear message, no traceback, exit code 2 (as argparse does)."""
    if is_main:
        print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def check_out_folder(out, resume, re_export):
    """What --out already holds decides what may happen: a checkpoint needs --resume,
    --resume needs a checkpoint, and a finished run is only exported again on request.
    Returns True when there is nothing to do."""
    ckpt, report = os.path.join(out, "checkpoint.pt"), os.path.join(out, "report.json")
    if not resume and os.path.exists(ckpt):
        fail(f"{ckpt} exists; pass --resume to continue it or choose another --out")
    if resume and not os.path.exists(ckpt):
        fail(f"--resume but there is no checkpoint at {ckpt}; start without --resume")
    if resume and os.path.exists(report) and not re_export:
        print(f"{out} is a finished run (report.json); nothing to do. Add --re-export to evaluate, "
              f"prune and export it again.")
        return True
    return False


def open_run(out, resume, model, lambdas, optimizer, lambda_optimizer, is_main):
    """Start or continue the run in `out` -> (step, attempts), the last attempt being
    this one. --resume loads the checkpoint and cuts the log back to it."""
    if not resume:
        if is_main:
            os.makedirs(out, exist_ok=True)
            start_fresh(out)
        return 0, [new_attempt(0)]
    step, attempts = checkpoints.load_checkpoint(os.path.join(out, "checkpoint.pt"), model, lambdas,
                                                 optimizer, lambda_optimizer)
    report = os.path.join(out, "report.json")
    if os.path.exists(report):                 # a finished run, exported again: its report
        with open(report) as f:                # knows how the last attempt ended
            attempts = json.load(f).get("attempts", attempts)
    elif is_main:
        log = os.path.join(out, "log.jsonl")
        attempts = close_crashed_attempt(attempts, log, step)
        truncate_log(log, step)
    return step, attempts + [new_attempt(step)]


def plain_values(options: dict) -> dict:
    """The options a checkpoint or a model file may hold: plain values only."""
    return {k: v for k, v in options.items()
            if isinstance(v, (int, float, str, bool, list, type(None)))
            and k not in ("resume", "re_export")}


def write_config(out, config: dict, logger):
    """config.json, and the same on screen (without the long file-check lists)."""
    write_json(os.path.join(out, "config.json"), config)
    logger.print("resolved config:\n"
                 + json.dumps({k: v for k, v in config.items() if k != "data_check"}, indent=2))


# ---------------------------------------------------------------------------- logging
def truncate_log(path, step):
    """After a crash the log holds steps past the last checkpoint; the resumed run
    redoes them, so drop those lines (rewritten atomically) to keep one line per step."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        keep = [line for line in f if line.strip() and json.loads(line)["step"] <= step]
    checkpoints.atomic_write_text(path, "".join(keep))


class Logger:
    """JSON lines on disk (every step) and a tqdm bar on screen; rank 0 only."""

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

    def log_step(self, step, values, target, params0, lr, seconds):
        """One training step: the loss terms, both sparsity estimates, the multipliers."""
        loss, task_loss, s_hat, expected, deployed, lambda1, lambda2 = values
        self.log(dict(step=step, loss=loss, task_loss=task_loss, s_hat=s_hat,
                      s_expected=1 - expected / params0, s_deployed=1 - deployed / params0,
                      target=target, lambda1=lambda1, lambda2=lambda2, lr=lr, seconds=seconds),
                 show=dict(loss=f"{task_loss:.3f}", s=f"{s_hat:.3f}", t=f"{target:.3f}",
                           l1=f"{lambda1:.2f}", l2=f"{lambda2:.2f}"))
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


# ----------------------------------------------------------------------- the report
def write_report(out, report, config, test_scores, det_title):
    """report.json and the three figures. `config`: the SSL config before pruning;
    `test_scores`: (scores, labels) of the pruned model on the test set."""
    path = lambda name: os.path.join(out, name)
    write_json(path("report.json"), report)
    plots.plot_training_curves(path("log.jsonl"), path("training_curves.png"))
    plots.plot_structure(report["structure"], config, path("pruned_structure.png"))
    plots.plot_det({f"pruned ({report['test_set']})": test_scores}, path("det.png"),
                      title=det_title)


def summary_line(report, out) -> str:
    """The last line a run prints: size, the test set's metrics, speed-up, where it went."""
    test = report["test_set"]
    line = (f"done in {report['seconds']:.0f} s: sparsity {report['sparsity']:.4f} "
            f"({report['params_before']:,} -> {report['params_after']:,} params), {test} EER "
            f"masked {100 * report['eer_masked']:.2f}% / pruned {100 * report['eer_pruned']:.2f}%, "
            f"minDCF {report['min_dcf_pruned']:.4f}")
    asnorm = report["pruned"][test].get("asnorm")
    if asnorm:
        line += (f"; with mean subtraction + AS-norm EER {100 * asnorm['eer']:.2f}%, "
                 f"minDCF {asnorm['min_dcf']:.4f}")
    return line + f", speed-up x{report['speedup']:.2f}. Outputs in {out}"
