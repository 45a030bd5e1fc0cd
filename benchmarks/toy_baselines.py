"""
Classical baselines on the toy corpora, to show the toy tasks are neither
trivial nor hopeless, and what a trained model has to beat. Measured on the
toy corpora of version 3 (toy_corpus.VERSION; docs/results.md "Results on the offline
toy corpora"): SV 22.67% EER on 2,400 trials; CM dev 10.00%, eval 40.67%,
unseen attacks 45.00%. The CM features are band-energy statistics, which the
eval-only codecs (narrow band, transform coding) shift: the classifier learned
on clean train data is near chance on eval, as classical countermeasures are
under channel mismatch.

- SV (`--data toy`): per-utterance MFCC statistics (mean and standard
  deviation of MFCC 1-19 over frames), standardized with training-set
  statistics, scored by cosine similarity on the Vox1-O-style trials.
- CM (`--data toy_spoof`): per-utterance spectral statistics (mean and
  standard deviation of 32 log band energies and of their frame-to-frame
  deltas) and a logistic regression trained on the train split, scored on
  dev, eval and the unseen-attack eval subset.

Usage: python benchmarks/toy_baselines.py [--seed 0] [--size default] [--cache-dir DIR]
"""

import argparse
import os
import sys
import time

import torch
import torchaudio

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from data import SAMPLE_RATE, load_audio, prepare_data  # noqa: E402
from metrics import compute_eer  # noqa: E402

MFCC = torchaudio.transforms.MFCC(SAMPLE_RATE, n_mfcc=20, melkwargs=dict(
    n_fft=512, win_length=400, hop_length=160, n_mels=40))
SPEC = torchaudio.transforms.Spectrogram(n_fft=512, win_length=400, hop_length=160, power=2.0)


def mfcc_stats(path):
    c = MFCC(load_audio(path))[1:]                 # drop c0: it is just loudness
    return torch.cat([c.mean(1), c.std(1)])


def spectral_stats(path):
    p = SPEC(load_audio(path))[1:]                 # (256 bins, frames), DC dropped
    bands = torch.log(p.reshape(32, 8, -1).mean(1) + 1e-10)
    d = bands[:, 1:] - bands[:, :-1]
    return torch.cat([bands.mean(1), bands.std(1), d.std(1)])


def features(paths, fn):
    return torch.stack([fn(p) for p in paths])


def sv_baseline(spec):
    train = features([p for p, _ in spec.train_items], mfcc_stats)
    mu, sd = train.mean(0), train.std(0) + 1e-8
    paths = spec.eval_paths()
    emb = (features(paths, mfcc_stats) - mu) / sd
    emb = torch.nn.functional.normalize(emb, dim=1)
    index = {p: i for i, p in enumerate(paths)}
    out = {}
    for name in spec.eval_names():
        trials = spec.sv_trials(name)
        scores = [float(emb[index[a]] @ emb[index[b]]) for _, a, b in trials]
        out[name] = compute_eer(scores, [y for y, _, _ in trials])[0]
    return out


def logistic_regression(x, y, weight_decay=1e-2, steps=300):
    """L2-regularized logistic regression fitted with L-BFGS (full batch)."""
    w = torch.zeros(x.shape[1], requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=0.5, max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(x @ w + b, y) \
            + weight_decay * w.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return lambda z: (z @ w + b).detach()


def cm_baseline(spec):
    train = features([p for p, _ in spec.train_items], spectral_stats)
    mu, sd = train.mean(0), train.std(0) + 1e-8
    y = torch.tensor([float(l) for _, l in spec.train_items])
    score = logistic_regression((train - mu) / sd, y)
    out = {}
    for name in spec.eval_names():
        items = spec.cm_items(name)
        s = score((features([p for p, _ in items], spectral_stats) - mu) / sd)
        out[name] = compute_eer(s.tolist(), [l for _, l in items])[0]
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", default="default")
    ap.add_argument("--cache-dir", default=None)
    args = ap.parse_args()
    torch.set_grad_enabled(True)
    for name, fn, what in (("toy", sv_baseline, "MFCC stats + cosine"),
                           ("toy_spoof", cm_baseline, "spectral stats + logistic regression")):
        t0 = time.time()
        spec = prepare_data(name, cache_dir=args.cache_dir, seed=args.seed, toy_size=args.size)
        t1 = time.time()
        sizes = {n: len(spec.sv_trials(n) if spec.task == "sv" else spec.cm_items(n))
                 for n in spec.eval_names()}
        print(f"{name}: {len(spec.train_items)} train files, {spec.num_classes} classes, "
              f"eval sets {sizes} (prepare {t1 - t0:.1f} s)")
        eers = fn(spec)
        print(f"{name} baseline ({what}): "
              + ", ".join(f"{k} EER {100 * v:.2f}%" for k, v in eers.items())
              + f"  ({time.time() - t1:.1f} s)")


if __name__ == "__main__":
    main()
