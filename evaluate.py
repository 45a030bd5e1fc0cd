"""
Evaluation for speaker verification (SV) and anti-spoofing (CM): exact, vectorised
metrics, trial/score/protocol file formats, cosine + AS-norm scoring, DET plots, CLI.

Reproduces the numbers of the seed paper (Peng et al. 2025, "Hybrid Pruning",
arXiv 2508.16232, Sec. 4): EER on VoxCeleb1-O/E/H and EER/minDCF on ASVspoof5.

Conventions (used everywhere in this file)
- A higher score means target (SV: same speaker) or bona fide (CM).
- labels: 1 = target / bona fide, 0 = non-target / spoof.
- A threshold t ACCEPTS a trial when score >= t.

The operating points. Sort the n scores; let u_0 < u_1 < ... < u_{U-1} be the DISTINCT
values. The only decisions a threshold can make are "accept every score >= u_i"
(i = 0..U-1) or "accept nothing" (i = U), so there are exactly U+1 operating points

    P_miss(i) = #{targets with score < u_i} / #targets         (non-decreasing in i)
    P_fa(i)   = #{non-targets with score >= u_i} / #non-targets (non-increasing in i)

Tied scores are never split: a threshold strictly inside a tie does not exist. (Codes that
walk the sorted list one trial at a time invent points between tied trials, whose value
depends on the sort order of the labels.) Two sorts, one merge, two binary searches: O(n log n).

Metrics
- EER, mode="interp" (NIST SRE / wespeaker): the curves cross between two consecutive
  points i-1, i (P_miss - P_fa goes from < 0 to >= 0). Interpolate linearly between
  them and read off the common value. Geometrically this is the EER of the ROC segment
  joining the two points, achievable by randomising between the two thresholds.
- EER, mode="asvspoof5" (the ASVspoof5 evaluation package): take the point with the
  smallest |P_miss - P_fa| (the first one on a tie) and report (P_miss + P_fa) / 2.
  On scores without ties it equals the package's number; with ties it uses only the
  tie-free points above, so it can differ from the package there.
- minDCF = min_i [C_miss P_tar P_miss(i) + C_fa (1 - P_tar) P_fa(i)]
           / min(C_miss P_tar, C_fa (1 - P_tar)).
  The normaliser is the cost of the best trivial system (accept all or reject all),
  so minDCF is in [0, 1]. (speechbrain's minDCF is NOT normalised.)
- actDCF: the same cost at the Bayes threshold eta = log(C_fa (1 - P_tar) / (C_miss P_tar))
  applied to LLR scores. Only meaningful if the scores are log-likelihood ratios.
- Cllr = 1/2 [mean_tar log2(1 + e^-s) + mean_non log2(1 + e^s)]  (Brummer & du Preez
  2006): the cross-entropy of the LLRs, in bits; 1.0 = an uninformative system.

Cost presets (docs/method.md Sec. 7): VoxCeleb P_tar = 0.01, C_miss = C_fa = 1. ASVspoof5:
P_spoof = 0.05, C_miss = 1, C_fa = 10, written with bona fide as "target": P_tar = 0.95.
"""

import argparse
import math
import sys
import time
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

import classifier
import data

# -----------------------------------------------------------------------------
# cost presets


class CostModel(NamedTuple):
    p_target: float
    c_miss: float
    c_fa: float


VOXCELEB = CostModel(p_target=0.01, c_miss=1.0, c_fa=1.0)
VOXSRC = CostModel(p_target=0.05, c_miss=1.0, c_fa=1.0)  # VoxSRC challenges use 0.05
ASVSPOOF5 = CostModel(p_target=0.95, c_miss=1.0, c_fa=10.0)  # target = bona fide

EER_MODES = ("interp", "asvspoof5")

# -----------------------------------------------------------------------------
# the operating points


def _to_numpy(x):
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _check(scores, labels):
    """-> (float64 scores (n,), bool labels (n,)), with readable errors."""
    s = _to_numpy(scores).astype(np.float64, copy=False)
    y = _to_numpy(labels)
    if s.ndim != 1 or y.ndim != 1 or s.shape != y.shape:
        raise ValueError(f"scores and labels must be 1-D of equal length, "
                         f"got {s.shape} and {y.shape}")
    if y.dtype != np.bool_:
        if not ((y == 0) | (y == 1)).all():
            raise ValueError("labels must be 0 (non-target / spoof) or 1 (target / bona fide)")
        y = y.astype(bool)
    if not np.isfinite(s).all():
        raise ValueError(f"scores must be finite; {int((~np.isfinite(s)).sum())} are NaN or inf")
    n_tar = int(y.sum())
    if n_tar == 0 or n_tar == y.size:
        raise ValueError(
            f"need both target (label 1) and non-target (label 0) trials, got {n_tar} target "
            f"and {y.size - n_tar} non-target: error rates are undefined for a single class")
    return s, y


def det_curve(scores, labels):
    """All U+1 operating points, ordered by increasing threshold.

    Returns p_miss (U+1,), p_fa (U+1,), thresholds (U+1,): point i accepts
    score >= thresholds[i]; the last threshold is +inf (accept nothing).
    """
    s, y = _check(scores, labels)
    tar, non = np.sort(s[y]), np.sort(s[~y])  # two plain sorts: cheaper than argsort + gathers
    # The distinct scores u_0 < ... < u_{U-1}: merging two sorted runs is O(n) for timsort
    # (numpy's "stable" sort of floats), and equal neighbours mark the ties.
    u = np.sort(np.concatenate([tar, non]), kind="stable")
    u = u[np.append(u[1:] != u[:-1], True)]  # (U,)
    tar_le = np.searchsorted(tar, u, side="right")  # targets with score <= u_g      (U,)
    non_le = np.searchsorted(non, u, side="right")  # non-targets with score <= u_g  (U,)
    # point i rejects exactly the groups g < i
    tar_rejected = np.concatenate(([0], tar_le))  # (U+1,)
    non_rejected = np.concatenate(([0], non_le))  # (U+1,)
    p_miss = tar_rejected / tar.size
    p_fa = (non.size - non_rejected) / non.size  # integer counts first: exact fractions
    thresholds = np.append(u, np.inf)
    return p_miss, p_fa, thresholds


def _eer_from_curve(p_miss, p_fa, thresholds, mode):
    if mode == "interp":
        d = p_miss - p_fa  # non-decreasing, d[0] = -1, d[U] = +1
        i = int(np.searchsorted(d, 0.0, side="left"))  # first point with P_miss >= P_fa, i >= 1
        a = -d[i - 1] / (d[i] - d[i - 1])  # fraction of the way from point i-1 to i, in (0, 1]
        eer = p_miss[i - 1] + a * (p_miss[i] - p_miss[i - 1])
        lo, hi = thresholds[i - 1], thresholds[i]
        thr = lo + a * (hi - lo) if np.isfinite(hi) else lo  # informative only
        return float(eer), float(thr)
    if mode == "asvspoof5":
        j = int(np.argmin(np.abs(p_miss - p_fa)))
        return float((p_miss[j] + p_fa[j]) / 2), float(thresholds[j])
    raise ValueError(f"unknown EER mode {mode!r}, expected one of {EER_MODES}")


def _check_costs(p_target, c_miss, c_fa):
    if not 0.0 < p_target < 1.0 or c_miss <= 0 or c_fa <= 0:
        raise ValueError(f"need 0 < p_target < 1 and positive costs, "
                         f"got {p_target}, {c_miss}, {c_fa}")


def _min_dcf_from_curve(p_miss, p_fa, thresholds, p_target, c_miss, c_fa):
    _check_costs(p_target, c_miss, c_fa)
    dcf = c_miss * p_target * p_miss + c_fa * (1.0 - p_target) * p_fa  # (U+1,)
    j = int(np.argmin(dcf))
    norm = min(c_miss * p_target, c_fa * (1.0 - p_target))
    return float(dcf[j] / norm), float(thresholds[j])


# -----------------------------------------------------------------------------
# public metrics


def compute_eer(scores, labels, mode: str = "interp"):
    """-> (eer in [0, 1], threshold). See the module docstring for the two modes."""
    return _eer_from_curve(*det_curve(scores, labels), mode)


def compute_min_dcf(scores, labels, p_target: float = 0.01, c_miss: float = 1.0, c_fa: float = 1.0):
    """-> (normalised minDCF in [0, 1], threshold at which it is reached)."""
    return _min_dcf_from_curve(*det_curve(scores, labels), p_target, c_miss, c_fa)


def bayes_threshold(p_target: float, c_miss: float, c_fa: float) -> float:
    """LLR threshold that minimises the expected cost: accept when
    C_miss P_tar p(x|tar) >= C_fa (1 - P_tar) p(x|non), i.e. llr >= this value.
    For ASVspoof5 it is -log(beta), beta = C_miss (1 - P_spoof) / (C_fa P_spoof) = 1.9."""
    _check_costs(p_target, c_miss, c_fa)
    return math.log(c_fa * (1.0 - p_target) / (c_miss * p_target))


def compute_act_dcf(llr, labels, p_target: float = 0.01, c_miss: float = 1.0,
                    c_fa: float = 1.0) -> float:
    """Normalised DCF of the decisions llr >= bayes_threshold(...)."""
    s, y = _check(llr, labels)
    accept = s >= bayes_threshold(p_target, c_miss, c_fa)
    p_miss = np.count_nonzero(~accept & y) / np.count_nonzero(y)
    p_fa = np.count_nonzero(accept & ~y) / np.count_nonzero(~y)
    dcf = c_miss * p_target * p_miss + c_fa * (1.0 - p_target) * p_fa
    return float(dcf / min(c_miss * p_target, c_fa * (1.0 - p_target)))


def compute_cllr(llr, labels) -> float:
    """Log-likelihood-ratio cost in bits (natural-log LLRs in)."""
    s, y = _check(llr, labels)
    # log(1 + e^x) = logaddexp(0, x): no overflow for large |x|
    c_tar = np.logaddexp(0.0, -s[y]).mean()
    c_non = np.logaddexp(0.0, s[~y]).mean()
    return float((c_tar + c_non) / (2.0 * math.log(2.0)))


def sv_metrics(scores, labels, p_target: float = VOXCELEB.p_target, c_miss: float = VOXCELEB.c_miss,
               c_fa: float = VOXCELEB.c_fa, eer_mode: str = "interp") -> dict:
    """EER and minDCF from one DET curve. Returns a dict of plain floats/ints."""
    curve = det_curve(scores, labels)
    eer, eer_thr = _eer_from_curve(*curve, eer_mode)
    min_dcf, dcf_thr = _min_dcf_from_curve(*curve, p_target, c_miss, c_fa)
    y = _to_numpy(labels).astype(bool)
    return dict(eer=eer, eer_threshold=eer_thr, eer_mode=eer_mode, min_dcf=min_dcf,
                min_dcf_threshold=dcf_thr, p_target=p_target, c_miss=c_miss, c_fa=c_fa,
                n_target=int(y.sum()), n_nontarget=int((~y).sum()))


def cm_metrics(scores, labels, p_target: float = ASVSPOOF5.p_target,
               c_miss: float = ASVSPOOF5.c_miss,
               c_fa: float = ASVSPOOF5.c_fa, eer_mode: str = "asvspoof5") -> dict:
    """The ASVspoof5 set: EER, minDCF, actDCF, Cllr (the last two assume LLR scores).
    labels: 1 = bona fide, 0 = spoof; p_target is the bona fide prior."""
    out = sv_metrics(scores, labels, p_target, c_miss, c_fa, eer_mode)
    out["act_dcf"] = compute_act_dcf(scores, labels, p_target, c_miss, c_fa)
    out["act_dcf_threshold"] = bayes_threshold(p_target, c_miss, c_fa)
    out["cllr"] = compute_cllr(scores, labels)
    return out


# -----------------------------------------------------------------------------
# file formats


def _float(text, path, lineno):
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{path}:{lineno}: score {text!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"{path}:{lineno}: score {text!r} is not finite")
    return value


def read_scores(path) -> dict:
    """SV score file, one `enroll test score` per line -> {(enroll, test): score}."""
    scores, seen = {}, {}
    for lineno, f in data.text_lines(path):
        if len(f) != 3:
            raise ValueError(f"{path}:{lineno}: expected '<enroll> <test> <score>', "
                             f"got {' '.join(f)!r}")
        key = (f[0], f[1])
        if key in seen:
            raise ValueError(f"{path}:{lineno}: duplicate score for {f[0]} {f[1]} "
                             f"(first on line {seen[key]})")
        seen[key] = lineno
        scores[key] = _float(f[2], path, lineno)
    return scores


def write_scores(path, trials, scores):
    """Write `enroll test score` lines; trials are (label, enroll, test) or (enroll, test)."""
    scores = _to_numpy(scores).ravel()
    if len(trials) != len(scores):
        raise ValueError(f"{len(trials)} trials but {len(scores)} scores")
    with open(path, "w", encoding="utf-8") as f:
        for trial, s in zip(trials, scores):
            f.write(f"{trial[-2]} {trial[-1]} {float(s)!r}\n")  # repr: round-trips exactly


def read_cm_scores(path) -> dict:
    """CM score file, `filename score` per line -> {filename: score}. An optional header
    line whose first field is 'filename' (ASVspoof5 submission format) is skipped."""
    scores, seen = {}, {}
    for lineno, f in data.text_lines(path):
        if not seen and not scores and f[0] == "filename":
            continue
        if len(f) != 2:
            raise ValueError(f"{path}:{lineno}: expected '<filename> <score>', "
                             f"got {' '.join(f)!r}")
        if f[0] in seen:
            raise ValueError(f"{path}:{lineno}: duplicate score for {f[0]} "
                             f"(first on line {seen[f[0]]})")
        seen[f[0]] = lineno
        scores[f[0]] = _float(f[1], path, lineno)
    return scores


def _match_scores(keys, labels, names, score_map, what, source):
    """Scores in the order of `keys` (with `labels` 1/0). A key without a score is an
    error that names it (`names`: how to show each key); extra scores only warn."""
    missing = [name for key, name in zip(keys, names) if key not in score_map]
    if missing:
        shown = "; ".join(missing[:5]) + ("; ..." if len(missing) > 5 else "")
        raise ValueError(f"{source}: no score for {len(missing)} of {len(keys)} {what}: {shown}")
    if len(score_map) > len(keys):
        warnings.warn(f"{source}: {len(score_map) - len(keys)} scores are not in the {what}; "
                      f"ignored")
    scores = np.array([score_map[key] for key in keys], dtype=np.float64)
    return scores, np.asarray(labels) == 1


def match_sv_scores(trials, score_map, source="score file"):
    """Scores and labels in trial-list order. Missing trials are an error naming them
    (with trial-list line numbers); extra scores are ignored with a warning."""
    linenos = getattr(trials, "line_numbers", range(1, len(trials) + 1))
    tpath = getattr(trials, "path", None) or "trials"
    keys = [(e, t) for _, e, t in trials]
    names = [f"{e} {t} ({tpath}:{ln})" for (e, t), ln in zip(keys, linenos)]
    return _match_scores(keys, [y for y, _, _ in trials], names, score_map, "trials", source)


def match_cm_scores(protocol, score_map, source="score file"):
    """Scores and labels in protocol order; missing files are an error naming them."""
    keys = list(protocol)
    return _match_scores(keys, list(protocol.values()), keys, score_map, "protocol files", source)


# -----------------------------------------------------------------------------
# scoring


def _embedding_matrix(embeddings, names, mean=None):
    """Stack, optionally subtract a mean, L2-normalise -> (N, E) float32 tensor."""
    rows = []
    for n in names:
        if n not in embeddings:
            raise KeyError(f"no embedding for utterance {n!r}")
        rows.append(torch.as_tensor(embeddings[n]).reshape(-1).float())
    E = torch.stack(rows)  # (N, E)
    if mean is not None:
        E = E - torch.as_tensor(mean, dtype=E.dtype).reshape(1, -1)
    return F.normalize(E, dim=1)


def _trial_index(trials):
    """-> (utterance names, enroll idx (n,), test idx (n,)). Trials: (.., enroll, test)."""
    index = {}
    for tr in trials:
        index.setdefault(tr[-2], len(index))
        index.setdefault(tr[-1], len(index))
    ei = torch.tensor([index[tr[-2]] for tr in trials], dtype=torch.long)
    ti = torch.tensor([index[tr[-1]] for tr in trials], dtype=torch.long)
    return list(index), ei, ti


def cosine_score(embeddings, trials, mean=None, chunk: int = 65536) -> np.ndarray:
    """Cosine similarity for every trial, in trial order.

    embeddings: {utterance: (E,) tensor or array}. mean: optional (E,) vector subtracted
    before normalising, typically the mean of a cohort / training-set embedding: it removes
    the shared direction that makes all cosines large and compresses the score range."""
    names, ei, ti = _trial_index(trials)
    E = _embedding_matrix(embeddings, names, mean)  # (N, E)
    return _pair_cosine(E, ei, ti, chunk).numpy().astype(np.float64)


def _pair_cosine(E, ei, ti, chunk=65536):
    """Row-wise dot products of unit vectors E[ei] . E[ti] -> (n,) float32 tensor."""
    out = torch.empty(len(ei))
    for a in range(0, len(ei), chunk):  # bounded memory for ~10^6 trials
        out[a:a + chunk] = (E[ei[a:a + chunk]] * E[ti[a:a + chunk]]).sum(1)
    return out


def as_norm(embeddings, trials, cohort, top_n: int = 300, mean=None,
            chunk: int = 4096) -> np.ndarray:
    """Adaptive symmetric score normalisation (AS-norm; Cumani et al. 2011, Matejka et al.
    2017 "Analysis of score normalization in multilingual speaker recognition").

        s' = 1/2 [ (s - mu_e) / sigma_e + (s - mu_t) / sigma_t ]

    mu_e, sigma_e: mean and (population) std of enroll's top_n highest cosine scores
    against the cohort (e.g. per-speaker mean embeddings of the training set); likewise
    for test. "Adaptive": only the closest impostors count, so each side is normalised
    against the impostors that actually compete with it.

    cohort: (C, E) tensor/array. mean: optional vector subtracted from everything.
    """
    names, ei, ti = _trial_index(trials)
    E = _embedding_matrix(embeddings, names, mean)  # (N, E)
    C = torch.as_tensor(cohort).float().reshape(len(cohort), -1)  # (C, E)
    if mean is not None:
        C = C - torch.as_tensor(mean, dtype=C.dtype).reshape(1, -1)
    C = F.normalize(C, dim=1)
    k = min(int(top_n), C.shape[0])
    mu = torch.empty(E.shape[0])
    sd = torch.empty(E.shape[0])
    for a in range(0, E.shape[0], chunk):  # (chunk, C) score blocks bound the memory
        top = (E[a:a + chunk] @ C.t()).topk(k, dim=1).values  # (chunk, k)
        mu[a:a + chunk] = top.mean(1)
        sd[a:a + chunk] = top.std(1, correction=0).clamp_min(1e-8)
    raw = _pair_cosine(E, ei, ti)  # (n,)
    norm = 0.5 * ((raw - mu[ei]) / sd[ei] + (raw - mu[ti]) / sd[ti])
    return norm.numpy().astype(np.float64)


def score_sv(embeddings, trials, mean=None, cohort=None, top_n: int = 300) -> np.ndarray:
    """Cosine scores for a trial list, AS-normalised if a cohort is given. The entry
    point a checkpoint-evaluation mode can call after embedding the audio."""
    if cohort is None:
        return cosine_score(embeddings, trials, mean=mean)
    return as_norm(embeddings, trials, cohort, top_n=top_n, mean=mean)


# -----------------------------------------------------------------------------
# a model on a dataset: embed every test utterance once, then score the lists


def embed_paths(score_fn, paths, num_workers: int = 0) -> dict:
    """{path: score_fn(wave)} for every file. score_fn maps a (1, S) float32 waveform to a
    1-D tensor: an SV embedding (E,) or a CM LLR (1,), e.g. classifier.utterance_scorer.

    Full utterances, one at a time: a GroupNorm extractor (Base) normalises over all
    frames, padding included, so batching unequal lengths would change the embeddings."""
    loader = DataLoader(data.EvalUtterances(paths), batch_size=1, num_workers=num_workers,
                        collate_fn=data.collate_pad)
    out = {}
    for waves, _, index in loader:                      # waves (1, S)
        out[paths[int(index[0])]] = score_fn(waves)
    return out


def evaluate_sets(score_fn, spec, names=None):
    """Metrics on a dataset's evaluation sets (data.DataSpec) -> ({name: metrics},
    {name: (scores, labels)}). Each file is embedded once, however many sets use it."""
    names = names or spec.eval_names()
    cache = embed_paths(score_fn, sorted({p for name in names for p in spec.eval_paths(name)}))
    results, raw = {}, {}
    for name in names:
        if spec.task == "sv":
            trials = spec.sv_trials(name)
            scores = score_sv(cache, trials)
            labels = np.array([y for y, _, _ in trials])
            results[name] = sv_metrics(scores, labels)
        else:
            items = spec.cm_items(name)
            scores = np.array([float(cache[p]) for p, _ in items])
            labels = np.array([y for _, y in items])
            results[name] = cm_metrics(scores, labels)
        raw[name] = (np.asarray(scores), labels)
    return results, raw


@torch.inference_mode()
def inference_seconds(models, device, seconds=4.0, repeats=7):
    """Wall time of one forward pass on `seconds` of audio (batch 1), for each model.
    The models run interleaved (A, B, A, B, ...) and the minimum is kept, so a busy
    machine slows both alike and the ratio stays meaningful."""
    x = torch.randn(1, int(seconds * data.SAMPLE_RATE), device=device)
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


# -----------------------------------------------------------------------------
# DET plot

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
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    curves, lo, worst = [], 0.01, 0.0
    for name, (scores, labels) in systems.items():
        p_miss, p_fa, thr = det_curve(scores, labels)
        eer, _ = _eer_from_curve(p_miss, p_fa, thr, "interp")
        y = _to_numpy(labels).astype(bool)
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
# command line


def load_sv(scores_path, trials_path):
    """Scores and labels of a score file, in the order of a trial list (data.read_trials)."""
    return match_sv_scores(data.read_trials(trials_path), read_scores(scores_path),
                           source=str(scores_path))


def load_cm(scores_path, protocol_path):
    """Scores and labels of a CM score file, in the order of a protocol (data.read_protocol)."""
    protocol = {entry.file: entry.label for entry in data.read_protocol(protocol_path)}
    return match_cm_scores(protocol, read_cm_scores(scores_path), source=str(scores_path))


def format_metrics(name: str, m: dict) -> str:
    pos, neg = ("bona fide", "spoof") if "act_dcf" in m else ("target", "non-target")
    rule = {"interp": "linear interpolation at the miss/false-alarm crossing",
            "asvspoof5": "ASVspoof5 rule: mean of FRR and FAR at min |FRR - FAR|"}[m["eer_mode"]]
    lines = [f"{name}: {m['n_target'] + m['n_nontarget']} trials "
             f"({m['n_target']} {pos}, {m['n_nontarget']} {neg})",
             f"  EER     {100 * m['eer']:8.3f} %   threshold {m['eer_threshold']:<10.6g} [{rule}]",
             f"  minDCF  {m['min_dcf']:8.4f}     threshold {m['min_dcf_threshold']:<10.6g} "
             f"[p_target={m['p_target']:g}, c_miss={m['c_miss']:g}, c_fa={m['c_fa']:g}]"]
    if "act_dcf" in m:
        lines.append(f"  actDCF  {m['act_dcf']:8.4f}     threshold {m['act_dcf_threshold']:<10.6g} "
                     f"[Bayes threshold; scores read as LLRs]")
        lines.append(f"  Cllr    {m['cllr']:8.4f}     bits")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="EER / minDCF for speaker verification, or the ASVspoof5 metric set "
                    "(EER, minDCF, actDCF, Cllr) for anti-spoofing, from score files.")
    p.add_argument("--task", choices=("sv", "cm"), default="sv")
    p.add_argument("--scores", nargs="+",
                   help="score file(s): 'enroll test score' (sv) or 'filename score' (cm); "
                        "several files are compared on one DET plot")
    # Checkpoint mode: embed a dataset's test audio with a trained model, then score it.
    p.add_argument("--checkpoint", help="pruned_model.pt written by train.py (instead of --scores)")
    p.add_argument("--onnx", help="model.onnx written by export.py: like --checkpoint, "
                                  "scored with onnxruntime")
    p.add_argument("--threads", type=int, default=None,
                   help="compute threads of PyTorch (--checkpoint) or onnxruntime (--onnx); "
                        "default: one per core")
    p.add_argument("--data",
                   help="checkpoint mode: toy, toy_spoof, vox1, vox2, asvspoof5, asvspoof2019")
    p.add_argument("--data-root", help="checkpoint mode: the dataset folder")
    p.add_argument("--vox1-root", help="checkpoint mode, vox2: the VoxCeleb1 folder")
    p.add_argument("--cache-dir", help="checkpoint mode: where toy corpora live")
    p.add_argument("--toy-size", default="default", choices=("default", "tiny"))
    p.add_argument("--toy-seed", type=int, default=0, help="checkpoint mode: toy corpus seed")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--trials", help="sv: VoxCeleb trial list, 'label enroll test'")
    p.add_argument("--protocol", help="cm: ASVspoof5 protocol with a bonafide/spoof column")
    p.add_argument("--det", help="write a DET plot (PNG) here")
    p.add_argument("--eer-mode", choices=EER_MODES, default=None,
                   help="default: interp for sv, asvspoof5 for cm")
    p.add_argument("--p-target", type=float, default=None,
                   help="target (sv) / bona fide (cm) prior; default 0.01 (sv), 0.95 (cm)")
    p.add_argument("--c-miss", type=float, default=None)
    p.add_argument("--c-fa", type=float, default=None)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.checkpoint and args.onnx:
        parser.error("give --checkpoint or --onnx, not both")
    if args.checkpoint or args.onnx:
        return checkpoint_mode(args, parser)
    if not args.scores:
        parser.error("give --scores (score files), or --checkpoint / --onnx (a trained model) "
                     "with --data")
    if args.task == "sv" and not args.trials:
        parser.error("--task sv needs --trials")
    if args.task == "cm" and not args.protocol:
        parser.error("--task cm needs --protocol")
    preset = VOXCELEB if args.task == "sv" else ASVSPOOF5
    costs = CostModel(*(v if v is not None else d
                        for v, d in zip((args.p_target, args.c_miss, args.c_fa), preset)))
    eer_mode = args.eer_mode or ("interp" if args.task == "sv" else "asvspoof5")

    systems = {}
    for path in args.scores:
        name = Path(path).stem
        while name in systems:
            name += "'"
        try:
            if args.task == "sv":
                scores, labels = load_sv(path, args.trials)
                m = sv_metrics(scores, labels, *costs, eer_mode=eer_mode)
            else:
                scores, labels = load_cm(path, args.protocol)
                m = cm_metrics(scores, labels, *costs, eer_mode=eer_mode)
        except (OSError, ValueError) as err:
            parser.exit(2, f"evaluate.py: error: {err}\n")
        print(format_metrics(name, m))
        systems[name] = (scores, labels)
    if args.det:
        write_det(systems, args.det, args.task)
    return 0


def write_det(systems, path, task):
    if task == "sv":
        plot_det(systems, path, title="DET curve (speaker verification)")
    else:
        plot_det(systems, path, title="DET curve (anti-spoofing)",
                 xlabel="Spoof accepted as bona fide (%)", ylabel="Bona fide rejected (%)")
    print(f"DET plot written to {path}")


def checkpoint_mode(args, parser) -> int:
    """Embed every test utterance of --data with the model in --checkpoint (PyTorch) or
    --onnx (onnxruntime, export.py), score the trial lists (SV) or protocols (CM) and
    print the metrics. Both paths share the audio loading (resampled to 16 kHz with a
    notice) and everything after the per-utterance score function."""
    source = args.checkpoint or args.onnx
    if not args.data:
        option = "--checkpoint" if args.checkpoint else "--onnx"
        parser.error(f"{option} needs --data (and --data-root for real data)")
    try:
        if args.onnx:
            import export                       # onnxruntime is only needed here
            score_fn, info = export.onnx_scorer(args.onnx, threads=args.threads,
                                                sample_rate=data.SAMPLE_RATE)
            task = info["task"]
        else:
            if args.threads:
                torch.set_num_threads(args.threads)
            device = classifier.resolve_device(args.device)
            model, _ = classifier.load_classifier(args.checkpoint, device)
            score_fn, task = classifier.utterance_scorer(model, device), model.task
        spec = data.prepare_data(args.data, args.data_root, args.cache_dir, seed=args.toy_seed,
                                 toy_size=args.toy_size, vox1_root=args.vox1_root)
    except (OSError, ValueError, ImportError) as err:
        parser.exit(2, f"evaluate.py: error: {err}\n")
    if spec.task != task:
        parser.exit(2, f"evaluate.py: error: {source} is a {task} model but --data "
                       f"{args.data} is a {spec.task} dataset\n")
    try:
        results, raw = evaluate_sets(score_fn, spec)
    except ValueError as err:        # e.g. an utterance shorter than an exported model accepts
        parser.exit(2, f"evaluate.py: error: {err}\n")
    for name, m in results.items():
        print(format_metrics(name, m))
    if args.det:
        write_det(raw, args.det, spec.task)
    return 0


if __name__ == "__main__":
    sys.exit(main())
