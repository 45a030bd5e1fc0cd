"""train.py: end-to-end toy runs, the Lagrangian, the target schedule, resume, DDP, CLI."""
import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf
import torch

import checkpoints
import classifier
import evaluate
import run_folder
import train
import wavlm_masked as W

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def small_run_args(tmp_path, data="toy", out="run", steps=6, extra=()):
    return ["--data", data, "--toy-size", "tiny", "--cache-dir", str(tmp_path / "cache"),
            "--steps", str(steps), "--batch-size", "2", "--crop-seconds", "0.5",
            "--out", str(tmp_path / out), "--no-progress", "--num-workers", "0",
            "--eval-every", "3", "--save-every", "2", "--target", "0.5", *extra]


@pytest.mark.slow
def test_reverb_on_the_device_trains_as_in_the_workers(tmp_path):
    """--reverb-on device (the default on a GPU) through the whole loop, here on the CPU:
    the same crops, so the same losses step by step, to float precision."""
    os.makedirs(tmp_path / "rirs")
    for k in range(3):
        rir = np.random.default_rng(k).uniform(-1, 1, 3000) * np.exp(-np.arange(3000) / 500)
        rir[100 * (k + 1)] = 2.0
        sf.write(str(tmp_path / "rirs" / f"r{k}.wav"), rir.astype(np.float32), 16000)
    losses = {}
    for where in ("workers", "device"):
        train.main(small_run_args(tmp_path, out=where, steps=4, extra=[
            "--rir", str(tmp_path / "rirs"), "--aug-prob", "0.7", "--reverb-on", where,
            "--eval-every", "0", "--cohort-utts", "0"]))
        config = json.loads((tmp_path / where / "config.json").read_text())
        assert config["reverb_on"] == where
        losses[where] = [r["task_loss"] for r in map(json.loads, open(tmp_path / where / "log.jsonl"))
                         if "task_loss" in r]
    assert len(losses["device"]) == 4
    np.testing.assert_allclose(losses["device"], losses["workers"], rtol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("data", ["toy", "toy_spoof"])
def test_end_to_end_toy_run(tmp_path, data, capsys):
    report = train.main(small_run_args(tmp_path, data))
    out = tmp_path / "run"
    for name in ("config.json", "log.jsonl", "checkpoint.pt", "pruned_model.pt", "report.json",
                 "training_curves.png", "pruned_structure.png", "det.png"):
        assert (out / name).exists(), name
    saved = json.loads((out / "report.json").read_text())
    for key in ("params_before", "params_after", "sparsity", "eer_masked", "eer_pruned",
                "min_dcf_pruned", "speedup", "seconds"):
        assert key in saved
    # The sparsity is counted on the exported file's tensors.
    pruned, extra = checkpoints.load_model(out / "pruned_model.pt")
    assert saved["params_after"] == pruned.num_params()
    assert saved["sparsity"] == pytest.approx(1 - pruned.num_params() / saved["params_before"],
                                              abs=1e-12)
    assert saved["params_before"] == W.MaskedWavLM(W.WavLMConfig.tiny()).num_params()
    # The pruned model scores exactly like the masked one.
    assert saved["max_score_diff"] < 1e-4
    # Identical up to float noise; the EERs agree unless that noise reorders two
    # near-tied trials, which can move the EER by at most one trial's share.
    assert abs(saved["eer_masked"] - saved["eer_pruned"]) <= 1.0 / min(
        saved["pruned"][saved["test_set"]]["n_target"],
        saved["pruned"][saved["test_set"]]["n_nontarget"])
    # The saved classifier reloads without the original checkpoint.
    model, extra = classifier.load_classifier(out / "pruned_model.pt")
    assert model.task == extra["task"] == ("sv" if data == "toy" else "cm")
    rows = [json.loads(l) for l in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "task_loss" in r] == list(range(1, 7))
    assert any("eer" in r for r in rows)
    assert report["sparsity"] == saved["sparsity"]
    # evaluate.py --checkpoint embeds the test audio again and gets the same EER.
    capsys.readouterr()
    assert evaluate.main(["--checkpoint", str(out / "pruned_model.pt"), "--data", data,
                          "--toy-size", "tiny", "--cache-dir", str(tmp_path / "cache"),
                          "--det", str(tmp_path / "det.png")]) == 0
    printed = capsys.readouterr().out
    test_set = saved["test_set"]
    assert f"{test_set}:" in printed and (tmp_path / "det.png").exists()
    assert f"EER     {100 * saved['eer_pruned']:8.3f} %" in printed


def test_target_schedule_values():
    assert train.target_at(0, 100, 0.7) == 0.0
    assert train.target_at(50, 100, 0.7) == pytest.approx(0.35)
    assert train.target_at(25, 100, 0.7, "cosine") == pytest.approx(
        0.7 * (1 - math.cos(math.pi / 4)) / 2)
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
    assert lambdas[0].item() > 0 and lambdas[1].item() > 0      # the price of missing sparsity rose
    _, s_end = train.lagrangian(ssl.expected_num_params(), params0, 0.7, lambdas)
    assert s_end.item() > s_start + 0.01                        # and the gates closed


def final_weights(path):
    return torch.load(path, weights_only=True)["model"]


class SimulatedCrash(Exception):
    pass


def crash_after(monkeypatch, last_step):
    """Make train.main die right after logging `last_step`, as a killed process would."""
    log_step = run_folder.Logger.log_step

    def log_then_crash(logger, step, *rest):
        log_step(logger, step, *rest)
        if step >= last_step:
            logger.close()
            raise SimulatedCrash(f"step {step}")
    monkeypatch.setattr(run_folder.Logger, "log_step", log_then_crash)


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
    a, b = (final_weights(tmp_path / "full" / "checkpoint.pt"),
            final_weights(tmp_path / "cut" / "checkpoint.pt"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    steps = [json.loads(l)["step"]
             for l in (tmp_path / "cut" / "log.jsonl").read_text().splitlines()
             if "task_loss" in l]
    assert steps == list(range(1, 9))                  # one line per step, none twice
    full = json.loads((tmp_path / "full" / "report.json").read_text())
    cut = json.loads((tmp_path / "cut" / "report.json").read_text())
    assert full["eer_pruned"] == cut["eer_pruned"] and full["params_after"] == cut["params_after"]
    # The crashed attempt is counted up to its last logged step, not just to its checkpoint.
    first, second = cut["attempts"]
    assert first["ended"] == "crashed or killed; steps 5..5 redone" and first["last_step"] == 5
    assert second["first_step"] == 4 and second["ended"] == "finished"


def exits_with(capsys, code, fn, *args):
    """Run fn, expect SystemExit(code) without a traceback; return what it wrote to stderr."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        fn(*args)
    err = capsys.readouterr().err
    assert e.value.code == code, err
    assert "Traceback" not in err
    return err


def test_refuses_to_overwrite_and_to_resume_nothing(tmp_path, monkeypatch, capsys):
    err = exits_with(capsys, 2, train.main, small_run_args(tmp_path, out="new", extra=["--resume"]))
    assert "no checkpoint" in err and not (tmp_path / "new").exists()
    with monkeypatch.context() as m:
        crash_after(m, 3)                      # after the checkpoint of step 2
        with pytest.raises(SimulatedCrash):
            train.main(small_run_args(tmp_path, out="once", steps=4))
    err = exits_with(capsys, 2, train.main, small_run_args(tmp_path, out="once", steps=2))
    assert "checkpoint.pt exists; pass --resume" in err


@pytest.mark.parametrize("argv, message", [
    (["--data", "toy", "--target", "1.0"], "--target must lie in"),
    (["--data", "toy", "--target", "-0.1"], "--target must lie in"),
    (["--data", "vox1"], "needs --data-root"),
    (["--data", "toy", "--prune-units", "conv,heads"], "unknown unit"),
    (["--data", "toy", "--ssl", "nope.pt"], "--ssl nope.pt: no such file or folder"),
    (["--data", "toy", "--batch-size", "0"], "at least 1"),
    (["--data", "toy", "--re-export"], "--re-export goes with --resume"),
])
def test_argument_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        train.parse_args(argv)
    assert e.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.slow
def test_ddp_two_processes_gloo(tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           "--master_port=29517", os.path.join(ROOT, "train.py"),
           *small_run_args(tmp_path, steps=4, extra=["--device", "cpu"])]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["world_size"] == 2
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    pruned, _ = checkpoints.load_model(tmp_path / "run" / "pruned_model.pt")
    assert report["params_after"] == pruned.num_params()
    rows = [json.loads(l) for l in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "task_loss" in r] == [1, 2, 3, 4]     # rank 0 alone writes


# ------------------------------------------------------------------ interruptions (issue 9)
def interrupt_at_step(args, out, signum, min_step=3, timeout=300):
    """Start train.py as a real process, send `signum` once the log shows `min_step` steps,
    and return (exit code, stderr)."""
    # Same thread count as this process: float sums depend on how the work is split.
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "train.py"), *args,
                             "--threads", str(torch.get_num_threads())], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log, t0 = out / "log.jsonl", time.time()
    while time.time() - t0 < timeout and proc.poll() is None:
        if log.exists() and sum('"task_loss"' in line
                                for line in log.read_text().splitlines()) >= min_step:
            proc.send_signal(signum)
            break
        time.sleep(0.05)
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


@pytest.mark.slow
@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_checkpoints_and_resume_gives_identical_weights(tmp_path, signum, code):
    """Ctrl-C (or a scheduler's SIGTERM) before any periodic checkpoint loses nothing."""
    steps = 12
    cut = small_run_args(tmp_path, out="cut", steps=steps,
                         extra=["--save-every", "100", "--eval-every", "0"])
    rc, err = interrupt_at_step(cut, tmp_path / "cut", signum)
    assert rc == code, err[-3000:]
    assert "Traceback" not in err and "--resume" in err
    saved = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)
    assert 3 <= saved["step"] < steps
    assert saved["attempts"][-1]["ended"] == f"stopped by {signal.Signals(signum).name}"
    train.main(cut + ["--resume"])
    train.main(small_run_args(tmp_path, out="full", steps=steps,
                              extra=["--save-every", "100", "--eval-every", "0"]))
    a, b = (final_weights(tmp_path / "full" / "checkpoint.pt"),
            final_weights(tmp_path / "cut" / "checkpoint.pt"))
    for k in a:
        assert torch.equal(a[k], b[k]), k
    steps_logged = [json.loads(l)["step"]
                    for l in (tmp_path / "cut" / "log.jsonl").read_text().splitlines()
                    if "task_loss" in l]
    assert steps_logged == list(range(1, steps + 1))
    report = json.loads((tmp_path / "cut" / "report.json").read_text())
    assert len(report["attempts"]) == 2 and report["attempts"][1]["ended"] == "finished"
    assert report["seconds"] == pytest.approx(sum(a["seconds"] for a in report["attempts"]),
                                              abs=0.02)


def test_ctrl_c_before_the_loop_exits_with_the_signal_code_and_says_what_to_do(
        tmp_path, monkeypatch, capsys):
    """A Ctrl-C while the model loads: nothing to save, so exit 130 at once, no traceback,
    and the message says so; with a checkpoint on disk it gives the resume command."""
    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(train.pretrained, "build_ssl", ctrl_c)
    args = small_run_args(tmp_path)
    with pytest.raises(SystemExit) as stopped:
        train.main(args)
    assert stopped.value.code == 130
    assert "Nothing was saved yet; run the same command again." in capsys.readouterr().err
    (tmp_path / "run").mkdir(exist_ok=True)
    (tmp_path / "run" / "checkpoint.pt").write_bytes(b"")      # as if an earlier attempt saved
    with pytest.raises(SystemExit):
        train.main(args + ["--resume"])
    err = capsys.readouterr().err
    assert f"The last checkpoint is {tmp_path / 'run' / 'checkpoint.pt'}" in err
    assert err.rstrip().endswith(" ".join(args[-2:]) + " --resume")


@pytest.mark.slow
def test_rerun_after_crash_without_checkpoint_keeps_one_line_per_step(tmp_path, monkeypatch,
                                                                        capsys):
    args = small_run_args(tmp_path, steps=6, extra=["--save-every", "100", "--eval-every", "0"])
    with monkeypatch.context() as m:
        crash_after(m, 2)
        with pytest.raises(SimulatedCrash):
            train.main(args)
    assert not (tmp_path / "run" / "checkpoint.pt").exists()
    train.main(args)                                       # the same command again
    assert "starting over" in capsys.readouterr().out
    steps = [json.loads(l)["step"]
             for l in (tmp_path / "run" / "log.jsonl").read_text().splitlines()
             if "task_loss" in l]
    assert steps == list(range(1, 7))
    assert (tmp_path / "run" / "log.previous.jsonl").exists()


@pytest.mark.slow
def test_resume_of_a_finished_run_changes_nothing_unless_re_exported(tmp_path, capsys):
    args = small_run_args(tmp_path, steps=4)
    train.main(args)
    report = tmp_path / "run" / "report.json"
    before = report.read_text()
    capsys.readouterr()
    assert train.main(args + ["--resume"]) is None
    assert "finished run" in capsys.readouterr().out and report.read_text() == before
    again = train.main(args + ["--resume", "--re-export"])
    assert [a["ended"] for a in again["attempts"]] == ["finished", "re-exported"]
    assert again["sparsity"] == json.loads(before)["sparsity"]
    assert again["seconds"] == pytest.approx(sum(a["seconds"] for a in again["attempts"]), abs=0.02)


def test_a_batch_larger_than_the_training_set_stops_at_start(tmp_path, capsys):
    # the tiny corpus has 12 files
    args = small_run_args(tmp_path, extra=["--batch-size", "64"])
    t0 = time.time()
    err = exits_with(capsys, 2, train.main, args)
    assert time.time() - t0 < 60
    assert "fewer than one batch" in err and "--batch-size 64" in err
    assert not (tmp_path / "run").exists()


def test_user_errors_are_one_line_without_traceback_or_folder(tmp_path, capsys):
    out = ["--out", str(tmp_path / "run"), "--steps", "2", "--no-progress", "--ssl", "tiny"]
    err = exits_with(capsys, 2, train.main,
                     ["--data", "vox1", "--data-root", str(tmp_path / "missing"), *out])
    assert "--data-root" in err and "no such folder" in err
    (tmp_path / "empty1").mkdir()
    err = exits_with(capsys, 2, train.main,
                     ["--data", "vox1", "--data-root", str(tmp_path / "empty1"), *out])
    assert "folder not found" in err and "wav" in err
    (tmp_path / "empty5").mkdir()
    err = exits_with(capsys, 2, train.main,
                     ["--data", "asvspoof5", "--data-root", str(tmp_path / "empty5"), *out])
    for name in ("ASVspoof5.train.tsv", "ASVspoof5.dev.track_1.tsv"):
        assert name in err                                 # every missing protocol, at once
    junk = tmp_path / "junk.pt"
    junk.write_bytes(os.urandom(4096))
    err = exits_with(capsys, 2, train.main, small_run_args(tmp_path, extra=["--ssl", str(junk)]))
    assert "is not a PyTorch checkpoint" in err and "weights_only" not in err
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_bad_audio_is_named_before_training(tmp_path, capsys):
    """A corrupt, a 0.1-s and an 8-kHz file in a VoxCeleb1 tree (the tiny toy corpus)."""
    import shutil
    import data
    root = tmp_path / "vox1"
    spec = data.prepare_data("toy", cache_dir=str(tmp_path / "cache"), toy_size="tiny")
    shutil.copytree(os.path.dirname(spec.eval_root), root)
    train_file, trial_file = spec.train_items[0][0], spec.sv_trials("vox1_o")[0][1]
    corrupt = str(root / os.path.relpath(train_file, os.path.dirname(spec.eval_root)))
    short = str(root / os.path.relpath(trial_file, os.path.dirname(spec.eval_root)))
    with open(corrupt, "wb") as fh:
        fh.write(os.urandom(2000))
    sf.write(short, np.zeros(1600, dtype=np.float32), 16000)
    narrow = str(root / os.path.relpath(spec.train_items[1][0], os.path.dirname(spec.eval_root)))
    sf.write(narrow, np.random.default_rng(0).uniform(-0.3, 0.3, 8000).astype(np.float32), 8000)
    args = ["--data", "vox1", "--data-root", str(root), "--ssl", "tiny", "--steps", "2",
            "--batch-size", "2", "--crop-seconds", "0.5", "--out", str(tmp_path / "run"),
            "--no-progress", "--num-workers", "0", "--cache-dir", str(tmp_path / "cache")]
    err = exits_with(capsys, 2, train.main, args)
    assert corrupt in err and short in err and "--skip-bad-files" in err
    assert not (tmp_path / "run").exists()
    report = train.main(args + ["--skip-bad-files"])
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert sorted(config["data_check"]["skipped"]) == sorted([corrupt, short])
    assert config["data_check"]["resampled"] == {"8000": 1} and report["sparsity"] > 0


# --------------------------------------------- the authors' recipe: lr, averaging, AS-norm
def vox1_tree_of_the_toy_corpus():
    """The default toy SV corpus is a VoxCeleb1 tree: --data vox1 --data-root reads it."""
    import data
    spec = data.prepare_data("toy")
    return os.path.dirname(spec.eval_root)


def logged_lrs(out):
    rows = [json.loads(l) for l in (out / "log.jsonl").read_text().splitlines()]
    return [r["lr"] for r in rows if "task_loss" in r]


@pytest.mark.slow
def test_the_lr_follows_the_global_batch(tmp_path, capsys):
    """--lr is the configs' base lr; the effective lr is scaled by processes x batch / 64:
    one process with batch 128 and two with batch 64 both peak at 2e-4 (vox1: lr 1e-4).
    The same run, on a VoxCeleb1 tree, reports raw and AS-norm metrics."""
    root = vox1_tree_of_the_toy_corpus()
    common = ["--data", "vox1", "--data-root", root, "--ssl", "tiny", "--steps", "7",
              "--crop-seconds", "0.5", "--final-lr", "1e-4", "--eval-every", "0",
              "--no-progress", "--num-workers", "0", "--device", "cpu"]
    single = tmp_path / "single"
    report = train.main(common + ["--batch-size", "128", "--out", str(single)])
    config = json.loads((single / "config.json").read_text())
    assert config["lr_scale"] == 2.0 and config["lr_effective"] == pytest.approx(2e-4)
    assert max(logged_lrs(single)) == pytest.approx(2e-4, rel=1e-12)
    assert logged_lrs(single)[0] == 0.0            # the authors' warm-up starts from zero
    # the authors' scoring beside raw cosine, for every trial list
    for name, m in report["pruned"].items():
        assert {"eer", "min_dcf"} <= set(m) and {"eer", "min_dcf"} <= set(m["asnorm"])
    assert report["cohort"] == {"speakers": 40, "utterances": 160, "per_speaker": 4}
    capsys.readouterr()
    assert evaluate.main(["--checkpoint", str(single / "pruned_model.pt"), "--data", "vox1",
                          "--data-root", root, "--threads", "1"]) == 0
    printed = capsys.readouterr().out
    asnorm = report["pruned"]["vox1_o"]["asnorm"]
    assert "mean subtraction + AS-norm (cohort: 40 speakers x 4)" in printed
    assert f"EER     {100 * asnorm['eer']:8.3f} %" in printed

    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           "--master_port=29518", os.path.join(ROOT, "train.py"), *common,
           "--batch-size", "64", "--out", str(tmp_path / "ddp"), "--cohort-utts", "0"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert logged_lrs(tmp_path / "ddp") == logged_lrs(single)


@pytest.mark.slow
def test_averaged_snapshots_are_what_is_exported(tmp_path):
    """--average-last 3: the exported model is the pruned mean of the three snapshots of
    the settle phase (computed here independently), and still scores like the masked one."""
    report = train.main(small_run_args(tmp_path, steps=6, extra=[
        "--average-last", "3", "--settle-frac", "0.49", "--eval-every", "0"]))
    out = tmp_path / "run"
    assert report["averaged_steps"] == [4, 5, 6]
    snapshots = [torch.load(out / f"snapshot_{s}.pt", weights_only=True) for s in (4, 5, 6)]
    mean = {k: (sum(s[k].double() for s in snapshots) / 3).to(v.dtype)
            for k, v in snapshots[0].items()}
    pruned, extra = classifier.load_classifier(out / "pruned_model.pt")
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    ssl = W.MaskedWavLM(W.WavLMConfig.from_dict(state["ssl_config"]))

    def pruned_from(state_dict):
        model = classifier.Classifier(W.MaskedWavLM(ssl.config), extra["task"],
                                      extra["num_classes"],
                                      classifier.HeadConfig(**extra["head_config"]))
        model.load_state_dict(state_dict)
        model.eval()
        model.ssl = model.ssl.prune()
        return model.state_dict()
    averaged, last = pruned_from(mean), pruned_from(snapshots[-1])
    for key, value in pruned.state_dict().items():
        assert torch.allclose(value, averaged[key], atol=1e-6), key
    # the snapshots differ, so the average is not the last weights
    assert any(not torch.allclose(value, last[key]) for key, value in pruned.state_dict().items())
    assert report["max_score_diff"] < 1e-4
    assert report["sparsity"] == pytest.approx(0.5, abs=0.02)


def test_averaging_refuses_snapshots_of_different_structures():
    a = {"ssl.gate.log_alpha": torch.zeros(3), "w": torch.ones(2)}
    b = {"ssl.gate.log_alpha": torch.ones(3), "w": torch.zeros(2)}
    assert torch.equal(checkpoints.average_state_dicts([a, dict(a, w=torch.zeros(2))],
                                                       fixed=lambda k: k.endswith("log_alpha"))
                       ["w"], torch.full((2,), 0.5))
    with pytest.raises(ValueError, match="structure changed"):
        checkpoints.average_state_dicts([a, b], fixed=lambda k: k.endswith("log_alpha"))


@pytest.mark.slow
def test_asvspoof5_recipe_runs_with_the_s10_values(tmp_path):
    """--data asvspoof5 on an ASVspoof5 tree (the tiny toy CM corpus): config.json holds
    the s10 configuration's values (recipes.py, docs/method.md) and the two averaged
    snapshots are those of the settle phase."""
    import data
    import recipes
    spec = data.prepare_data("toy_spoof", cache_dir=str(tmp_path / "cache"), toy_size="tiny")
    root = os.path.dirname(os.path.dirname(spec.train_items[0][0]))        # <root>/flac_T/
    given = dict(ssl="tiny", steps=40, batch_size=2, crop_seconds=0.5)
    report = train.main(["--data", "asvspoof5", "--data-root", root, "--ssl", "tiny",
                         "--steps", "40", "--batch-size", "2", "--crop-seconds", "0.5",
                         "--out", str(tmp_path / "run"), "--no-progress", "--num-workers", "0"])
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    for key, value in recipes.RECIPES["asvspoof5"].items():
        assert config[key] == given.get(key, value), key
    assert config["lr_scale"] == pytest.approx(2 / 64)            # 1 process x batch 2 / 64
    assert report["averaged_steps"] == [39, 40] and report["task"] == "cm"
