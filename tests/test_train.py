"""train.py: end-to-end toy runs, the Lagrangian, the target schedule, resume, DDP, CLI."""
import json
import math
import os
import subprocess
import sys

import pytest
import torch

import classifier
import evaluate
import train
import wavlm_masked as W

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def small_run_args(tmp_path, data="toy", out="run", steps=6, extra=()):
    return ["--data", data, "--toy-size", "tiny", "--cache-dir", str(tmp_path / "cache"), "--steps", str(steps),
            "--batch-size", "2", "--crop-seconds", "0.5", "--out", str(tmp_path / out), "--no-progress",
            "--num-workers", "0", "--eval-every", "3", "--save-every", "2", "--target", "0.5", *extra]


@pytest.mark.slow
@pytest.mark.parametrize("data", ["toy", "toy_spoof"])
def test_end_to_end_toy_run(tmp_path, data, capsys):
    report = train.main(small_run_args(tmp_path, data))
    out = tmp_path / "run"
    for name in ("config.json", "log.jsonl", "checkpoint.pt", "pruned_model.pt", "report.json",
                 "training_curves.png", "pruned_structure.png", "det.png"):
        assert (out / name).exists(), name
    saved = json.loads((out / "report.json").read_text())
    for key in ("params_before", "params_after", "sparsity", "eer_masked", "eer_pruned", "min_dcf_pruned",
                "speedup", "seconds"):
        assert key in saved
    # The sparsity is counted on the exported file's tensors.
    pruned, extra = W.load(out / "pruned_model.pt")
    assert saved["params_after"] == pruned.num_params()
    assert saved["sparsity"] == pytest.approx(1 - pruned.num_params() / saved["params_before"], abs=1e-12)
    assert saved["params_before"] == W.MaskedWavLM(W.WavLMConfig.tiny()).num_params()
    # The pruned model scores exactly like the masked one.
    assert saved["max_score_diff"] < 1e-4
    # Identical up to float noise; the EERs agree unless that noise reorders two
    # near-tied trials, which can move the EER by at most one trial's share.
    assert abs(saved["eer_masked"] - saved["eer_pruned"]) <= 1.0 / min(
        saved["pruned"][saved["test_set"]]["n_target"], saved["pruned"][saved["test_set"]]["n_nontarget"])
    # The saved classifier reloads without the original checkpoint.
    model, extra = classifier.load_classifier(out / "pruned_model.pt")
    assert model.task == extra["task"] == ("sv" if data == "toy" else "cm")
    rows = [json.loads(l) for l in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "task_loss" in r] == list(range(1, 7))
    assert any("eer" in r for r in rows)
    assert report["sparsity"] == saved["sparsity"]
    # evaluate.py --checkpoint embeds the test audio again and gets the same EER.
    capsys.readouterr()
    assert evaluate.main(["--checkpoint", str(out / "pruned_model.pt"), "--data", data, "--toy-size", "tiny",
                          "--cache-dir", str(tmp_path / "cache"), "--det", str(tmp_path / "det.png")]) == 0
    printed = capsys.readouterr().out
    test_set = saved["test_set"]
    assert f"{test_set}:" in printed and (tmp_path / "det.png").exists()
    assert f"EER     {100 * saved['eer_pruned']:8.3f} %" in printed


def test_target_schedule_values():
    assert train.target_at(0, 100, 0.7) == 0.0
    assert train.target_at(50, 100, 0.7) == pytest.approx(0.35)
    assert train.target_at(25, 100, 0.7, "cosine") == pytest.approx(0.7 * (1 - math.cos(math.pi / 4)) / 2)
    assert train.target_at(50, 100, 0.7, "cosine") == pytest.approx(0.35)
    assert train.target_at(100, 100, 0.7) == 0.7 and train.target_at(500, 100, 0.7, "cosine") == 0.7
    assert train.target_at(0, 0, 0.7) == 0.7


def test_lagrangian_pushes_towards_sparsity_when_below_target():
    torch.manual_seed(0)
    ssl = W.MaskedWavLM(W.WavLMConfig.tiny(prune_units=list(W.PRUNE_UNITS)))
    ssl.train()
    params0 = ssl.num_params()
    lambdas = torch.zeros(2, requires_grad=True)
    lambda_opt = torch.optim.AdamW([lambdas], lr=0.05, weight_decay=0.0, maximize=True)
    gate_opt = torch.optim.AdamW(ssl.gate_parameters(), lr=0.05, weight_decay=0.0)
    s_start = None
    for _ in range(20):
        reg, s_hat = train.lagrangian(ssl.expected_num_params(), params0, 0.7, lambdas)
        s_start = s_start if s_start is not None else s_hat.item()
        assert s_hat.item() < 0.7
        lambda_opt.zero_grad(); gate_opt.zero_grad()
        reg.backward()
        lambda_opt.step(); gate_opt.step()
        with torch.no_grad():
            lambdas[0].clamp_(min=0.0)
    assert lambdas[0].item() > 0 and lambdas[1].item() > 0        # the price of missing sparsity rose
    _, s_end = train.lagrangian(ssl.expected_num_params(), params0, 0.7, lambdas)
    assert s_end.item() > s_start + 0.01                          # and the gates closed


def final_weights(path):
    return torch.load(path, weights_only=True)["model"]


class SimulatedCrash(Exception):
    pass


def crash_after(monkeypatch, last_step):
    """Make train.main die right after logging `last_step`, as a killed process would."""
    log_step = train.log_step

    def log_then_crash(logger, step, *rest):
        log_step(logger, step, *rest)
        if step >= last_step:
            logger.close()
            raise SimulatedCrash(f"step {step}")
    monkeypatch.setattr(train, "log_step", log_then_crash)


@pytest.mark.slow
def test_resume_gives_identical_weights(tmp_path, monkeypatch):
    train.main(small_run_args(tmp_path, out="full", steps=8))
    with monkeypatch.context() as m:
        crash_after(m, 5)
        with pytest.raises(SimulatedCrash):
            train.main(small_run_args(tmp_path, out="cut", steps=8))
    # Stopped after step 5, but the last checkpoint is from step 4 (--save-every 2):
    # step 5 is lost as in a real crash, and redone after the resume.
    assert torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)["step"] == 4
    train.main(small_run_args(tmp_path, out="cut", steps=8, extra=["--resume"]))
    a, b = final_weights(tmp_path / "full" / "checkpoint.pt"), final_weights(tmp_path / "cut" / "checkpoint.pt")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    steps = [json.loads(l)["step"] for l in (tmp_path / "cut" / "log.jsonl").read_text().splitlines()
             if "task_loss" in l]
    assert steps == list(range(1, 9))                  # one line per step, none twice
    full = json.loads((tmp_path / "full" / "report.json").read_text())
    cut = json.loads((tmp_path / "cut" / "report.json").read_text())
    assert full["eer_pruned"] == cut["eer_pruned"] and full["params_after"] == cut["params_after"]


def test_refuses_to_overwrite_and_to_resume_nothing(tmp_path, monkeypatch):
    with pytest.raises(SystemExit, match="no checkpoint"):
        train.main(small_run_args(tmp_path, out="new", extra=["--resume"]))
    with monkeypatch.context() as m:
        crash_after(m, 3)                      # after the checkpoint of step 2
        with pytest.raises(SimulatedCrash):
            train.main(small_run_args(tmp_path, out="once", steps=4))
    with pytest.raises(SystemExit, match="exists"):
        train.main(small_run_args(tmp_path, out="once", steps=2))


@pytest.mark.parametrize("argv, message", [
    (["--data", "toy", "--target", "1.0"], "--target must lie in"),
    (["--data", "toy", "--target", "-0.1"], "--target must lie in"),
    (["--data", "vox1"], "needs --data-root"),
    (["--data", "toy", "--prune-units", "conv,heads"], "unknown unit"),
])
def test_argument_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        train.parse_args(argv)
    assert e.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.slow
def test_ddp_two_processes_gloo(tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29517",
           os.path.join(ROOT, "train.py"), *small_run_args(tmp_path, steps=4, extra=["--device", "cpu"])]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["world_size"] == 2
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    pruned, _ = W.load(tmp_path / "run" / "pruned_model.pt")
    assert report["params_after"] == pruned.num_params()
    rows = [json.loads(l) for l in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "task_loss" in r] == [1, 2, 3, 4]     # rank 0 alone writes
