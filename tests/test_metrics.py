"""Tests for metrics.py, trials.py and scoring.py: every metric against a brute-force
reference that tries every
threshold, on random and adversarial score sets; file formats; scoring; CLI."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

import evaluate
import metrics
import scoring
import trials

# -----------------------------------------------------------------------------
# brute-force references (deliberately naive: O(n) work per candidate threshold)


def brute_points(s, y):
    """(p_miss, p_fa, threshold) for EVERY candidate threshold: each distinct score, each
    midpoint between neighbours, and -inf / +inf, in increasing order. Decision: s >= t."""
    u = np.unique(s)
    cands = np.concatenate(([-np.inf], u, (u[1:] + u[:-1]) / 2, [np.inf]))
    cands.sort(kind="stable")
    tar, non = s[y], s[~y]
    return [(np.count_nonzero(tar < t) / tar.size, np.count_nonzero(non >= t) / non.size, t)
            for t in cands]


def brute_eer_interp(s, y):
    pts = brute_points(s, y)
    for k, (pm, pf, _) in enumerate(pts):
        if pm >= pf:  # first point past the crossing; the previous one is before it
            pm0, pf0, _ = pts[k - 1]
            a = (pf0 - pm0) / ((pm - pf) - (pm0 - pf0))
            return pm0 + a * (pm - pm0)
    raise AssertionError("the curves always cross")


def brute_eer_asvspoof5(s, y):
    pts = brute_points(s, y)
    best = min(range(len(pts)), key=lambda k: (abs(pts[k][0] - pts[k][1]), k))
    return (pts[best][0] + pts[best][1]) / 2


def brute_min_dcf(s, y, p, cm, cf):
    best = min(cm * p * pm + cf * (1 - p) * pf for pm, pf, _ in brute_points(s, y))
    return best / min(cm * p, cf * (1 - p))


def brute_act_dcf(s, y, p, cm, cf):
    eta = math.log(cf * (1 - p) / (cm * p))
    miss = sum(1 for si, yi in zip(s, y) if yi and not si >= eta) / sum(y)
    fa = sum(1 for si, yi in zip(s, y) if not yi and si >= eta) / sum(~y)
    return (cm * p * miss + cf * (1 - p) * fa) / min(cm * p, cf * (1 - p))


def brute_cllr(s, y):
    f = lambda x: math.log2(1.0 + math.exp(x))
    tar = [f(-si) for si, yi in zip(s, y) if yi]
    non = [f(si) for si, yi in zip(s, y) if not yi]
    return 0.5 * (sum(tar) / len(tar) + sum(non) / len(non))


def per_trial_asvspoof5_eer(s, y):
    """The ASVspoof5 package's walk: one operating point per sorted trial (no tie merging).
    Equal to ours whenever the scores have no ties."""
    order = np.argsort(s, kind="stable")
    ys = y[order]
    frr = np.concatenate(([0.0], np.cumsum(ys) / ys.sum()))
    far = np.concatenate(([1.0], (np.count_nonzero(~ys) - np.cumsum(~ys)) / np.count_nonzero(~ys)))
    k = np.argmin(np.abs(frr - far))
    return (frr[k] + far[k]) / 2


# -----------------------------------------------------------------------------
# score sets: random and adversarial


def cases(seed=0, n_random=60):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_random):
        n = int(rng.integers(2, 120))
        y = rng.random(n) < rng.uniform(0.05, 0.95)
        y[0], y[1] = True, False  # both classes present
        kind = rng.integers(4)
        if kind == 0:  # continuous, overlapping
            s = rng.standard_normal(n) + rng.uniform(0, 3) * y
        elif kind == 1:  # heavy ties: few distinct integer values
            s = rng.integers(0, int(rng.integers(1, 6)), n) + (rng.random(n) < 0.5) * y
        elif kind == 2:  # coarse rounding of continuous scores
            s = np.round(rng.standard_normal(n) + y, 1)
        else:  # ties across classes at exactly the same value
            s = np.where(rng.random(n) < 0.5, 0.5, rng.standard_normal(n))
        out.append((s.astype(float), y))
    y = np.array([1, 1, 1, 0, 0, 0, 0], dtype=bool)
    out.append((np.where(y, 2.0, 1.0), y))  # perfect separation
    out.append((np.where(y, 1.0, 2.0), y))  # inverted separation
    out.append((np.zeros(7), y))  # all scores equal
    out.append((np.array([0.3, 0.3]), np.array([True, False])))  # smallest tie
    out.append((np.array([1.0] + [0.0] * 50), np.array([True] + [False] * 50)))  # one target
    return out


CASES = cases()
COSTS = [metrics.VOXCELEB, metrics.ASVSPOOF5, metrics.CostModel(0.3, 2.0, 0.5)]


@pytest.mark.parametrize("k", range(len(CASES)))
def test_metrics_match_brute_force(k):
    s, y = CASES[k]
    assert metrics.compute_eer(s, y)[0] == pytest.approx(brute_eer_interp(s, y), abs=1e-12)
    assert metrics.compute_eer(s, y, mode="asvspoof5")[0] == pytest.approx(
        brute_eer_asvspoof5(s, y), abs=1e-12)
    for c in COSTS:
        assert metrics.compute_min_dcf(s, y, *c)[0] == pytest.approx(brute_min_dcf(s, y, *c),
                                                                      abs=1e-12)
        assert metrics.compute_act_dcf(s, y, *c) == pytest.approx(brute_act_dcf(s, y, *c),
                                                                  abs=1e-12)
    assert metrics.compute_cllr(s, y) == pytest.approx(brute_cllr(s, y), rel=1e-12)


@pytest.mark.parametrize("k", range(len(CASES)))
def test_eer_bounds_and_thresholds(k):
    """Facts that do not rely on the interpolation formula: the interpolated EER lies
    between max_i min(P_miss, P_fa) and min_i max(P_miss, P_fa); the returned thresholds,
    applied as score >= t, reproduce the reported operating points exactly."""
    s, y = CASES[k]
    pts = brute_points(s, y)
    eer, _ = metrics.compute_eer(s, y)
    assert (max(min(pm, pf) for pm, pf, _ in pts) - 1e-12
            <= eer <= min(max(pm, pf) for pm, pf, _ in pts) + 1e-12)
    for c in COSTS:
        dcf, t = metrics.compute_min_dcf(s, y, *c)
        pm, pf = np.mean(s[y] < t), np.mean(s[~y] >= t)
        assert (c.c_miss * c.p_target * pm + c.c_fa * (1 - c.p_target) * pf) / min(
            c.c_miss * c.p_target, c.c_fa * (1 - c.p_target)) == pytest.approx(dcf, abs=1e-12)
    e5, t5 = metrics.compute_eer(s, y, mode="asvspoof5")
    assert (np.mean(s[y] < t5) + np.mean(s[~y] >= t5)) / 2 == pytest.approx(e5, abs=1e-12)
    # thresholds sit on distinct score values (or +inf), never inside a tie
    p_miss, p_fa, thr = metrics.det_curve(s, y)
    assert np.array_equal(thr[:-1], np.unique(s)) and thr[-1] == np.inf


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4), st.booleans()), min_size=2, max_size=40))
def test_hypothesis_tied_integer_scores(pairs):
    s = np.array([p[0] for p in pairs], dtype=float)
    y = np.array([p[1] for p in pairs])
    if y.all() or not y.any():
        with pytest.raises(ValueError, match="both target"):
            metrics.compute_eer(s, y)
        return
    assert metrics.compute_eer(s, y)[0] == pytest.approx(brute_eer_interp(s, y), abs=1e-12)
    assert metrics.compute_eer(s, y, mode="asvspoof5")[0] == pytest.approx(
        brute_eer_asvspoof5(s, y), abs=1e-12)
    assert metrics.compute_min_dcf(s, y, *metrics.VOXCELEB)[0] == pytest.approx(
        brute_min_dcf(s, y, *metrics.VOXCELEB), abs=1e-12)


def test_asvspoof5_mode_equals_per_trial_walk_without_ties():
    rng = np.random.default_rng(1)
    for _ in range(50):
        n = int(rng.integers(10, 500))
        y = rng.random(n) < 0.3
        y[:2] = [True, False]
        s = rng.standard_normal(n) + 1.5 * y
        assert len(np.unique(s)) == n
        assert metrics.compute_eer(s, y, mode="asvspoof5")[0] == pytest.approx(
            per_trial_asvspoof5_eer(s, y), abs=1e-12)


@pytest.mark.parametrize("f", [lambda x: 3 * x + 1, lambda x: x ** 3, lambda x: np.exp(x / 4),
                               lambda x: -1 / (x + 10)])
def test_invariance_under_increasing_transforms(f):
    rng = np.random.default_rng(2)
    for _ in range(20):
        n = 300
        y = rng.random(n) < 0.4
        y[:2] = [True, False]
        s = rng.integers(-5, 6, n).astype(float) + y  # integers: many ties, exact transforms
        if rng.random() < 0.5:
            s = s + rng.standard_normal(n)
        assert metrics.compute_eer(f(s), y)[0] == metrics.compute_eer(s, y)[0]
        assert (metrics.compute_eer(f(s), y, mode="asvspoof5")[0]
                == metrics.compute_eer(s, y, mode="asvspoof5")[0])
        for c in COSTS:
            assert metrics.compute_min_dcf(f(s), y, *c)[0] == metrics.compute_min_dcf(s, y, *c)[0]


def test_known_values():
    y = np.array([1, 1, 1, 0, 0, 0, 0], dtype=bool)
    for mode in metrics.EER_MODES:
        assert metrics.compute_eer(np.where(y, 1.0, 0.0), y, mode)[0] == 0.0  # perfect
        assert metrics.compute_eer(np.where(y, 0.0, 1.0), y, mode)[0] == 1.0  # inverted
        assert metrics.compute_eer(np.zeros(7), y, mode)[0] == 0.5  # all equal
    assert metrics.compute_min_dcf(np.where(y, 1.0, 0.0), y)[0] == 0.0
    assert metrics.compute_min_dcf(np.where(y, 0.0, 1.0), y)[0] == 1.0  # no better than trivial
    assert metrics.compute_min_dcf(np.zeros(7), y, *metrics.ASVSPOOF5)[0] == 1.0
    rng = np.random.default_rng(3)
    s, yy = rng.standard_normal(40000), rng.random(40000) < 0.5  # identical distributions
    assert abs(metrics.compute_eer(s, yy)[0] - 0.5) < 0.02
    assert metrics.compute_cllr(np.zeros(7), y) == pytest.approx(1.0)  # uninformative LLR: 1 bit
    assert metrics.compute_cllr(np.where(y, 50.0, -50.0), y) < 1e-15
    assert metrics.compute_act_dcf(np.where(y, 50.0, -50.0), y, *metrics.ASVSPOOF5) == 0.0
    # LLR 0 everywhere: ASVspoof5's Bayes threshold is -0.642, so everything is accepted
    assert metrics.bayes_threshold(*metrics.ASVSPOOF5) == pytest.approx(-math.log(1.9))
    assert metrics.compute_act_dcf(np.zeros(7), y, *metrics.ASVSPOOF5) == pytest.approx(1.0)


def test_act_dcf_decides_ties_at_the_bayes_threshold_as_accept():
    """Scores exactly at the Bayes threshold are accepted (score >= t, as everywhere)."""
    for c in COSTS:
        eta = metrics.bayes_threshold(*c)
        llr = np.array([eta, eta, eta + 1, eta - 1, eta, eta])
        y = np.array([1, 1, 1, 0, 0, 0], dtype=bool)
        assert metrics.compute_act_dcf(llr, y, *c) == pytest.approx(brute_act_dcf(llr, y, *c),
                                                                    abs=1e-12)
        assert metrics.compute_act_dcf(llr, y, *c) == pytest.approx(
            c.c_fa * (1 - c.p_target) * (2 / 3)
            / min(c.c_miss * c.p_target, c.c_fa * (1 - c.p_target)))


def test_act_dcf_at_least_min_dcf():
    rng = np.random.default_rng(4)
    for _ in range(50):
        y = rng.random(200) < 0.5
        y[:2] = [True, False]
        llr = rng.normal(0, 2, 200) + 2 * y - 1
        for c in COSTS:
            assert (metrics.compute_act_dcf(llr, y, *c)
                    >= metrics.compute_min_dcf(llr, y, *c)[0] - 1e-12)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="both target"):
        metrics.compute_eer([0.1, 0.2, 0.3], [1, 1, 1])
    with pytest.raises(ValueError, match="both target"):
        metrics.compute_min_dcf([0.1, 0.2], [0, 0])
    with pytest.raises(ValueError, match="both target"):
        metrics.compute_cllr([0.1, 0.2], [0, 0])
    with pytest.raises(ValueError, match="both target"):
        metrics.compute_eer([], [])
    with pytest.raises(ValueError, match="finite"):
        metrics.compute_eer([0.1, np.nan], [1, 0])
    with pytest.raises(ValueError, match="labels must be"):
        metrics.compute_eer([0.1, 0.2], [1, 2])
    with pytest.raises(ValueError, match="equal length"):
        metrics.compute_eer([0.1, 0.2, 0.3], [1, 0])
    with pytest.raises(ValueError, match="mode"):
        metrics.compute_eer([0.1, 0.2], [1, 0], mode="roc")
    with pytest.raises(ValueError, match="p_target"):
        metrics.compute_min_dcf([0.1, 0.2], [1, 0], p_target=1.0)


def test_sv_and_cm_metric_dicts_agree_with_single_functions():
    rng = np.random.default_rng(5)
    y = rng.random(500) < 0.5
    s = rng.standard_normal(500) + y
    m = metrics.cm_metrics(torch.tensor(s), torch.tensor(y))  # torch inputs are accepted too
    assert m["eer"] == metrics.compute_eer(s, y, "asvspoof5")[0]
    assert m["min_dcf"] == metrics.compute_min_dcf(s, y, *metrics.ASVSPOOF5)[0]
    assert m["act_dcf"] == metrics.compute_act_dcf(s, y, *metrics.ASVSPOOF5)
    assert m["cllr"] == metrics.compute_cllr(s, y)
    m = metrics.sv_metrics(s, y)
    assert (m["eer"], m["min_dcf"]) == (metrics.compute_eer(s, y)[0],
                                        metrics.compute_min_dcf(s, y)[0])
    assert (m["n_target"], m["n_nontarget"]) == (y.sum(), (~y).sum())


# -----------------------------------------------------------------------------
# file formats


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_read_trials_and_errors(tmp_path):
    """trials.read_trials is the one trial-list reader (training, evaluation and the CLI)."""
    p = write(tmp_path, "t.txt", "1 a/1.wav b/1.wav\n0 a/1.wav c/1.wav\n\n1 c/1.wav c/2.wav\n")
    t = trials.read_trials(p)
    assert list(t) == [(1, "a/1.wav", "b/1.wav"), (0, "a/1.wav", "c/1.wav"),
                       (1, "c/1.wav", "c/2.wav")]
    assert t.line_numbers == [1, 2, 4]
    with pytest.raises(ValueError, match=r"t2\.txt:3:"):
        trials.read_trials(write(tmp_path, "t2.txt", "1 a b\n0 a c\n1 a\n"))
    with pytest.raises(ValueError, match=r":2:.*<0\|1>"):
        trials.read_trials(write(tmp_path, "t3.txt", "1 a b\ntarget a c\n"))
    with pytest.raises(ValueError, match=r":3: trial a b repeats line 1"):
        trials.read_trials(write(tmp_path, "t4.txt", "1 a b\n0 a c\n0 a b\n"))
    with pytest.raises(ValueError, match=r"t5\.txt: no trials"):
        trials.read_trials(write(tmp_path, "t5.txt", "\n\n"))


def test_scores_roundtrip_and_errors(tmp_path):
    trial_list = [(1, "a", "b"), (0, "a", "c"), (1, "d", "e")]
    s = np.array([0.1234567890123, -1e-9, 3.0])
    trials.write_scores(tmp_path / "s.txt", trial_list, s)
    got = trials.read_scores(tmp_path / "s.txt")
    assert got == {("a", "b"): s[0], ("a", "c"): s[1], ("d", "e"): s[2]}  # exact round trip
    with pytest.raises(ValueError, match=r":2: score 'x' is not a number"):
        trials.read_scores(write(tmp_path, "s2.txt", "a b 0.1\na c x\n"))
    with pytest.raises(ValueError, match=r":2: score 'nan' is not finite"):
        trials.read_scores(write(tmp_path, "s6.txt", "a b 0.1\na c nan\n"))
    with pytest.raises(ValueError, match=r":1:"):
        trials.read_scores(write(tmp_path, "s3.txt", "a b\n"))
    with pytest.raises(ValueError, match=r":3: duplicate score for a b \(first on line 1\)"):
        trials.read_scores(write(tmp_path, "s4.txt", "a b 1\na c 2\na b 3\n"))
    tl = trials.read_trials(write(tmp_path, "t.txt", "1 a b\n0 a c\n1 d e\n"))
    sc, lab = trials.match_sv_scores(tl, got)
    assert sc.tolist() == s.tolist() and lab.tolist() == [True, False, True]
    with pytest.raises(ValueError, match=r"no score for 1 of 3 trials: d e \(.*t\.txt:3\)"):
        trials.match_sv_scores(tl, trials.read_scores(write(tmp_path, "s5.txt", "a b 1\na c 2\n")))


def test_asvspoof_protocol_and_cm_scores(tmp_path):
    """trials.read_protocol is the one protocol reader (training, evaluation and the CLI)."""
    proto = write(tmp_path, "p.tsv",
                  "T_0000 T_0000000001 F - - - AC2 A02 spoof -\n"
                  "T_0001 T_0000000002 M - - - - bonafide bonafide -\n")
    assert trials.read_protocol(proto) == [("T_0000000001", 0, "A02", 1),
                                         ("T_0000000002", 1, "bonafide", 2)]
    la = write(tmp_path, "la.txt", "LA_0079 LA_T_1138215 - - bonafide\n"
                                   "LA_0079 LA_T_1138216 - A07 spoof\n")
    assert [(e.file, e.label, e.attack) for e in trials.read_protocol(la)] == [
        ("LA_T_1138215", 1, "bonafide"), ("LA_T_1138216", 0, "A07")]
    with pytest.raises(ValueError,
                       match=r"p2\.tsv:2: expected 5 \(ASVspoof 2019 LA\) columns, got 4"):
        trials.read_protocol(write(tmp_path, "p2.tsv", "T_0 f1 - - spoof\nT_0 f2 - -\n"))
    with pytest.raises(ValueError, match=r"p3\.tsv:2: file f1 repeats line 1"):
        trials.read_protocol(write(tmp_path, "p3.tsv", "T_0 f1 - - spoof\nT_0 f1 - - bonafide\n"))
    with pytest.raises(ValueError, match=r"p4\.tsv:1: key \(column 5\) must be bonafide or spoof"):
        trials.read_protocol(write(tmp_path, "p4.tsv", "T_0 f1 - - fake\n"))
    with pytest.raises(ValueError, match=r"p5\.tsv:2: expected 10 \(ASVspoof5\) columns, got 5"):
        trials.read_protocol(write(tmp_path, "p5.tsv", "T_0000 T_1 F - - - AC2 A02 spoof -\n"
                                                     "LA_0 LA_1 - - spoof\n"))
    with pytest.raises(ValueError, match=r"p6\.tsv: no entries"):
        trials.read_protocol(write(tmp_path, "p6.tsv", ""))
    sc = write(tmp_path, "cm.txt", "filename\tcm-score\nT_0000000001 -2.5\n"
                                   "T_0000000002 3\nLA_T_1138215 1\n")
    assert trials.read_cm_scores(sc) == {"T_0000000001": -2.5, "T_0000000002": 3.0,
                                         "LA_T_1138215": 1.0}
    with pytest.raises(ValueError, match=r":3: duplicate score for f1 \(first on line 1\)"):
        trials.read_cm_scores(write(tmp_path, "cm2.txt", "f1 1\nf2 2\nf1 3\n"))
    with pytest.raises(ValueError, match=r"cm3\.txt:2:"):
        trials.read_cm_scores(write(tmp_path, "cm3.txt", "f1 1\nf2 2 3\n"))
    with pytest.raises(ValueError, match=r"no score for 1 of 2 protocol files: T_0000000002"):
        trials.load_cm(write(tmp_path, "cm4.txt", "T_0000000001 1\nLA_T_1138215 2\n"), proto)
    with pytest.warns(UserWarning, match="1 scores are not in the protocol files"):
        s, y = trials.load_cm(sc, proto)
    assert s.tolist() == [-2.5, 3.0] and y.tolist() == [False, True]


# -----------------------------------------------------------------------------
# scoring


def _embeddings(n=12, dim=8, seed=6):
    g = torch.Generator().manual_seed(seed)
    return {f"u{i}": torch.randn(dim, generator=g) for i in range(n)}


def test_cosine_score_against_formula():
    emb = _embeddings()
    trial_list = [(1, "u0", "u1"), (0, "u2", "u3"), (1, "u4", "u4"), (0, "u11", "u0")]
    mean = torch.randn(8)
    for m in (None, mean):
        got = scoring.cosine_score(emb, trial_list, mean=m)
        for k, (_, e, t) in enumerate(trial_list):
            a, b = emb[e].double(), emb[t].double()
            if m is not None:
                a, b = a - m.double(), b - m.double()
            assert got[k] == pytest.approx(float(a @ b / (a.norm() * b.norm())), abs=1e-6)
    as_numpy = {k: v.numpy() for k, v in emb.items()}  # numpy embeddings work the same
    assert np.array_equal(scoring.cosine_score(as_numpy, trial_list),
                          scoring.cosine_score(emb, trial_list))
    with pytest.raises(KeyError, match="u99"):
        scoring.cosine_score(emb, [(1, "u0", "u99")])


def test_as_norm_against_direct_loop():
    emb = _embeddings()
    g = torch.Generator().manual_seed(7)
    cohort = torch.randn(30, 8, generator=g)
    trial_list = [(1, "u0", "u1"), (0, "u2", "u3"), (0, "u5", "u9")]
    mean = cohort.mean(0)
    got = scoring.as_norm(emb, trial_list, cohort, top_n=5, mean=mean)
    cn = cohort.double() - mean.double()
    cn = cn / cn.norm(dim=1, keepdim=True)

    def unit(u):
        v = emb[u].double() - mean.double()
        return v / v.norm()

    def stats(u):
        top = np.sort((cn @ unit(u)).numpy())[::-1][:5]
        return top.mean(), top.std()

    for k, (_, e, t) in enumerate(trial_list):
        s = float(unit(e) @ unit(t))
        (me, se), (mt, st_) = stats(e), stats(t)
        assert got[k] == pytest.approx(0.5 * ((s - me) / se + (s - mt) / st_), abs=1e-4)
    assert np.allclose(scoring.score_sv(emb, trial_list, mean=mean, cohort=cohort, top_n=5), got)
    assert np.allclose(scoring.score_sv(emb, trial_list), scoring.cosine_score(emb, trial_list))


# -----------------------------------------------------------------------------
# CLI


def test_cli_sv_and_cm(tmp_path, capsys):
    trial_list = write(tmp_path, "trials.txt", "1 a b\n0 a c\n1 d e\n0 d f\n1 g h\n0 g i\n")
    scores = write(tmp_path, "sys.txt", "a b 0.9\na c 0.2\nd e 0.4\nd f 0.5\ng h 0.7\ng i 0.1\n")
    det = tmp_path / "det.png"
    assert evaluate.main(["--scores", str(scores), "--trials", str(trial_list),
                          "--det", str(det)]) == 0
    out = capsys.readouterr().out
    s, y = trials.load_sv(scores, trial_list)
    assert f"{100 * metrics.compute_eer(s, y)[0]:8.3f} %" in out and "minDCF" in out
    assert det.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    proto = write(tmp_path, "p.tsv", "T_0 f1 F - - - - bonafide bonafide -\n"
                                     "T_0 f2 F - - - AC1 A01 spoof -\n"
                                     "T_1 f3 M - - - - bonafide bonafide -\n"
                                     "T_1 f4 M - - - AC1 A02 spoof -\n")
    cm = write(tmp_path, "cm.txt", "f1 2.0\nf2 -1.0\nf3 -0.5\nf4 0.3\n")
    assert evaluate.main(["--task", "cm", "--scores", str(cm), "--protocol", str(proto)]) == 0
    out = capsys.readouterr().out
    assert "actDCF" in out and "Cllr" in out and "p_target=0.95, c_miss=1, c_fa=10" in out

    bad = write(tmp_path, "bad.txt", "a b 0.9\na c\n")
    with pytest.raises(SystemExit) as e:
        evaluate.main(["--scores", str(bad), "--trials", str(trial_list)])
    assert e.value.code == 2 and "bad.txt:2:" in capsys.readouterr().err


def test_cohort_is_the_mean_of_each_speakers_first_utterances(tmp_path):
    """scoring.build_cohort against a brute force: per-speaker means of the first
    `per_speaker` files (by path), the mean over all of them; folder_speakers reads a
    <speaker>/<video>/<utt>.wav tree."""
    import soundfile as sf
    rng = np.random.default_rng(0)
    for spk in ("id1", "id2", "id3"):
        for k in range(3):
            path = tmp_path / "wav" / spk / "vid" / f"{k:05d}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, rng.normal(size=1600 + 160 * k).astype(np.float32), 16000)
    sf.write(tmp_path / "wav" / "stray.wav", np.zeros(1600, np.float32), 16000)
    items = scoring.folder_speakers(str(tmp_path))
    assert len(items) == 9 and sorted({s for _, s in items}) == [0, 1, 2]

    def score_fn(wave):                                      # (1, S) -> a 3-dim "embedding"
        return torch.stack([wave.mean(), wave.std(), wave.abs().max()])
    cohort = scoring.build_cohort(score_fn, items, per_speaker=2)
    vecs = {}
    for path, spk in sorted(items):
        wave = torch.from_numpy(sf.read(path, dtype="float32")[0])[None]
        vecs.setdefault(spk, []).append(score_fn(wave))
    chosen = [v for spk in sorted(vecs) for v in vecs[spk][:2]]
    assert torch.allclose(cohort["cohort"], torch.stack([torch.stack(vecs[s][:2]).mean(0)
                                                         for s in sorted(vecs)]))
    assert torch.allclose(cohort["mean"], torch.stack(chosen).mean(0))
    assert (cohort["speakers"], cohort["utterances"]) == (3, 6)
    with pytest.raises(FileNotFoundError, match="no such folder"):
        scoring.folder_speakers(str(tmp_path / "missing"))


def test_cohort_cache_and_centre_crop(tmp_path):
    import soundfile as sf
    paths = []
    for spk in range(2):
        path = tmp_path / f"s{spk}.wav"
        ramp = 0.5 * np.arange(64000, dtype=np.float32) / 64000 + 0.25 * spk   # 4-s ramps
        sf.write(path, ramp, 16000)
        paths.append((str(path), spk))
    seen = []

    def score_fn(wave):                                      # records the length it was given
        seen.append((wave.shape[-1], float(wave[0, 0])))
        return torch.stack([wave.mean(), wave.std()])
    cache = tmp_path / "cohort.pt"
    first = scoring.cached_cohort(score_fn, paths, 1, cache, key="model-a")
    # the centre 3 s of a 4-s file: samples 8000 .. 56000
    assert seen == [(48000, pytest.approx(0.0625, abs=1e-4)),
                    (48000, pytest.approx(0.3125, abs=1e-4))]
    again = scoring.cached_cohort(score_fn, paths, 1, cache, key="model-a")
    assert len(seen) == 2 and torch.equal(again["cohort"], first["cohort"])   # read, not redone
    scoring.cached_cohort(score_fn, paths, 1, cache, key="model-b")           # another model
    assert len(seen) == 4
