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
reader never sees half a file. The log is appended line by line and flushed.
"""

import json
import os
import sys

import numpy as np
import torch

import evaluate
import wavlm_masked


def write_json(path, obj):
    """Atomically (temp file + rename)."""
    with open(path + ".tmp", "w") as f:
        json.dump(obj, f, indent=2)
    os.replace(path + ".tmp", path)


# ------------------------------------------------------------------------ checkpoints
def save_checkpoint(path, step, model, lambdas, optimizer, lambda_optimizer, args: dict):
    """Everything needed to continue bit-for-bit: weights, gates, multipliers, optimiser
    states, RNG states, data position (= step). Tensors and plain values only, so the
    file loads with weights_only=True."""
    state = {"step": step, "model": model.state_dict(), "ssl_config": model.ssl.config.to_dict(),
             "lambdas": lambdas.detach().cpu(), "optimizer": optimizer.state_dict(),
             "lambda_optimizer": lambda_optimizer.state_dict(), "torch_rng": torch.get_rng_state(),
             "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
             "args": args}
    wavlm_masked.atomic_torch_save(state, path)


def load_checkpoint(path, model, lambdas, optimizer, lambda_optimizer) -> int:
    """Restore what save_checkpoint wrote; returns the step to continue from."""
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


# ----------------------------------------------------------------------- the report
def write_report(out, report, config, test_scores, det_title):
    """report.json and the three figures. `config`: the SSL config before pruning;
    `test_scores`: (scores, labels) of the pruned model on the test set."""
    path = lambda name: os.path.join(out, name)
    write_json(path("report.json"), report)
    plot_training_curves(path("log.jsonl"), path("training_curves.png"))
    plot_structure(report["structure"], config, path("pruned_structure.png"))
    evaluate.plot_det({f"pruned ({report['test_set']})": test_scores}, path("det.png"), title=det_title)


# ------------------------------------------------------------------------------ plots
def plot_training_curves(log_path, png_path):
    """Task loss, s_hat against t, and the two multipliers over training."""
    from matplotlib.figure import Figure          # no pyplot: no global state, no GUI backend
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
    ax[0].set(title="attention heads kept", xlabel="transformer layer", ylabel="fraction kept",
              ylim=(0, 1.05))
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
