"""dino.py: the loss against a brute-force oracle, centring and sharpening, the teacher's
moving average, the views, a smoke run whose checkpoint load_pretrained reads (the
teacher's encoder), resuming to the same weights, and bad input."""
import os
import signal

import numpy as np
import pytest
import torch

import dino
from checkpoints import read_checkpoint
from pretrained import load_pretrained
from wavlm_masked import WavLMConfig


def test_loss_equals_a_brute_force_oracle():
    """Cross-entropy between the teacher's centred, sharpened distribution of global view
    g and the student's of every other view v, averaged over the pairs and the batch."""
    g = torch.Generator().manual_seed(0)
    V, B, K = 4, 3, 7
    student, teacher = torch.randn(V, B, K, generator=g), torch.randn(2, B, K, generator=g)
    center, temp = torch.randn(K, generator=g), 0.05
    loss, _, _ = dino.dino_loss(student, teacher, center, temp)
    s, t, c = student.double().numpy(), teacher.double().numpy(), center.double().numpy()
    total, pairs = 0.0, 0
    for gv in range(2):
        for v in range(V):
            if v == gv:
                continue
            for b in range(B):
                q = np.exp((t[gv, b] - c) / temp)
                q /= q.sum()
                logits = s[v, b] / dino.STUDENT_TEMP
                log_p = logits - np.log(np.exp(logits).sum())
                total += -(q * log_p).sum()
            pairs += 1
    assert loss.item() == pytest.approx(total / (pairs * B), rel=1e-5)


def test_centring_flattens_and_sharpening_peaks_the_targets():
    """The two halves of DINO's guard against collapse: a teacher that says the same thing
    for every input gets a uniform target once the centre has caught up; a low
    temperature makes one input's target peaked."""
    K = 5
    same = torch.tensor([3.0, 1.0, 0.0, 0.0, -1.0]).expand(2, 4, K)
    center = torch.zeros(K)
    for _ in range(200):
        center = dino.CENTER_MOMENTUM * center + (1 - dino.CENTER_MOMENTUM) * same.mean((0, 1))
    _, targets, _ = dino.dino_loss(torch.zeros(2, 4, K), same, center, 0.04)
    assert torch.allclose(targets, torch.full_like(targets, 1 / K), atol=1e-3)
    _, sharp, _ = dino.dino_loss(torch.zeros(2, 4, K), same, torch.zeros(K), 0.04)
    assert sharp[0, 0, 0] > 0.999


def test_the_teacher_is_the_moving_average_of_the_student():
    torch.manual_seed(0)
    model = dino.Dino(WavLMConfig.tiny(num_layers=1), prototypes=16)
    assert all(torch.equal(t, s) for t, s in zip(model.teacher.parameters(),
                                                 model.student.parameters()))
    before = [t.clone() for t in model.teacher.parameters()]
    with torch.no_grad():
        for s in model.student.parameters():
            s.add_(torch.randn_like(s))
    model.update_teacher(0.9)
    for t0, t, s in zip(before, model.teacher.parameters(), model.student.parameters()):
        assert torch.allclose(t, 0.9 * t0 + 0.1 * s, atol=1e-6)
    assert not any(p.requires_grad for p in model.teacher.parameters())
    assert dino.teacher_momentum(0, 100) == pytest.approx(0.996)
    assert dino.teacher_momentum(100, 100) == pytest.approx(1.0)
    assert dino.teacher_temperature(0, 100) == dino.TEACHER_TEMP[0]
    assert dino.teacher_temperature(20, 100) == dino.TEACHER_TEMP[1]


def test_views_are_reproducible_and_each_has_its_own_channel(tmp_path):
    import soundfile as sf
    wave = np.random.default_rng(0).normal(0, 0.1, 16000 * 3).astype(np.float32)
    sf.write(tmp_path / "a.wav", wave, 16000, subtype="PCM_16")
    crops = dino.MultiCrops([str(tmp_path / "a.wav")], 1.0, 0.5, 3)
    g1, l1 = crops.views(2, np.random.default_rng([0, 5]))
    g2, l2 = crops.views(2, np.random.default_rng([0, 5]))
    assert g1.shape == (2, 2, 16000) and l1.shape == (3, 2, 8000)
    assert torch.equal(g1, g2) and torch.equal(l1, l2)
    assert not torch.equal(g1[0], g1[1])
    # the same samples through two channels: the spectra differ by more than the noise
    rng = np.random.default_rng(1)
    a, b = dino.random_channel(wave, rng), dino.random_channel(wave, rng)
    spectrum = lambda x: np.log(np.abs(np.fft.rfft(x)) ** 2 + 1e-9)
    assert a.dtype == np.float32 and len(a) == len(wave)
    assert np.abs(spectrum(a) - spectrum(b)).mean() > 0.5


def run(tmp_path, *extra):
    return dino.main(["--data", "toy", "--toy-size", "tiny", "--cache-dir",
                      str(tmp_path / "cache"), "--out", str(tmp_path / "run"), "--steps", "4",
                      "--batch-size", "2", "--global-seconds", "0.6", "--local-seconds", "0.5",
                      "--local-crops", "1", "--prototypes", "32", "--eval-every", "2",
                      "--eval-batches", "1", "--freeze-prototypes", "2", *extra])


@pytest.mark.slow
def test_smoke_run_exports_the_teacher_encoder_that_load_pretrained_reads(tmp_path):
    report = run(tmp_path)
    assert report["steps"] == 4 and report["files"] == 6 and report["heldout_files"] == 1
    out = tmp_path / "run"
    raw = read_checkpoint(out / "tiny_wavlm.pt")
    assert set(raw) == {"cfg", "model"} and raw["cfg"]["objective"] == "dino"
    loaded = load_pretrained(out / "tiny_wavlm.pt").eval()     # every key mapped, or it raises
    model = dino.Dino(WavLMConfig.tiny(), 32)
    model.load_state_dict(read_checkpoint(out / "checkpoint.pt")["model"])
    x = torch.randn(2, 12000)
    with torch.no_grad():
        a, _ = model.teacher["encoder"].eval()(x)
        b, _ = loaded(x)
        c, _ = model.student["encoder"].eval()(x)
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert not torch.equal(a[-1], c[-1])                        # the teacher, not the student
    log = [l for l in (out / "log.jsonl").read_text().splitlines()]
    assert len(log) == 4 and sum('"heldout_loss"' in l for l in log) == 2


@pytest.mark.slow
def test_interrupted_run_resumes_to_the_same_weights(tmp_path, monkeypatch):
    run(tmp_path / "straight")
    lr_at = dino.pretrain.lr_at

    def interrupt_at_step_3(step, total, peak):
        if step == 2:                                   # during the third step
            os.kill(os.getpid(), signal.SIGINT)
        return lr_at(step, total, peak)

    monkeypatch.setattr(dino.pretrain, "lr_at", interrupt_at_step_3)
    with pytest.raises(SystemExit) as stopped:
        run(tmp_path / "interrupted")
    assert stopped.value.code == 130
    assert read_checkpoint(tmp_path / "interrupted" / "run" / "checkpoint.pt")["step"] == 3
    monkeypatch.setattr(dino.pretrain, "lr_at", lr_at)
    run(tmp_path / "interrupted", "--resume")
    a = read_checkpoint(tmp_path / "straight" / "run" / "checkpoint.pt")
    b = read_checkpoint(tmp_path / "interrupted" / "run" / "checkpoint.pt")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert len((tmp_path / "interrupted" / "run" / "log.jsonl").read_text().splitlines()) == 4


def test_bad_input_is_one_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        dino.main(["--data-root", str(tmp_path / "nope")])
    assert e.value.code == 2 and "is not a folder" in capsys.readouterr().err
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.wav").write_bytes(b"not audio")
    with pytest.raises(SystemExit) as e:
        dino.main(["--data-root", str(tmp_path / "bad"), "--out", str(tmp_path / "o")])
    assert e.value.code == 2 and "x.wav" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        dino.main(["--data", "toy", "--local-seconds", "0.1"])
    assert e.value.code == 2 and "at least 0.5" in capsys.readouterr().err
