"""
Benchmark of metrics.py's EER + minDCF (one DET curve, O(n log n)) against a naive loop that
recounts misses and false alarms for every candidate threshold (O(n * distinct scores)).

Prints timings and ratios; it asserts nothing (speed is machine-dependent). The goal in
the issue is EER + minDCF on 10^7 trials in <= 3 s on a 2-core CPU.

    python benchmarks/bench_metrics.py
"""

import time

import numpy as np

from common import machine_header  # also puts the repository root on sys.path
import metrics


def synthetic(n, seed=0):
    """VoxCeleb-like trials: 10% targets, Gaussian scores with d' = 3."""
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.1
    s = rng.standard_normal(n) + 3.0 * y
    return s, y


def naive_eer_min_dcf(s, y, p_target=0.01, c_miss=1.0, c_fa=1.0):
    """Try every distinct score (and +inf) as a threshold, recount from scratch each time."""
    tar, non = s[y], s[~y]
    pts = []
    for t in list(np.unique(s)) + [np.inf]:
        pts.append((np.count_nonzero(tar < t) / tar.size, np.count_nonzero(non >= t) / non.size))
    for k, (pm, pf) in enumerate(pts):  # EER: interpolate at the first crossing
        if pm >= pf:
            pm0, pf0 = pts[k - 1]
            a = (pf0 - pm0) / ((pm - pf) - (pm0 - pf0))
            eer = pm0 + a * (pm - pm0)
            break
    dcf = min(c_miss * p_target * pm + c_fa * (1 - p_target) * pf for pm, pf in pts)
    return eer, dcf / min(c_miss * p_target, c_fa * (1 - p_target))


def best_of(fn, repeat):
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def main():
    print(machine_header("timings: the best of a few runs, in one process"))

    # 1) the fast path on 10^7 trials
    n = 10_000_000
    s, y = synthetic(n)
    t_eer, (eer, _) = best_of(lambda: metrics.compute_eer(s, y), 3)
    t_dcf, (dcf, _) = best_of(lambda: metrics.compute_min_dcf(s, y), 3)
    t_both, m = best_of(lambda: metrics.sv_metrics(s, y), 3)
    # The floor on any machine: one sort of the scores. Ratios to it travel between machines
    # better than seconds do.
    t_sort, _ = best_of(lambda: np.sort(s), 3)
    print(f"\n{n:,} trials ({int(y.sum()):,} target)")
    print(f"  np.sort of the scores (reference) {t_sort:7.3f} s")
    print(f"  compute_eer                     {t_eer:7.3f} s   EER    {100 * eer:.4f} %")
    print(f"  compute_min_dcf                 {t_dcf:7.3f} s   minDCF {dcf:.4f}")
    print(f"  compute_eer + compute_min_dcf   {t_eer + t_dcf:7.3f} s   (two DET curves)")
    print(f"  sv_metrics (EER + minDCF)       {t_both:7.3f} s   "
          f"= {t_both / t_sort:.1f} x np.sort   "
          f"goal <= 3 s")

    # 2) naive per-threshold loop vs fast path on the same 2 * 10^4 trials
    n_small = 20_000
    s2, y2 = synthetic(n_small, seed=1)
    t_naive, (eer_n, dcf_n) = best_of(lambda: naive_eer_min_dcf(s2, y2), 1)
    t_fast, m2 = best_of(lambda: metrics.sv_metrics(s2, y2), 5)
    same = abs(eer_n - m2["eer"]) < 1e-12 and abs(dcf_n - m2["min_dcf"]) < 1e-12
    print(f"\n{n_small:,} trials, naive loop vs vectorised (results identical: {same})")
    print(f"  naive per-threshold loop        {t_naive:7.3f} s   EER {100 * eer_n:.4f} %  "
          f"minDCF {dcf_n:.4f}")
    print(f"  sv_metrics                      {t_fast * 1e3:7.3f} ms  EER {100 * m2['eer']:.4f} %  "
          f"minDCF {m2['min_dcf']:.4f}")
    print(f"  speed-up on {n_small:,} trials      {t_naive / t_fast:9.0f} x")
    # the naive loop is quadratic: scale it to 10^7 trials for comparison
    t_naive_big = t_naive * (n / n_small) ** 2
    print(f"  naive extrapolated to {n:,} (x{(n / n_small) ** 2:,.0f}): "
          f"{t_naive_big / 86400:.1f} days -> ratio to sv_metrics {t_naive_big / t_both:.1e}")


if __name__ == "__main__":
    main()
