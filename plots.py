"""
Every figure the library draws: DET curves of scored systems, a training run's curves and
the structure that survived pruning, and the pre-training curves. They read numbers
(scores and labels, log.jsonl rows, a structure summary) and write a PNG; nothing here
trains or scores.

matplotlib's object API (Figure, no pyplot): no global state and no GUI backend, so the
figures can be drawn from a training process, a DataLoader worker or a notebook alike.
"""

import json

import numpy as np
import torch
from matplotlib.figure import Figure

import metrics

# --------------------------------------------------------------------------- DET curves

_DET_TICKS = [1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8,
              0.9, 0.95]
# label priority: decades first, then 5s, then 2s, each only where it does not crowd
# the labels already placed (the probit axis squeezes the tails together)
_TICK_PRIORITY = [1e-4, 1e-3, 0.01, 0.1, 0.4, 0.8, 5e-4, 5e-3, 0.05, 0.2, 0.6, 0.9, 0.95,
                  2e-4, 2e-3, 0.02]


def _probit(p):
    """Standard normal quantile (the DET axis warping)."""
    return torch.special.ndtri(torch.as_tensor(np.asarray(p, dtype=np.float64))).numpy()


def _pct(p):
    return f"{100 * p:g}"


def _det_ticks(lo, hi, min_gap=0.07):
    """Tick probabilities in [lo, hi] at least min_gap (fraction of the axis) apart."""
    a, b = _probit([lo, hi])
    placed = []
    for t in _TICK_PRIORITY:
        if lo <= t <= hi and all(abs(_probit(t) - _probit(u)) >= min_gap * (b - a) for u in placed):
            placed.append(t)
    return sorted(placed)


def plot_det(systems: dict, path, title: str = "DET curve",
             xlabel: str = "False alarm rate (%)", ylabel: str = "Miss rate (%)"):
    """DET curves of several systems on normal-deviate axes, saved as a PNG.

    systems: {name: (scores, labels)}. On these axes two Gaussian score distributions
    give a straight line; each system's EER point (interp mode) is marked on the
    diagonal P_miss = P_fa.
    """
    curves, lo, worst = [], 0.01, 0.0
    for name, (scores, labels) in systems.items():
        p_miss, p_fa, thr = metrics.det_curve(scores, labels)
        eer, _ = metrics.eer_from_curve(p_miss, p_fa, thr, "interp")
        y = metrics.to_numpy(labels).astype(bool)
        lo = min(lo, 1.0 / max(int(y.sum()), int((~y).sum())))
        worst = max(worst, eer)
        curves.append((name, p_miss, p_fa, eer))
    lo = max([t for t in _DET_TICKS if t <= max(lo, 1e-4)])  # axis starts on a tick
    hi = 0.5 if worst < 0.35 else 0.95
    ticks = _det_ticks(lo, hi)
    clip = lambda p: np.clip(p, lo / 2, 1 - lo / 2)  # 0 % maps just outside the axes

    fig = Figure(figsize=(6.4, 6.4), dpi=110)
    ax = fig.add_subplot()
    diag = _probit([lo, hi])
    ax.plot(diag, diag, color="0.6", lw=0.8, ls="--", label="miss = false alarm")
    for k, (name, p_miss, p_fa, eer) in enumerate(curves):
        x, y = _probit(clip(p_fa)), _probit(clip(p_miss))
        # drop points closer than ~1/1000 of an axis unit to their predecessor: 10^7 trials
        # would otherwise mean 10^7 vertices for a few hundred visible pixels
        q = np.round(np.stack([x, y]) / 2e-3)
        keep = np.ones(x.size, dtype=bool)
        keep[1:] = (q[:, 1:] != q[:, :-1]).any(0)
        keep[-1] = True
        color = f"C{k}"
        ax.plot(x[keep], y[keep], color=color, lw=1.6, label=f"{name} (EER {100 * eer:.2f}%)")
        e = _probit(clip(eer))
        ax.plot([e], [e], "o", color=color, ms=7, mfc="white", mew=1.8)
    t = _probit(ticks)
    ax.set_xticks(t, [_pct(p) for p in ticks])
    ax.set_yticks(t, [_pct(p) for p in ticks])
    ax.set_xlim(*diag)
    ax.set_ylim(*diag)
    ax.set_aspect("equal")
    ax.grid(True, color="0.9")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize=9, framealpha=0.9)
    fig.tight_layout()
    fig.savefig(path)


# -----------------------------------------------------------------------------


# ------------------------------------------------------------------- a training run
def plot_training_curves(log_path, png_path):
    """Task loss, s_hat against t, and the two multipliers over training."""
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
    L = len(structure["heads"])
    fig = Figure(figsize=(11, 3.4), dpi=100)
    ax = fig.subplots(1, 3)
    layers = np.arange(L)
    ax[0].bar(layers, [h / config.num_heads for h in structure["heads"]], color="C0")
    ax[0].set(title="attention heads kept", xlabel="transformer layer", ylabel="fraction kept",
              ylim=(0, 1.05))
    ax[1].bar(layers, [u / config.ffn_dim for u in structure["ffn_units"]], color="C1")
    ax[1].set(title="FFN units kept", xlabel="transformer layer", ylabel="fraction kept",
              ylim=(0, 1.05))
    for a, key in ((ax[0], "attention"), (ax[1], "ffn")):
        for i, on in enumerate(structure[key]):
            if not on:
                a.text(i, 0.02, "block\nremoved", ha="center", fontsize=7, color="red")
    convs = [c for c, _, _ in config.conv_layers]
    ax[2].bar(np.arange(len(convs)), [k / c for k, c in zip(structure["conv_channels"], convs)],
              color="C2")
    ax[2].set(title="CNN channels kept", xlabel="conv layer", ylabel="fraction kept",
              ylim=(0, 1.05))
    fig.tight_layout()
    fig.savefig(png_path)


# ------------------------------------------------------------------------- pre-training
def plot_pretraining(log_path, png_path):
    """pretrain.py's run: masked-prediction loss and cluster accuracy, training and held out."""
    rows = [json.loads(line) for line in open(log_path)]
    steps = np.array([r["step"] for r in rows])
    k = max(1, len(rows) // 50)                           # running mean for the noisy curves
    smooth = lambda v: np.convolve(v, np.ones(k) / k, mode="valid")
    fig = Figure(figsize=(10, 3.5), dpi=100)
    a, b = fig.subplots(1, 2)
    a.plot(steps[k - 1:], smooth([r["loss"] for r in rows]), label="training (masked frames)")
    ev = [r for r in rows if "heldout_loss" in r]
    a.plot([r["step"] for r in ev], [r["heldout_loss"] for r in ev], "o-", label="held out")
    a.set(xlabel="step", ylabel="cross-entropy", title="masked prediction loss")
    a.legend()
    b.plot(steps[k - 1:], smooth([r["masked_acc"] for r in rows]), label="masked frames")
    b.plot(steps[k - 1:], smooth([r["unmasked_acc"] for r in rows]), label="unmasked (not trained)")
    b.plot([r["step"] for r in ev], [r["heldout_masked_acc"] for r in ev], "o-",
           label="held out, masked")
    b.set(xlabel="step", ylabel="cluster accuracy", title="which of the K clusters")
    b.legend()
    fig.tight_layout()
    fig.savefig(png_path)
