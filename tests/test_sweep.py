"""Tests for sweep.py and the small dense baseline (--ssl tiny-small:S): the small model's
size, the run plan and commands, resuming, the table with its spreads, and (slow) a real
tiny sweep of train.py processes."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import recipes
import sweep
from wavlm_masked import MaskedWavLM, WavLMConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("sparsity", [0.1, 0.3, 0.5, 0.7, 0.9])
def test_small_dense_model_matches_the_pruned_size(sparsity):
    dense = MaskedWavLM(WavLMConfig.tiny()).num_params()
    target = round((1 - sparsity) * dense)
    config = WavLMConfig.tiny_small(target)
    model = MaskedWavLM(config)
    assert abs(model.num_params() / target - 1) < 0.02
    assert model.gates() == {} or len(model.gates()) == 0          # dense: nothing to prune
    assert config.hidden_size <= config.ffn_dim <= 4 * config.hidden_size
    assert config.hidden_size // config.num_heads == 32


def test_small_dense_model_shrinks_the_ffn_first():
    dense = MaskedWavLM(WavLMConfig.tiny()).num_params()
    c = WavLMConfig.tiny_small(round(0.8 * dense))
    assert (c.num_layers, c.hidden_size, c.conv_layers) == (4, 128, WavLMConfig.tiny().conv_layers)
    assert c.ffn_dim < 512
    with pytest.raises(ValueError, match="no model of the tiny family"):
        WavLMConfig.tiny_small(20_000)


def test_tiny_small_command_line():
    a = recipes.parse_args(["--data", "toy", "--ssl", "tiny-small:0.7"])
    assert (a.target, a.prune_units, a.out) == (0.0, [], os.path.join("runs", "toy_small0.7"))
    a = recipes.parse_args(["--data", "toy", "--ssl", "tiny-small:0.7", "--target", "0",
                            "--prune-units", ""])
    assert a.target == 0.0 and a.prune_units == []
    a = recipes.parse_args(["--data", "toy"])                  # the defaults are unchanged
    assert a.target == 0.7 and len(a.prune_units) == 5
    for bad in (["--ssl", "tiny-small:0.7", "--target", "0.5"],
                ["--ssl", "tiny-small:0.7", "--prune-units", "head"],
                ["--ssl", "tiny-small:1.5"], ["--ssl", "tiny-small"]):
        with pytest.raises(SystemExit):
            recipes.parse_args(["--data", "toy", *bad])


def test_plan_commands_and_flags(tmp_path):
    args = sweep.parse_args(["--data", "toy", "--targets", "0,0.5", "--seeds", "2",
                             "--out", str(tmp_path), "--steps", "40", "--toy-size", "tiny"])
    assert args.extra == ["--steps", "40", "--toy-size", "tiny"]
    plan = sweep.plan(args)
    assert plan == [("pruned", 0.0, 0), ("pruned", 0.5, 0), ("small", 0.5, 0),     # seed by seed
                    ("pruned", 0.0, 1), ("pruned", 0.5, 1), ("small", 0.5, 1)]
    dense = sweep.command(args, "pruned", 0.0, 0)
    assert dense[dense.index("--prune-units") + 1] == ""
    assert dense[dense.index("--target") + 1] == "0"
    assert sweep.command(args, "small", 0.5, 1)[:8] == [
        "--data", "toy", "--seed", "1", "--out", str(tmp_path / "small_t0.5_seed1"),
        "--threads", "1"]
    assert "tiny-small:0.5" in sweep.command(args, "small", 0.5, 1)
    assert sweep.command(args, "pruned", 0.5, 0)[-4:] == ["--steps", "40", "--toy-size", "tiny"]
    for own in (["--seed", "3"], ["--target", "0.2"], ["--resume"], ["--threads", "2"]):
        with pytest.raises(SystemExit):
            sweep.parse_args(["--data", "toy", *own])
    with pytest.raises(SystemExit):                             # small models exist for tiny only
        sweep.parse_args(["--data", "toy", "--ssl", "wavlm_base_plus"])
    assert sweep.parse_args(["--data", "toy", "--ssl", "wavlm_base_plus", "--no-small-dense"])


def fake_run(folder, sparsity, params, eers, seconds=60.0, checkpoint=False, command=None):
    os.makedirs(folder, exist_ok=True)
    if command is not None:
        with open(os.path.join(folder, "sweep.json"), "w") as fh:
            json.dump({"command": command}, fh)
    if checkpoint:
        open(os.path.join(folder, "checkpoint.pt"), "w").close()
        return
    structure = dict(conv_channels=[64, 32], heads=[4, 1], ffn_units=[512, 7],
                     attention=[True, True], ffn=[True, False])
    report = dict(sparsity=sparsity, params_after=params, seconds=seconds, structure=structure,
                  pruned={name: dict(eer=e, min_dcf=0.5) for name, e in eers.items()})
    with open(os.path.join(folder, "report.json"), "w") as fh:
        json.dump(report, fh)


def test_status_resume_and_table_with_spreads(tmp_path, monkeypatch, capsys):
    args = sweep.parse_args(["--data", "toy", "--targets", "0,0.5", "--seeds", "3",
                             "--out", str(tmp_path), "--no-small-dense", "--steps", "40"])
    n = sweep.tiny_params()
    for seed, eer in enumerate((0.10, 0.12, 0.14)):
        fake_run(sweep.run_dir(args, "pruned", 0.0, seed), 0.0, n, {"vox1_o": eer},
                 command=sweep.command(args, "pruned", 0.0, seed))
    for seed, eer in enumerate((0.20, 0.30)):
        fake_run(sweep.run_dir(args, "pruned", 0.5, seed), 0.5, n // 2, {"vox1_o": eer})
    fake_run(sweep.run_dir(args, "pruned", 0.5, 2), 0.5, n // 2, {}, checkpoint=True)
    assert sweep.status(args, "pruned", 0.0, 0) == "done"
    assert sweep.status(args, "pruned", 0.5, 2) == "resume"

    # Only the unfinished run is started, with --resume; finished ones are not touched.
    started = []
    def execute(a, job):
        started.append((job, sweep.status(a, *job)))
        return job, "trained", 0.0
    monkeypatch.setattr(sweep, "execute", execute)
    sweep.main(["--data", "toy", "--targets", "0,0.5", "--seeds", "3", "--out", str(tmp_path),
                "--no-small-dense", "--steps", "40"])
    assert started == [(("pruned", 0.5, 2), "resume")]
    md = (tmp_path / "results.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith("| dense"))
    assert "12.00 ± 2.00" in row and "| 3 |" in row          # mean ± sample std over 3 seeds
    row = next(line for line in md.splitlines() if line.startswith("| pruned in situ"))
    assert f"25.00 ± {np.std([20, 30], ddof=1):.2f}" in row and "| 2 |" in row
    with open(tmp_path / "results.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 5 and {r["test_set"] for r in rows} == {"vox1_o"}
    assert (rows[0]["heads"], rows[0]["ffn_units"], rows[0]["ffn"]) == ("4 1", "512 7", "1 0")
    assert (tmp_path / "eer_vs_params.png").stat().st_size > 1000
    minmax = sweep.table(sweep.collect(args), "minmax")
    assert "12.00 (10.00–14.00)" in minmax

    # A folder made by another command is never mixed in.
    other = sweep.parse_args(["--data", "toy", "--targets", "0", "--seeds", "1",
                              "--out", str(tmp_path), "--no-small-dense", "--steps", "80"])
    with pytest.raises(SystemExit, match="another command"):
        sweep.status(other, "pruned", 0.0, 0)


@pytest.mark.slow
def test_tiny_sweep_end_to_end(tmp_path):
    """Real train.py processes: two targets, two seeds, the small dense model; a second
    call reuses every run."""
    cmd = [sys.executable, os.path.join(ROOT, "sweep.py"), "--data", "toy", "--targets", "0,0.5",
           "--seeds", "2", "--out", str(tmp_path / "sweep"), "--jobs", "1", "--toy-size", "tiny",
           "--cache-dir", str(tmp_path / "cache"), "--steps", "4", "--batch-size", "2",
           "--crop-seconds", "0.5", "--eval-every", "0", "--num-workers", "0"]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert first.stdout.count(": trained") == 6
    with open(tmp_path / "sweep" / "results.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 6
    small = [r for r in rows if r["kind"] == "small"]
    pruned = [r for r in rows if r["kind"] == "pruned" and r["target"] == "0.5"]
    assert abs(float(pruned[0]["sparsity"]) - 0.5) < 0.01
    assert abs(int(small[0]["params"]) / int(pruned[0]["params"]) - 1) < 0.02
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0 and "6 finished, 0 to do" in second.stdout


# ------------------------------------------------- benchmarks/init_comparison.py (issue 21)
def write_results(folder, rows):
    """A sweep folder's results.csv with just the columns init_comparison reads."""
    folder.mkdir()
    with open(folder / "results.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, ["kind", "target", "seed", "test_set", "eer"])
        w.writeheader()
        for kind, target, seed, eer in rows:
            w.writerow(dict(kind=kind, target=target, seed=seed, test_set="vox1_o", eer=eer))
            w.writerow(dict(kind=kind, target=target, seed=seed, test_set="other", eer=0.5))


def test_init_comparison_pairs_by_seed_and_applies_the_rule(tmp_path, capsys):
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import init_comparison
    small = [0.30, 0.28, 0.33]                        # (b), seeds 0-2
    pre_pruned = [0.25, 0.26, 0.27]                   # (a)
    write_results(tmp_path / "scratch",
                  [("pruned", 0.7, s, 0.29) for s in range(3)]
                  + [("small", 0.7, s, e) for s, e in enumerate(small)])
    write_results(tmp_path / "pre",
                  [("pruned", 0.0, s, 0.24) for s in range(3)]
                  + [("pruned", 0.7, s, e) for s, e in enumerate(pre_pruned)]
                  + [("pruned", 0.7, 7, 0.01)])       # a seed (b) lacks: not paired
    cells, rows, decision = init_comparison.main(["--scratch", str(tmp_path / "scratch"),
                                                  "--pretrained", str(tmp_path / "pre")])
    assert cells["c"] == {0: 24.0, 1: 24.0, 2: 24.0} and len(cells["a"]) == 4
    x, y, mean, se, n = rows[0]
    diffs = [100 * (b - a) for b, a in zip(small, pre_pruned)]        # 5, 2, 6
    m = sum(diffs) / 3
    sd = (sum((d - m) ** 2 for d in diffs) / 2) ** 0.5
    assert (x, y, n) == ("b", "a", 3)
    assert mean == pytest.approx(m) and se == pytest.approx(sd / 3 ** 0.5)
    assert mean > 2 * se and decision.startswith("(a) beats (b)")
    assert "| (b) - (a) | +4.33 ± 1.20 | 3 |" in capsys.readouterr().out
    write_results(tmp_path / "pre2", [("pruned", 0.7, s, e) for s, e in enumerate([0.31, 0.25, 0.33])])
    _, _, decision = init_comparison.main(["--scratch", str(tmp_path / "scratch"),
                                           "--pretrained", str(tmp_path / "pre2")])
    assert decision.startswith("(a) does not beat (b)")
