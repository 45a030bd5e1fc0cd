"""Tests for data.py and toy_corpus.py: layout parsers and their errors on
small fake trees, audio checks, crops, augmentation, collation, toy corpora."""

import filecmp
import os
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch

import augment
import data
import toy_corpus

SR = data.SAMPLE_RATE


def write(path, seconds=1.0, sr=SR, channels=1, seed=0):
    """A random-noise audio file (wav or flac by extension); returns the samples."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    x = (np.random.default_rng(seed)
         .uniform(-0.5, 0.5, (int(seconds * sr), channels))).astype(np.float32)
    sf.write(path, x, sr, subtype="PCM_16")
    return sf.read(path, dtype="float32", always_2d=True)[0]


def vox1_tree(root, train=("id10001", "id10002"), test=("id10270", "id10271")):
    for i, spk in enumerate(train + test):
        for v in ("vidA", "vidB"):
            for u in (1, 2):
                write(os.path.join(root, "wav", spk, v, f"{u:05d}.wav"), 0.5, seed=i)
    lines = [f"1 {test[0]}/vidA/00001.wav {test[0]}/vidB/00001.wav",
             f"0 {test[0]}/vidA/00001.wav {test[1]}/vidA/00002.wav",
             f"1 {test[1]}/vidA/00001.wav {test[1]}/vidB/00002.wav"]
    with open(os.path.join(root, "veri_test2.txt"), "w") as fh:
        fh.write("\n".join(lines) + "\n")
    return lines


# ----------------------------------------------------------------------------
# audio


def test_load_audio_mono_average(tmp_path):
    x = write(str(tmp_path / "st.wav"), 0.1, channels=2)
    y = data.load_audio(str(tmp_path / "st.wav"))
    assert y.dtype == torch.float32 and y.shape == (x.shape[0],)
    assert torch.allclose(y, torch.from_numpy(x.mean(1)))


def test_wrong_sample_rate_is_resampled_with_one_notice(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(data, "_resample_noticed", set())
    write(str(tmp_path / "a.wav"), 0.5, sr=8000)
    write(str(tmp_path / "b.wav"), 0.25, sr=8000)
    a = data.load_audio(str(tmp_path / "a.wav"))
    b = data.load_audio(str(tmp_path / "b.wav"))
    assert a.shape == (8000,) and b.shape == (4000,)
    out = capsys.readouterr().out
    assert out.count("resampling 8000 Hz") == 1 and "a.wav" in out


def test_corrupt_and_empty_audio_name_the_file(tmp_path):
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF\x00\x00garbage" * 10)
    with pytest.raises(RuntimeError, match="broken.wav"):
        data.load_audio(str(bad))
    sf.write(str(tmp_path / "empty.wav"), np.zeros(0, np.float32), SR)
    with pytest.raises(RuntimeError, match="empty.wav"):
        data.load_audio(str(tmp_path / "empty.wav"))
    # TrainCrops reads only headers + a slice: a corrupt file must still be named.
    with pytest.raises(RuntimeError, match="broken.wav"):
        data.TrainCrops([(str(bad), 0)], 0.5)[0]


# ----------------------------------------------------------------------------
# VoxCeleb


def test_vox1_layout(tmp_path):
    vox1_tree(str(tmp_path))
    spec = data.prepare_data("vox1", str(tmp_path))
    assert spec.task == "sv" and spec.class_names == ["id10001", "id10002"]
    assert spec.num_classes == 2 and len(spec.train_items) == 8
    assert {l for _, l in spec.train_items} == {0, 1}
    assert all(os.path.isfile(p) and "/id1000" in p for p, _ in spec.train_items)
    assert spec.eval_names() == ["vox1_o"] and spec.valid_name == spec.test_name == "vox1_o"
    trials = spec.sv_trials("vox1_o")
    assert [t[0] for t in trials] == [1, 0, 1]
    assert trials[0][1] == os.path.join(str(tmp_path), "wav", "id10270", "vidA", "00001.wav")
    paths = spec.eval_paths()
    assert len(paths) == 5 and paths == sorted(paths) and all(os.path.isfile(p) for p in paths)


def test_vox1_missing_folder_and_trials(tmp_path):
    with pytest.raises(FileNotFoundError, match="wav"):
        data.load_vox1(str(tmp_path / "nowhere"))
    vox1_tree(str(tmp_path))
    os.remove(tmp_path / "veri_test2.txt")
    with pytest.raises(FileNotFoundError, match="veri_test2.txt"):
        data.load_vox1(str(tmp_path))


def test_trial_naming_missing_file(tmp_path):
    vox1_tree(str(tmp_path))
    with open(tmp_path / "veri_test2.txt", "a") as fh:
        fh.write("0 id10270/vidA/00001.wav id10271/vidZ/00009.wav\n")
    with pytest.raises(FileNotFoundError,
                       match=r"veri_test2.txt:4: trial names id10271/vidZ/00009.wav"):
        data.load_vox1(str(tmp_path))


def test_malformed_trial_line(tmp_path):
    vox1_tree(str(tmp_path))
    with open(tmp_path / "veri_test2.txt", "a") as fh:
        fh.write("1 id10270/vidA/00001.wav\n")
    with pytest.raises(ValueError, match="veri_test2.txt:4: expected"):
        data.load_vox1(str(tmp_path))


def test_prepare_data_argument_errors(tmp_path):
    with pytest.raises(ValueError, match="data-root"):
        data.prepare_data("vox1")
    with pytest.raises(ValueError, match="unknown dataset"):
        data.prepare_data("librispeech", str(tmp_path))


def test_vox2_layout_with_vox1_tests(tmp_path):
    v2 = tmp_path / "voxceleb2" / "dev" / "wav"
    for i, spk in enumerate(["id00012", "id00015", "id00019"]):
        write(str(v2 / spk / "vid" / "00001.wav"), 0.3, seed=i)
    lines = vox1_tree(str(tmp_path / "voxceleb1"))
    for f in ("list_test_all2.txt", "list_test_hard2.txt"):
        (tmp_path / "voxceleb1" / f).write_text(lines[0] + "\n" + lines[1] + "\n")
    spec = data.prepare_data("vox2", str(tmp_path))
    assert spec.class_names == ["id00012", "id00015", "id00019"] and spec.num_classes == 3
    assert spec.eval_names() == ["vox1_o", "vox1_e", "vox1_h"]
    assert spec.eval_root == str(tmp_path / "voxceleb1" / "wav")
    assert len(spec.sv_trials("vox1_e")) == 2
    # VoxCeleb1 somewhere else: vox1_root.
    os.rename(tmp_path / "voxceleb1", tmp_path / "v1elsewhere")
    with pytest.raises(FileNotFoundError, match="voxceleb1"):
        data.prepare_data("vox2", str(tmp_path))
    spec = data.prepare_data("vox2", str(tmp_path), vox1_root=str(tmp_path / "v1elsewhere"))
    assert spec.eval_root == str(tmp_path / "v1elsewhere" / "wav")


def test_vox2_m4a_without_ffmpeg_explains_conversion(tmp_path, monkeypatch):
    aac = tmp_path / "voxceleb2" / "dev" / "aac" / "id00012" / "vid"
    aac.mkdir(parents=True)
    (aac / "00001.m4a").write_bytes(b"\x00" * 100)
    vox1_tree(str(tmp_path / "voxceleb1"))
    monkeypatch.setattr(data.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match=r"m4a.*ffmpeg"):
        data.prepare_data("vox2", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="dev"):
        data.prepare_data("vox2", str(tmp_path / "empty"))


# ----------------------------------------------------------------------------
# ASVspoof


def asv5_tree(root, with_eval=True):
    rows = {"train": [("bonafide", "-"), ("spoof", "A01"), ("spoof", "A02")],
            "dev": [("bonafide", "-"), ("spoof", "A01")],
            "eval": [("bonafide", "-"), ("spoof", "A01"), ("spoof", "A17"), ("bonafide", "-")]}
    names = {"train": ("T", "flac_T", "ASVspoof5.train.tsv"),
             "dev": ("D", "flac_D", "ASVspoof5.dev.track_1.tsv"),
             "eval": ("E", "flac_E_eval", "ASVspoof5.eval.track_1.tsv")}
    for split, (p, folder, proto) in names.items():
        if split == "eval" and not with_eval:
            continue
        lines = []
        for k, (key, attack) in enumerate(rows[split]):
            fid = f"{p}_{k:010d}"
            write(os.path.join(root, folder, fid + ".flac"), 0.2, seed=k)
            label = "bonafide" if key == "bonafide" else attack
            lines.append(f"{p}_0001 {fid} F - - - {'-' if key == 'bonafide' else 'AC1'} "
                         f"{label} {key} -")
        with open(os.path.join(root, proto), "w") as fh:
            fh.write("\n".join(lines) + "\n")


def test_asvspoof5_layout(tmp_path):
    asv5_tree(str(tmp_path))
    spec = data.prepare_data("asvspoof5", str(tmp_path))
    assert spec.task == "cm" and spec.num_classes == 2 and spec.class_names == ["spoof", "bonafide"]
    assert [l for _, l in spec.train_items] == [1, 0, 0]
    assert spec.train_items[0][0] == str(tmp_path / "flac_T" / "T_0000000000.flac")
    assert [l for _, l in spec.dev_items] == [1, 0]
    assert spec.eval_attacks == ["bonafide", "A01", "A17", "bonafide"]
    assert spec.unseen_attacks == ["A17"]
    assert spec.eval_names() == ["dev", "eval", "eval_unseen"]
    assert spec.valid_name == "dev" and spec.test_name == "eval"
    unseen = spec.cm_items("eval_unseen")
    assert [os.path.basename(p) for p, _ in unseen] == \
        ["E_0000000000.flac", "E_0000000002.flac", "E_0000000003.flac"]
    assert len(spec.eval_paths()) == 6 and len(spec.eval_paths("dev")) == 2


def test_asvspoof5_without_eval_keys(tmp_path):
    asv5_tree(str(tmp_path), with_eval=False)
    spec = data.prepare_data("asvspoof5", str(tmp_path))
    assert spec.eval_names() == ["dev"] and spec.test_name == "dev" and spec.eval_items == []


def test_asvspoof5_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        data.prepare_data("asvspoof5", str(tmp_path / "nowhere"))
    asv5_tree(str(tmp_path))
    proto = tmp_path / "ASVspoof5.dev.track_1.tsv"
    good = proto.read_text()
    proto.write_text(good + "D_0001 D_0000000009 F - - - AC1 A01 spoof\n")      # 9 columns
    with pytest.raises(ValueError, match=r"ASVspoof5.dev.track_1.tsv:3: "
                                         r"expected 10 \(ASVspoof5\) columns, got 9"):
        data.prepare_data("asvspoof5", str(tmp_path))
    proto.write_text(good + "D_0001 D_0000000009 F - - - AC1 A01 spoof - x\n")  # 11 columns
    with pytest.raises(ValueError, match=r":3: expected 10 \(ASVspoof5\) columns, got 11"):
        data.prepare_data("asvspoof5", str(tmp_path))
    proto.write_text(good + "D_0001 D_0000000009 F - - - AC1 A01 spoof -\n")    # missing file
    with pytest.raises(FileNotFoundError, match=r"dev.track_1.tsv:3: D_0000000009.flac is not in"):
        data.prepare_data("asvspoof5", str(tmp_path))
    proto.write_text(good.replace("bonafide -", "genuine -", 1))
    with pytest.raises(ValueError, match=":1: key \\(column 9\\) must be bonafide or spoof"):
        data.prepare_data("asvspoof5", str(tmp_path))
    proto.write_text(good)
    os.rename(tmp_path / "flac_D", tmp_path / "flac_dev")
    with pytest.raises(FileNotFoundError, match="flac_D"):
        data.prepare_data("asvspoof5", str(tmp_path))


def asv19_tree(root):
    pdir = os.path.join(root, "ASVspoof2019_LA_cm_protocols")
    os.makedirs(pdir)
    for split, tag, rows in (("train", "trn", [("-", "bonafide"), ("A01", "spoof")]),
                             ("dev", "trl", [("-", "bonafide"), ("A02", "spoof")]),
                             ("eval", "trl", [("-", "bonafide"), ("A07", "spoof"),
                                              ("A01", "spoof")])):
        lines = []
        for k, (attack, key) in enumerate(rows):
            fid = f"LA_{split[0].upper()}_{k:07d}"
            write(os.path.join(root, f"ASVspoof2019_LA_{split}", "flac", fid + ".flac"), 0.2)
            lines.append(f"LA_0079 {fid} - {attack} {key}")
        with open(os.path.join(pdir, f"ASVspoof2019.LA.cm.{split}.{tag}.txt"), "w") as fh:
            fh.write("\n".join(lines) + "\n")


def test_asvspoof2019_layout_and_bad_line(tmp_path):
    asv19_tree(str(tmp_path))
    spec = data.prepare_data("asvspoof2019", str(tmp_path))
    assert [l for _, l in spec.train_items] == [1, 0]
    assert spec.train_items[1][0].endswith("ASVspoof2019_LA_train/flac/LA_T_0000001.flac")
    assert spec.eval_attacks == ["bonafide", "A07", "A01"] and spec.unseen_attacks == ["A07"]
    assert spec.eval_names() == ["dev", "eval", "eval_unseen"]
    proto = tmp_path / "ASVspoof2019_LA_cm_protocols" / "ASVspoof2019.LA.cm.train.trn.txt"
    proto.write_text("LA_0079 LA_T_0000000 - - bonafide\nLA_0079 LA_T_0000001 A01 spoof\n")
    with pytest.raises(ValueError,
                       match=r"train.trn.txt:2: expected 5 \(ASVspoof 2019 LA\) columns, got 4"):
        data.prepare_data("asvspoof2019", str(tmp_path))


# ----------------------------------------------------------------------------
# crops, augmentation, collation


def test_crops_are_deterministic_slices(tmp_path):
    x = write(str(tmp_path / "long.wav"), 3.0)[:, 0]
    items = [(str(tmp_path / "long.wav"), 7)]
    a, b = data.TrainCrops(items, 1.0, seed=3), data.TrainCrops(items, 1.0, seed=3)
    w1, label = a[0]
    assert label == 7 and w1.shape == (SR,)
    assert torch.equal(w1, b[0][0])                       # same (seed, epoch, i)
    start = int(np.flatnonzero(np.all(
        np.lib.stride_tricks.sliding_window_view(x, SR)[:, :8] == w1[:8].numpy(), axis=1))[0])
    assert np.array_equal(x[start:start + SR], w1.numpy())  # a true slice of the file
    a.set_epoch(1)
    assert not torch.equal(a[0][0], w1)                   # a new epoch, a new crop
    b.set_epoch(1)
    assert torch.equal(a[0][0], b[0][0])
    assert not torch.equal(data.TrainCrops(items, 1.0, seed=4)[0][0], w1)


def test_short_clips_are_repeat_padded(tmp_path):
    x = write(str(tmp_path / "short.wav"), 0.3)[:, 0]       # 4800 samples
    w, _ = data.TrainCrops([(str(tmp_path / "short.wav"), 0)], 1.0)[0]
    assert w.shape == (SR,)
    assert torch.equal(w[:-4800], w[4800:])               # periodic with the clip length
    k = int(np.flatnonzero(x == w[0].item())[0])
    assert np.array_equal(np.roll(x, -k), w[:4800].numpy())


def test_crops_of_resampled_audio(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "_resample_noticed", set())
    write(str(tmp_path / "8k.wav"), 2.0, sr=8000)
    w, _ = data.TrainCrops([(str(tmp_path / "8k.wav"), 0)], 1.5)[0]
    assert w.shape == (24000,)


def test_augmenter(tmp_path):
    write(str(tmp_path / "musan" / "noise" / "n1.wav"), 0.5, seed=1)
    write(str(tmp_path / "musan" / "music" / "m1.wav"), 2.0, seed=2)
    rir = np.zeros(800, np.float32)
    rir[100], rir[300] = 1.0, 0.5
    os.makedirs(tmp_path / "rirs")
    sf.write(str(tmp_path / "rirs" / "r.wav"), rir, SR)
    aug = augment.Augmenter(str(tmp_path / "musan"), str(tmp_path / "rirs"), p=1.0)
    assert sorted(aug.kinds) == ["music", "noise", "reverb"]
    wave = torch.from_numpy(write(str(tmp_path / "s.wav"), 1.0, seed=9)[:, 0])
    outs = [aug(wave, np.random.default_rng([0, 0, i])) for i in range(12)]
    assert all(o.shape == wave.shape and not torch.equal(o, wave) for o in outs)
    assert torch.equal(outs[5], aug(wave, np.random.default_rng([0, 0, 5])))
    assert augment.Augmenter(str(tmp_path / "musan"), p=0.0)(wave, np.random.default_rng(0)) is wave
    # Reverb: aligned on the direct path, power kept.
    y = augment.Augmenter.reverb(wave, torch.from_numpy(rir))
    assert torch.allclose(y.pow(2).mean(), wave.pow(2).mean(), rtol=1e-4)
    assert torch.corrcoef(torch.stack([y, wave]))[0, 1] > 0.8
    with pytest.raises(FileNotFoundError, match="nowhere"):
        augment.Augmenter(str(tmp_path / "nowhere"))


@pytest.mark.parametrize("name, subtype, channels", [
    ("a.wav", "PCM_16", 1), ("b.wav", "PCM_16", 2), ("c.flac", "PCM_16", 1),
    ("d.wav", "PCM_24", 1), ("e.wav", "FLOAT", 2)])
def test_reads_equal_soundfiles_own_float_conversion(tmp_path, name, subtype, channels):
    """read_samples reads 16-bit files as int16 and scales them itself: the values must be
    the ones soundfile's float32 read gives, for every format and channel count."""
    path = str(tmp_path / name)
    x = np.random.default_rng(0).uniform(-0.9, 0.9, (5000, channels)).astype(np.float32)
    sf.write(path, x, SR, subtype=subtype)
    ref = sf.read(path, dtype="float32", always_2d=True)[0].mean(axis=1)
    got, sr = data.read_samples(path)
    assert sr == SR and got.dtype == np.float32 and np.array_equal(got, ref)
    assert np.array_equal(data.read_samples(path, 1234, 3000)[0], ref[1234:3000])
    # The random window: the slice of the whole file at the start drawn from the rng.
    w = data.read_random_window(path, 2000, np.random.default_rng(5))
    start = int(np.random.default_rng(5).integers(0, 5000 - 2000 + 1))
    assert np.array_equal(w.numpy(), ref[start:start + 2000])


def wav_variant(path, kind, x):
    """16-bit WAVs as other writers make them: WAVE_FORMAT_EXTENSIBLE, an odd-sized chunk
    (padded to even) before the samples, and a file cut short of what its header says."""
    sf.write(path, x, SR, subtype="PCM_16", format="WAVEX" if kind == "extensible" else "WAV")
    with open(path, "rb") as fh:
        b = fh.read()
    if kind == "extra chunk":
        at = b.index(b"data")
        b = b[:at] + b"JUNK" + (5).to_bytes(4, "little") + b"12345\0" + b[at:]
        b = b[:4] + (len(b) - 8).to_bytes(4, "little") + b[8:]
    if kind == "truncated":
        b = b[:-1000]
    with open(path, "wb") as fh:
        fh.write(b)


@pytest.mark.parametrize("kind", ["plain", "extensible", "extra chunk", "truncated"])
@pytest.mark.parametrize("channels", [1, 2])
def test_wav_layout_points_at_the_samples_soundfile_reads(tmp_path, kind, channels):
    """The soundfile-free path of read_random_window: the header parser finds the samples
    where libsndfile finds them (oracle: soundfile's int16 read), the window equals
    soundfile's, and it declines every file it cannot read exactly."""
    path = str(tmp_path / "a.wav")
    x = np.random.default_rng(1).uniform(-0.9, 0.9, (5000, channels)).astype(np.float32)
    wav_variant(path, kind, x)
    with open(path, "rb") as fh:
        raw = fh.read()
    layout = data.pcm16_wav_layout(raw[:data.WAV_HEADER_BYTES], len(raw))
    if kind == "truncated":                       # header: 5000 frames; fewer are there
        assert layout is None
        return
    ints = sf.read(path, dtype="int16", always_2d=True)[0]
    offset, frames, ch, rate = layout
    assert (frames, ch, rate) == (5000, channels, SR)
    on_disk = np.frombuffer(raw[offset:offset + 2 * frames * ch], "<i2").reshape(frames, ch)
    assert np.array_equal(on_disk, ints)
    ref = sf.read(path, dtype="float32", always_2d=True)[0].mean(axis=1)
    for seed in range(5):
        rng, ref_rng = np.random.default_rng(seed), np.random.default_rng(seed)
        start = int(ref_rng.integers(0, 5000 - 2000 + 1))
        assert np.array_equal(data.read_random_window(path, 2000, rng).numpy(),
                              ref[start:start + 2000])
        assert rng.random() == ref_rng.random()   # one draw, as the soundfile path makes


@pytest.mark.parametrize("name, subtype", [("c.flac", "PCM_16"), ("d.wav", "PCM_24"),
                                           ("e.wav", "FLOAT"), ("f.wav", "PCM_U8")])
def test_wav_layout_declines_what_it_does_not_read(tmp_path, name, subtype):
    path = str(tmp_path / name)
    sf.write(path, np.zeros((100, 1), np.float32), SR, subtype=subtype)
    with open(path, "rb") as fh:
        raw = fh.read()
    assert data.pcm16_wav_layout(raw, len(raw)) is None


def test_fft_len_is_the_next_5_smooth_number():
    def smooth(m):
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        return m == 1
    for n in [1, 2, 7, 11, 97, 1000, 48000, 55999, 56251, 65537] + list(range(60000, 60100)):
        m = augment._fft_len(n)
        assert m >= n and smooth(m) and not any(smooth(k) for k in range(n, m)), n


# The augmentation's fixed parameters, written out here so that a change to them fails.
SNR_DB = {"noise": (0, 15), "speech": (13, 20), "music": (5, 15)}
BABBLE = (3, 7)


def whole_file_reference(aug, wave, rng):
    """The oracle for Augmenter: whole files read by soundfile in float64, the window cut
    from them, np.convolve for the reverb; the random draws in the order Augmenter.__call__
    documents. Returns (kind or None, output as float64 numpy)."""
    n, w = len(wave), wave.numpy().astype(np.float64)
    if rng.random() >= aug.p:
        return None, w
    kind = aug.kinds[rng.integers(len(aug.kinds))]
    read = lambda path: sf.read(path, always_2d=True)[0].mean(axis=1)      # (S,) float64
    if kind == "reverb":
        rir = read(aug.rirs[rng.integers(len(aug.rirs))])
        rir = rir[np.argmax(np.abs(rir)):]                  # aligned on the direct path
        rir = rir / (np.linalg.norm(rir) + 1e-8)
        y = np.convolve(w, rir)[:n]
        return kind, y * np.sqrt(np.mean(w ** 2) / (np.mean(y ** 2) + 1e-8))
    files = aug.noises[kind]
    count = rng.integers(BABBLE[0], BABBLE[1] + 1) if kind == "speech" else 1
    noise = np.zeros(n)
    for _ in range(count):
        x = read(files[rng.integers(len(files))])
        if len(x) < n:                                      # a short source is tiled
            x = np.tile(x, n // len(x) + 1)
        start = rng.integers(0, len(x) - n + 1)
        noise += x[start:start + n]
    snr = rng.uniform(*SNR_DB[kind])
    p_s, p_n = np.mean(w ** 2) + 1e-8, np.mean(noise ** 2) + 1e-8
    return kind, w + noise * np.sqrt(p_s / (p_n * 10 ** (snr / 10)))


def musan_tree(root):
    """Sources shorter and longer than a 1-s crop, 16-bit wav and flac, stereo, and RIRs."""
    write(os.path.join(root, "musan", "noise", "short.wav"), 0.3, seed=1)     # tiled
    write(os.path.join(root, "musan", "noise", "long.flac"), 2.5, seed=2)
    write(os.path.join(root, "musan", "noise", "stereo.wav"), 1.7, channels=2, seed=3)
    write(os.path.join(root, "musan", "music", "m.wav"), 4.0, seed=4)
    write(os.path.join(root, "musan", "music", "exact.wav"), 1.0, seed=5)   # = the crop
    for k in range(4):
        write(os.path.join(root, "musan", "speech", f"s{k}.wav"), 1.5 + k, seed=10 + k)
    for k in range(3):
        rir = np.random.default_rng(20 + k).uniform(-1, 1, 4000) * np.exp(-np.arange(4000) / 600)
        rir[200 * (k + 1)] = 2.0                                            # the direct path
        os.makedirs(os.path.join(root, "rirs"), exist_ok=True)
        sf.write(os.path.join(root, "rirs", f"r{k}.wav"), rir.astype(np.float32), SR)
    return os.path.join(root, "musan"), os.path.join(root, "rirs")


def test_windowed_augmentation_equals_whole_file_reference(tmp_path):
    musan, rirs = musan_tree(str(tmp_path))
    aug = augment.Augmenter(musan, rirs, p=0.8)
    wave = torch.from_numpy(write(str(tmp_path / "s.wav"), 1.0, seed=9)[:, 0])
    kinds = []
    for i in range(60):
        rng, ref_rng = np.random.default_rng([0, 0, i]), np.random.default_rng([0, 0, i])
        out = aug(wave, rng)
        kind, ref = whole_file_reference(aug, wave, ref_rng)
        kinds.append(kind)
        assert out.dtype == torch.float32 and out.shape == wave.shape
        np.testing.assert_allclose(out.numpy(), ref, rtol=1e-6, atol=2e-6, err_msg=kind)
        assert rng.random() == ref_rng.random()             # the same number of draws
    assert set(kinds) == {None, "noise", "speech", "music", "reverb"}


def test_reverb_on_the_device_equals_the_workers(tmp_path):
    """reverb_later: the loader returns the RIR and reverberate convolves the batch. The
    crops must be the loader's own, noise and all, with the reverb to float precision."""
    musan, rirs = musan_tree(str(tmp_path))
    items = [(str(tmp_path / "spk" / f"{k}.wav"), k) for k in range(24)]
    for k, (path, _) in enumerate(items):
        write(path, 1.2 + 0.2 * k, seed=40 + k)
    sets = [data.TrainCrops(items, 1.0, seed=3, augment=augment.Augmenter(musan, rirs, p=0.8),
                            reverb_later=later) for later in (False, True)]
    for ds in sets:
        ds.set_epoch(2)
    batches = [data.collate_pad([ds[i] for i in range(len(items))]) for ds in sets]
    (want, _, labels), (clean, _, labels_later, rir, rir_len) = batches
    assert torch.equal(labels, labels_later) and rir.shape[0] == len(items)
    got = augment.reverberate(clean, rir, rir_len)
    has = rir_len > 0
    assert 3 <= int(has.sum()) < len(items) - 3                      # both kinds present
    assert torch.equal(got[~has], want[~has])                        # untouched: exactly
    assert not torch.allclose(clean[has], want[has], atol=1e-3)      # the reverb did something
    torch.testing.assert_close(got[has], want[has], rtol=0, atol=2e-6)
    # Without RIRs in the folder nothing is deferred: the items stay (wave, label).
    assert len(data.TrainCrops(items, 1.0, augment=augment.Augmenter(musan, p=0.8),
                               reverb_later=True)[0]) == 2


@pytest.mark.parametrize("kind", sorted(SNR_DB))
def test_achieved_snr_is_in_the_kinds_range(tmp_path, kind):
    musan, _ = musan_tree(str(tmp_path))
    for other in set(SNR_DB) - {kind}:                      # this kind alone
        shutil.rmtree(os.path.join(musan, other))
    aug = augment.Augmenter(musan, p=1.0)
    wave = torch.from_numpy(write(str(tmp_path / "s.wav"), 1.0, seed=9)[:, 0])
    lo, hi = SNR_DB[kind]
    snrs = []
    for i in range(40):
        noise = aug(wave, np.random.default_rng([1, 0, i])) - wave
        snrs.append(10 * np.log10(wave.pow(2).mean().item() / noise.pow(2).mean().item()))
    assert lo - 0.01 <= min(snrs) and max(snrs) <= hi + 0.01
    assert min(snrs) < lo + 0.3 * (hi - lo) and max(snrs) > hi - 0.3 * (hi - lo)   # spread out


def test_augmented_crops_depend_only_on_seed_epoch_index(tmp_path):
    musan, rirs = musan_tree(str(tmp_path))
    for k in (1, 2):            # one RIR: the reverb crops after the first use it cached
        os.remove(os.path.join(rirs, f"r{k}.wav"))
    items = [(str(tmp_path / "spk" / f"{k}.wav"), k) for k in range(16)]
    for k, (path, _) in enumerate(items):
        write(path, 1.2 + 0.3 * k, seed=30 + k)

    def crops():
        return data.TrainCrops(items, 1.0, seed=2, augment=augment.Augmenter(musan, rirs, p=0.6))

    a = crops()
    a.set_epoch(3)
    want = [a[i][0] for i in range(len(items))]
    b = crops()                          # fresh instance: other indices and epochs first
    b.set_epoch(0)
    _ = [b[i] for i in (4, 1, 4, 9)]
    b.set_epoch(3)
    for i in reversed(range(len(items))):
        assert torch.equal(b[i][0], want[i]), i
    # DataLoader workers fork the object (and fill their own RIR caches): same crops.
    c = crops()
    c.set_epoch(3)
    loader = torch.utils.data.DataLoader(c, batch_size=3, num_workers=2,
                                         collate_fn=data.collate_pad)
    got = [w[:n] for waves, lengths, _ in loader for w, n in zip(waves, lengths)]
    assert len(got) == len(want) and all(torch.equal(g, w) for g, w in zip(got, want))
    # Else the test proves little: some crops are augmented, two or more reverberated.
    plain = data.TrainCrops(items, 1.0, seed=2)
    plain.set_epoch(3)
    rir = data.load_audio(os.path.join(rirs, "r0.wav"))
    reverbed = sum(torch.allclose(augment.Augmenter.reverb(plain[i][0], rir), want[i], atol=1e-6)
                   for i in range(len(items)))
    augmented = sum(not torch.equal(plain[i][0], want[i]) for i in range(len(items)))
    assert reverbed >= 2 and augmented > reverbed


def test_eval_utterances_and_collate(tmp_path):
    paths = [str(tmp_path / f"{i}.wav") for i in range(3)]
    for i, p in enumerate(paths):
        write(p, 0.1 * (i + 1))
    ds = data.EvalUtterances(paths)
    waves, lengths, idx = data.collate_pad([ds[2], ds[0], ds[1]])
    assert waves.shape == (3, 4800) and lengths.tolist() == [4800, 1600, 3200]
    assert lengths.dtype == torch.long and idx.tolist() == [2, 0, 1]
    assert torch.equal(waves[1, :1600], ds[0][0]) and not waves[1, 1600:].any()


# ----------------------------------------------------------------------------
# toy corpora


def test_toy_generation_is_deterministic(tmp_path):
    assert toy_corpus.SR == data.SAMPLE_RATE
    for make in (toy_corpus.make_toy_sv, toy_corpus.make_toy_cm,
                 toy_corpus.make_toy_unlabelled):
        a, b, c = (str(tmp_path / f"{make.__name__}_{k}") for k in "abc")
        make(a, seed=5, size="tiny")
        make(b, seed=5, size="tiny")
        make(c, seed=6, size="tiny")
        files = sorted(os.path.relpath(os.path.join(d, f), a) for d, _, fs in os.walk(a) for f in fs
                       if f != toy_corpus.MARKER)
        assert len(files) >= 6
        same, diff, err = filecmp.cmpfiles(a, b, files, shallow=False)
        assert same == files, (diff, err)
        same, _, _ = filecmp.cmpfiles(a, c, files, shallow=False)
        assert not [f for f in same if f.endswith((".wav", ".flac"))]


def _stub_synthesis(monkeypatch):
    """Replace the audio work of the toy generators by near-silence, so that the layout
    and trial lists of the full-size corpora can be checked in a second."""
    monkeypatch.setattr(toy_corpus, "synthesize",
                        lambda spk, rng, seconds: (np.full(int(seconds * SR), 0.1), None, None))
    monkeypatch.setattr(toy_corpus, "apply_channel",
                        lambda x, ch, rng: x[:SR // 2].astype(np.float32))
    monkeypatch.setattr(toy_corpus.sf, "write", lambda path, *a, **k: open(path, "w").close())


def test_default_sv_corpus_can_tell_systems_apart(tmp_path, monkeypatch):
    """The default toy SV test side: 20+ test speakers and enough balanced trials that one
    trial moves the EER by at most 0.1 points; the trial list is the same on every build."""
    _stub_synthesis(monkeypatch)
    cfg = toy_corpus.SIZES["sv"]["default"]
    assert cfg["test_spk"] >= 20 and cfg["trials"] >= 2000
    lists = []
    for k in "ab":
        info = toy_corpus.make_toy_sv(str(tmp_path / k), seed=0)
        counts = info["counts"]
        assert counts["trials"] == cfg["trials"] and counts["test_speakers"] == cfg["test_spk"]
        lists.append((tmp_path / k / "veri_test2.txt").read_text())
    assert lists[0] == lists[1]
    trials = [line.split() for line in lists[0].splitlines()]
    targets = sum(t[0] == "1" for t in trials)
    assert targets * 2 == len(trials) and 100 / targets <= 0.1       # points of EER per trial
    assert len({t[1] for t in trials} | {t[2] for t in trials}) > 200


def test_default_cm_corpus_layout(tmp_path, monkeypatch):
    """Two unseen attacks and codecs in eval only; one eval trial moves the EER by <= 0.5 points."""
    _stub_synthesis(monkeypatch)
    monkeypatch.setattr(toy_corpus, "vocode", lambda x, f0, vg, attack, rng: x)
    toy_corpus.make_toy_cm(str(tmp_path / "cm"), seed=0)
    spec = data.load_asvspoof5(str(tmp_path / "cm"))
    assert spec.unseen_attacks == ["A03", "A05"]
    n_bona = sum(label for _, label in spec.eval_items)
    assert 100 / n_bona <= 0.5
    codecs = {split: {line.split()[3]
                      for line in (tmp_path / "cm" / proto).read_text().splitlines()}
              for split, (_, _, proto) in toy_corpus.CM_SPLITS.items()}
    assert codecs["train"] == codecs["dev"] == {"-"} and codecs["eval"] == {"-", *toy_corpus.CODECS}


def same_file(path, samples, scratch):
    """Would writing `samples` as the corpus does give exactly the bytes at `path`?"""
    scratch = scratch + os.path.splitext(path)[1]
    sf.write(scratch, samples, SR, subtype="PCM_16")
    return filecmp.cmp(path, scratch, shallow=False)


def sv_files_again(root, scratch):
    """(files checked, files that differ): every 7th SV file made again alone, last first."""
    cfg = toy_corpus.SIZES["sv"]["default"]
    keys = [(role, i, s, u) for role, speakers in (("train", cfg["train_spk"]),
                                                   ("test", cfg["test_spk"]))
            for i in range(speakers) for s in range(cfg[f"{role}_sess"])
            for u in range(cfg[f"{role}_utt"])]
    listed = {os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs
              if f.endswith(".wav")}

    def rel_path(role, i, s, u):
        spk_id = f"id{(10001 if role == 'train' else 10270) + i}"
        return f"wav/{spk_id}/{toy_corpus.sv_session(0, role, i, s)[0]}/{u + 1:05d}.wav"
    assert listed == {rel_path(*key) for key in keys}          # every file where it belongs
    sample = keys[::7][::-1]
    bad = [rel_path(*key) for key in sample
           if not same_file(os.path.join(root, rel_path(*key)),
                            toy_corpus.sv_file(0, cfg, *key), scratch)]
    return len(sample), bad


def cm_files_again(root, scratch):
    """(files checked, files that differ): every 9th CM file of each split, and the first of
    every (attack, codec) pair, made again alone, last first; the protocols' speaker and
    attack columns against cm_jobs for every file."""
    cfg = toy_corpus.SIZES["cm"]["default"]
    chosen = []
    for r, (split, (prefix, folder, proto)) in enumerate(toy_corpus.CM_SPLITS.items()):
        rows = [line.split() for line in open(os.path.join(root, proto))]
        jobs = toy_corpus.cm_jobs(0, cfg, r, split)
        assert [(row[0], row[7]) for row in rows] == [(f"{prefix}_{i:04d}", attack)
                                                      for _, i, attack in jobs]
        seen = set()
        for num, (row, (j, i, attack)) in enumerate(zip(rows, jobs)):
            if num % 9 == 0 or (attack, row[3]) not in seen:
                chosen.append((os.path.join(root, folder, row[1] + ".flac"), r, split, j, i,
                               attack, row[3]))
            seen.add((attack, row[3]))
    bad = []
    for path, r, split, j, i, attack, codec in chosen[::-1]:
        y, made_codec = toy_corpus.cm_file(0, cfg, r, split, j, i, attack)
        if made_codec != codec or not same_file(path, y, scratch):
            bad.append(path)
    assert {(attack, codec) for *_, attack, codec in chosen} >= {
        ("A01", "-"), ("A05", "-"), ("bonafide", "narrowband"), ("bonafide", "transform")}
    return len(chosen), bad


@pytest.mark.slow
@pytest.mark.parametrize("corpus", ["sv", "cm"])
def test_default_toy_corpora_are_deterministic(tmp_path, corpus):
    """A full-size corpus made once, and a sample of its files (every attack and codec
    among them) made again one at a time, in reverse order: each file is a function of the
    seed and its own indices only, not of the files made before it, so a corpus made twice
    is the same byte for byte (about 35 s for SV and 80 s for CM on one core; the tiny
    corpora are made twice whole in test_toy_generation_is_deterministic). In one process,
    not against a cache made by another: the Griffin-Lim vocoder (attack A01) runs float32
    FFTs, whose last bit depends on how MKL was set up (OMP_NUM_THREADS or MKL_NUM_THREADS
    set to 1, or not), and 3 of the 1,100 CM files then differ by one least significant
    bit (docs/testing.md)."""
    root = str(tmp_path / corpus)
    (toy_corpus.make_toy_sv if corpus == "sv" else toy_corpus.make_toy_cm)(root, seed=0)
    checked, bad = (sv_files_again if corpus == "sv" else cm_files_again)(
        root, str(tmp_path / "scratch"))
    assert checked > 100 and bad == []


def test_codecs_keep_length_and_level():
    rng = np.random.default_rng(0)
    y = 0.3 * np.sin(2 * np.pi * 440 * np.arange(SR) / SR) + 0.05 * rng.normal(0, 1, SR)
    y = y.astype(np.float32)
    for codec in toy_corpus.CODECS:
        out = toy_corpus.apply_codec(y, codec, np.random.default_rng(1))
        assert out.shape == y.shape and out.dtype == np.float32
        assert abs(np.abs(out).max() - np.abs(y).max()) < 1e-3
        assert np.corrcoef(out, y)[0, 1] > 0.8                       # lossy, but the same signal
    spectrum = np.abs(np.fft.rfft(toy_corpus.apply_codec(y, "narrowband", rng)))
    assert spectrum[5000:].sum() < 0.02 * spectrum.sum()           # nothing above 4 kHz (1 Hz bins)


def test_new_attacks_keep_the_bona_fide_chain():
    """A04 keeps the signal below its cut-off; A05 keeps the source, so the two stay close
    to the bona fide waveform, unlike the vocoders."""
    spk = toy_corpus.make_speaker(np.random.default_rng(3))
    x, f0, vg = toy_corpus.synthesize(spk, np.random.default_rng(4), 1.0)
    X = np.abs(np.fft.rfft(x))
    for attack in ("A01", "A02", "A03", "A04", "A05"):
        y = toy_corpus.vocode(x, f0, vg, attack, np.random.default_rng(5))
        assert y.shape == x.shape and np.isfinite(y).all()
    y = toy_corpus.vocode(x, f0, vg, "A04", np.random.default_rng(5))
    low = np.fft.rfftfreq(len(x), 1 / SR) < 450
    assert np.corrcoef(np.abs(np.fft.rfft(y))[low], X[low])[0, 1] > 0.9


def test_toy_sets_parse_with_real_loaders(tmp_path):
    sv = data.prepare_data("toy", cache_dir=str(tmp_path), seed=1, toy_size="tiny")
    cfg = toy_corpus.SIZES["sv"]["tiny"]
    assert sv.num_classes == cfg["train_spk"] and sv.eval_root.endswith("wav")
    trials = sv.sv_trials("vox1_o")
    assert sum(y for y, _, _ in trials) * 2 == len(trials) > 0      # balanced
    test_spk = {p.split(os.sep)[-3] for _, a, b in trials for p in (a, b)}
    assert not test_spk & set(sv.class_names)
    for y, a, b in trials:                                   # targets: other session
        assert (a.split(os.sep)[-3] == b.split(os.sep)[-3]) == bool(y)
        assert a.split(os.sep)[-2] != b.split(os.sep)[-2]
    x = data.load_audio(sv.train_items[0][0])
    lo, hi = cfg["dur"]
    assert lo * SR <= len(x) <= hi * SR and 0.05 < x.abs().max() <= 1

    cm = data.prepare_data("toy_spoof", cache_dir=str(tmp_path), seed=1, toy_size="tiny")
    assert cm.unseen_attacks == ["A03", "A05"] and cm.eval_names() == ["dev", "eval", "eval_unseen"]
    assert {a for a in cm.eval_attacks} == {"bonafide", "A01", "A04", "A03", "A05"}
    n_bona = sum(l for _, l in cm.train_items)
    assert 0 < n_bona < len(cm.train_items)


def test_interrupted_toy_generation_is_redone(tmp_path, monkeypatch):
    root = str(tmp_path / "toy")
    real, calls = toy_corpus.synthesize, []

    def dying(*a, **k):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt                      # "killed" mid-way
        return real(*a, **k)

    monkeypatch.setattr(toy_corpus, "synthesize", dying)
    with pytest.raises(KeyboardInterrupt):
        toy_corpus.make_toy_sv(root, 0, "tiny")
    assert not os.path.exists(root)                      # nothing half-written in place
    monkeypatch.setattr(toy_corpus, "synthesize", real)
    info = toy_corpus.make_toy_sv(root, 0, "tiny")
    assert info["counts"]["files"] == 24 and os.path.isfile(os.path.join(root, "veri_test2.txt"))
    assert not [d for d in os.listdir(tmp_path) if ".tmp-" in d]
    # A folder that is not ours is never deleted.
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep")
    with pytest.raises(RuntimeError, match="no complete toy corpus"):
        toy_corpus.make_toy_sv(str(other), 0, "tiny")
    # A corpus from an older synthesizer version is rebuilt.
    monkeypatch.setattr(toy_corpus, "VERSION", toy_corpus.VERSION + 1)
    before = os.path.getmtime(os.path.join(root, toy_corpus.MARKER))
    toy_corpus.make_toy_sv(root, 0, "tiny")
    assert os.path.getmtime(os.path.join(root, toy_corpus.MARKER)) >= before
    with open(os.path.join(root, toy_corpus.MARKER)) as fh:
        assert '"version": %d' % (toy_corpus.VERSION) in fh.read()


# ----------------------------------------------------------------------------
# every file checked before training (issue 9)
def plant_bad_files(paths):
    """One file of random bytes, one 0.1-s file and one 8-kHz file, in place of three
    files of a tree -> the three paths."""
    corrupt, short, narrow = paths
    with open(corrupt, "wb") as fh:
        fh.write(np.random.default_rng(0).bytes(3000))
    write(short, 0.1)
    write(narrow, 1.0, sr=8000)
    return corrupt, short, narrow


def test_check_files_names_bad_files_in_a_vox1_tree(tmp_path, capsys):
    vox1_tree(str(tmp_path / "vox1"))
    spec = data.load_vox1(str(tmp_path / "vox1"))
    wav = tmp_path / "vox1" / "wav"
    corrupt, short, narrow = plant_bad_files([str(wav / "id10001/vidA/00001.wav"),        # training
                                              str(wav / "id10270/vidA/00001.wav"),        # a trial
                                              str(wav / "id10002/vidB/00002.wav")])       # training
    with pytest.raises(ValueError) as e:
        data.check_files(spec, 0.5, cache_dir=str(tmp_path / "cache"))
    msg = str(e.value)
    assert corrupt in msg and short in msg and "--skip-bad-files" in msg
    assert "shorter than 0.5 s" in msg and narrow not in msg          # 8 kHz is only resampled
    kept, summary = data.check_files(spec, 0.5, cache_dir=str(tmp_path / "cache"),
                                     skip_bad_files=True)
    out = capsys.readouterr().out
    assert "1 file(s) at 8000 Hz" in out and summary["resampled"] == {"8000": 1}
    assert sorted(summary["skipped"]) == sorted([corrupt, short])
    assert (corrupt not in {p for p, _ in kept.train_items}
            and narrow in {p for p, _ in kept.train_items})
    # the trials that name the short file are gone, the rest keep their line numbers
    assert len(kept.trials["vox1_o"]) == 1 and kept.trials["vox1_o"].line_numbers == [3]


def test_check_files_error_also_names_what_it_would_leave_out(tmp_path):
    """One message reports everything the check found: an unreadable file stops the run,
    and the same message names the too-short training file that would be left out."""
    vox1_tree(str(tmp_path / "vox1"))
    spec = data.load_vox1(str(tmp_path / "vox1"))
    wav = tmp_path / "vox1" / "wav"
    corrupt, short_train, _ = plant_bad_files([str(wav / "id10001/vidA/00001.wav"),
                                               str(wav / "id10002/vidB/00002.wav"),
                                               str(wav / "id10001/vidA/00002.wav")])
    with pytest.raises(ValueError) as e:
        data.check_files(spec, 0.5, cache_dir=str(tmp_path / "cache"))
    msg = str(e.value)
    assert corrupt in msg and short_train in msg
    assert "training file(s) shorter than 0.5 s are left out" in msg


def test_check_files_in_an_asvspoof5_tree_and_the_cache(tmp_path, monkeypatch):
    asv5_tree(str(tmp_path / "asv5"))
    for k, path in enumerate(sorted((tmp_path / "asv5").glob("flac_*/*.flac"))):
        write(str(path), 1.0, seed=k)                                  # the tree's files are 0.2 s
    write(str(tmp_path / "asv5/flac_T/T_0000000002.flac"), 0.3)        # a short training file
    spec = data.load_asvspoof5(str(tmp_path / "asv5"))
    corrupt, short, narrow = plant_bad_files([str(tmp_path / "asv5/flac_D/D_0000000001.flac"),
                                              str(tmp_path / "asv5/flac_E_eval/E_0000000002.flac"),
                                              str(tmp_path / "asv5/flac_T/T_0000000001.flac")])
    with pytest.raises(ValueError) as e:
        data.check_files(spec, 0.5, cache_dir=str(tmp_path / "cache"))
    assert corrupt in str(e.value) and short in str(e.value)
    kept, summary = data.check_files(spec, 0.5, cache_dir=str(tmp_path / "cache"),
                                     skip_bad_files=True)
    assert [p for p, _ in kept.dev_items] == [p for p, _ in spec.dev_items if p != corrupt]
    assert (short not in [p for p, _ in kept.eval_items]
            and len(kept.eval_attacks) == len(kept.eval_items))
    # training files under 0.5 s are left out by rule: only the 1-s file and the 8-kHz one remain
    assert sorted(p for p, _ in kept.train_items) == sorted(
        [str(tmp_path / "asv5/flac_T/T_0000000000.flac"), narrow])
    # A second check reads no header again; a changed file is read again.
    calls = []
    monkeypatch.setattr(data, "_probe", lambda p: calls.append(p) or (0, 0, 16000, 16000, ""))
    data.check_files(spec, 0.5, cache_dir=str(tmp_path / "cache"), skip_bad_files=True)
    assert calls == []
    write(narrow, 2.0)
    data.check_files(spec, 0.5, cache_dir=str(tmp_path / "cache"), skip_bad_files=True)
    assert calls == [narrow]


def test_check_files_finds_a_truncated_wav(tmp_path):
    vox1_tree(str(tmp_path))
    path = str(tmp_path / "wav/id10001/vidA/00001.wav")
    write(path, 2.0)
    with open(path, "r+b") as fh:                          # the header still says 2 s
        fh.truncate(os.path.getsize(path) // 3)
    size, _, sr, frames, problem = data._probe(path)
    assert problem == "" and sr == SR and frames < SR       # read in full: what is really there
    spec = data.load_vox1(str(tmp_path))
    kept, summary = data.check_files(spec, 3.0, cache_dir=str(tmp_path / "cache"))
    assert summary["tiled_training"] >= 1


def test_unlabelled_voices_are_not_the_sv_voices(tmp_path):
    """pretrain.py's corpus draws its speakers from streams of its own."""
    unl, sv = tmp_path / "unl", tmp_path / "sv"
    toy_corpus.make_toy_unlabelled(unl, seed=0, size="tiny")
    toy_corpus.make_toy_sv(sv, seed=0, size="tiny")
    assert len(list((unl / "wav").iterdir())) == toy_corpus.SIZES["unlabelled"]["tiny"]["speakers"]
    voices = lambda root: [sf.read(p)[0][:400].tobytes() for p in data.list_audio_files(root)]
    assert not set(voices(unl)) & set(voices(sv))


def test_first_speakers_subset(tmp_path):
    spec = data.prepare_data("toy", cache_dir=str(tmp_path), toy_size="tiny")
    small = spec.first_speakers(2)
    assert small.num_classes == 2 and small.class_names == spec.class_names[:2]
    assert {y for _, y in small.train_items} == {0, 1}
    assert len(small.train_items) == sum(1 for _, y in spec.train_items if y < 2)
    assert small.trials == spec.trials                              # evaluation unchanged
    with pytest.raises(ValueError, match="choose from 2 to 3"):
        spec.first_speakers(4)
    cm = data.prepare_data("toy_spoof", cache_dir=str(tmp_path), toy_size="tiny")
    with pytest.raises(ValueError, match="speaker verification only"):
        cm.first_speakers(2)
