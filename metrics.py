"""
The metrics of speaker verification (SV) and anti-spoofing (CM): EER, minDCF, actDCF,
Cllr and the DET curve they are read from. Exact and vectorised; pure math on arrays of
scores and labels, so this file imports no other module of the project.

Reproduces the numbers of the seed paper (Peng et al. 2025, "Hybrid Pruning",
arXiv 2508.16232, Sec. 4): EER on VoxCeleb1-O/E/H and EER/minDCF on ASVspoof5.

Conventions (used everywhere in the project)
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

import math
from typing import NamedTuple

import numpy as np
import torch
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


def to_numpy(x):
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _check(scores, labels):
    """-> (float64 scores (n,), bool labels (n,)), with readable errors."""
    s = to_numpy(scores).astype(np.float64, copy=False)
    y = to_numpy(labels)
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


def eer_from_curve(p_miss, p_fa, thresholds, mode):
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
    return eer_from_curve(*det_curve(scores, labels), mode)


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
    eer, eer_thr = eer_from_curve(*curve, eer_mode)
    min_dcf, dcf_thr = _min_dcf_from_curve(*curve, p_target, c_miss, c_fa)
    y = to_numpy(labels).astype(bool)
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
