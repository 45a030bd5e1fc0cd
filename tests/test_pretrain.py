"""Tests for pretrain.py: the MFCC k-means targets (on the model's frame grid,
deterministic, each frame labelled with its nearest centroid), span masking, the loss
that counts masked frames only, utterance mixing, the unilm checkpoint it writes (key
names against an independent map of transformers' WavLM, loaded by load_pretrained with
the same outputs), a smoke run, resuming after an interruption, and bad input."""

import dataclasses
import json
import os
import re
import signal

import numpy as np
import pytest
import torch
import transformers

import data
import pretrain
import toy_corpus
from pretrained import load_pretrained, unilm_checkpoint
from test_wavlm_oracles import HF_TO_UNILM
from checkpoints import read_checkpoint
from metrics import compute_eer
from trials import TrialList
from wavlm_masked import MaskedWavLM, WavLMConfig, frame_lengths


def test_mfcc_frames_fall_on_the_model_frame_grid():
    model = MaskedWavLM(WavLMConfig.tiny()).eval()
    for samples in (400, 719, 720, 16000, 16321):
        wave = torch.randn(samples)
        frames = pretrain.mfcc_frames(wave)
        with torch.no_grad():
            hidden, _ = model(wave[None])
        assert frames.shape == (hidden[0].shape[1], 39)
        assert frames.shape[0] == frame_lengths(torch.tensor([samples]),
                                                WavLMConfig.tiny().conv_layers)[0]
        assert torch.allclose(frames.mean(0), torch.zeros(39), atol=1e-4)   # mean removed


def test_kmeans_finds_separated_blobs_and_is_deterministic():
    g = torch.Generator().manual_seed(0)
    means = torch.randn(5, 3, generator=g) * 20
    x = torch.cat([m + torch.randn(200, 3, generator=g) for m in means])
    a, b = pretrain.kmeans(x, 5, seed=3), pretrain.kmeans(x, 5, seed=3)
    assert torch.equal(a, b)
    # each true mean has one centroid next to it
    dist = torch.cdist(means, a)
    assert (dist.min(1).values < 0.5).all() and len(set(dist.argmin(1).tolist())) == 5


def test_labels_are_the_nearest_centroid():
    g = torch.Generator().manual_seed(1)
    feats, centroids, scale = (torch.randn(50, 39, generator=g), torch.randn(7, 39, generator=g),
                               torch.rand(39, generator=g) + 0.5)
    labels = pretrain.assign_clusters(feats, centroids, scale)
    for t in range(50):                    # brute force: every centroid's distance
        d = [((feats[t] / scale - c) ** 2).sum().item() for c in centroids]
        assert labels[t].item() == int(np.argmin(d))


def test_targets_of_the_toy_corpus_are_deterministic(tmp_path):
    root = tmp_path / "unl"
    toy_corpus.make_toy_unlabelled(root, seed=0, size="tiny")
    paths = pretrain.list_audio(str(root))
    runs = []
    for _ in range(2):
        feats = [pretrain.mfcc_frames(pretrain.data.load_audio(p)) for p in paths]
        targets = pretrain.fit_targets(feats, 8, 10_000, seed=0)
        runs.append((targets.centroids, [targets.labels(f) for f in feats]))
    assert torch.equal(runs[0][0], runs[1][0])
    assert all(torch.equal(a, b) for a, b in zip(runs[0][1], runs[1][1]))
    assert len(torch.unique(torch.cat(runs[0][1]))) > 4          # the clusters are used


def test_span_mask_spans_and_share():
    rng = np.random.default_rng(0)
    masks = torch.stack([pretrain.span_mask(100, 0.8, 10, rng) for _ in range(400)])
    share = masks.float().mean().item()
    # 8 spans of 10 at random starts among 91 cover about 1 - (1 - 10/91)^8 of 100 frames
    assert 0.5 < share < 0.65
    for row in masks[:50]:                 # every masked run is at least one span long
        runs = [len(r) for r in "".join("1" if v else "0" for v in row.tolist()).split("0") if r]
        assert min(runs) >= 10


def test_loss_counts_masked_frames_only():
    torch.manual_seed(0)
    logits, targets = torch.randn(2, 30, 8), torch.randint(0, 8, (2, 30))
    mask = torch.zeros(2, 30, dtype=torch.bool)
    mask[0, 3:13], mask[1, 20:30] = True, True
    loss = pretrain.masked_prediction_loss(logits, targets, mask)
    brute = np.mean([-torch.log_softmax(logits[b, t], -1)[targets[b, t]].item()
                     for b in range(2) for t in range(30) if mask[b, t]])
    assert abs(loss.item() - brute) < 1e-5
    changed = logits.clone()
    changed[~mask] = torch.randn(int((~mask).sum()), 8) * 10         # unmasked frames: no effect
    same = pretrain.masked_prediction_loss(changed, targets, mask).item()
    assert same == pytest.approx(loss.item())
    changed[0, 5, targets[0, 5]] += 5.0                               # a masked frame: an effect
    other = pretrain.masked_prediction_loss(changed, targets, mask).item()
    assert other != pytest.approx(loss.item())


def test_utterance_mixing():
    torch.manual_seed(0)
    waves = torch.randn(4, 8000)
    rng = np.random.default_rng(0)
    assert torch.equal(pretrain.mix_utterances(waves, 0.0, rng), waves)
    mixed = pretrain.mix_utterances(waves, 1.0, rng)
    for i in range(4):
        added = mixed[i] - waves[i]
        where = added.abs() > 0
        span = where.nonzero()
        assert 0 < span[-1] - span[0] + 1 < 8000 // 2                 # under half the crop
        ratio_db = 10 * torch.log10(waves[i].pow(2).mean() / added[where].pow(2).mean())
        assert -5.01 <= ratio_db <= 5.01


def test_unilm_checkpoint_has_the_reference_key_names(tmp_path):
    """Our export against transformers' WavLM of the same shape, renamed to unilm by the
    oracle tests' independent map: the same keys, the same shapes, and mask_emb."""
    c = WavLMConfig.tiny()
    ref = transformers.WavLMModel(transformers.WavLMConfig(
        hidden_size=c.hidden_size, num_hidden_layers=c.num_layers,
        num_attention_heads=c.num_heads, intermediate_size=c.ffn_dim,
        conv_dim=[ch for ch, _, _ in c.conv_layers], num_conv_pos_embeddings=c.pos_conv_kernel,
        num_conv_pos_embedding_groups=c.pos_conv_groups, max_bucket_distance=c.max_distance))
    expected = {}
    for key, value in ref.state_dict().items():
        for pattern, repl in HF_TO_UNILM:
            if re.match(pattern, key):
                repl = "feature_extractor.conv_layers.0.2." if repl == "GROUP_OR_LAYER_0" else repl
                key = re.sub(pattern, repl, key, count=1)
                break
        expected[key] = tuple(value.shape)
    ours = unilm_checkpoint(MaskedWavLM(c), torch.zeros(c.hidden_size))
    assert {k: tuple(v.shape) for k, v in ours["model"].items()} == expected
    with pytest.raises(ValueError, match="only a dense model"):
        unilm_checkpoint(MaskedWavLM(WavLMConfig.tiny(prune_units=["head"])), torch.zeros(128))


def run(tmp_path, *extra):
    return pretrain.main(["--data", "toy", "--toy-size", "tiny", "--cache-dir",
                          str(tmp_path / "cache"), "--out", str(tmp_path / "run"), "--steps", "5",
                          "--batch-size", "3", "--crop-seconds", "0.8", "--clusters", "8",
                          "--eval-every", "2", "--eval-batches", "1", *extra])


@pytest.mark.slow
def test_smoke_run_writes_a_checkpoint_that_load_pretrained_reads(tmp_path):
    report = run(tmp_path, "--mix-prob", "0.5")
    assert report["steps"] == 5 and report["files"] == 6 and report["heldout_files"] == 1
    out = tmp_path / "run"
    raw = read_checkpoint(out / "tiny_wavlm.pt")
    assert set(raw) == {"cfg", "model"} and "mask_emb" in raw["model"]
    assert raw["cfg"]["mask_prob"] == 0.8 and raw["cfg"]["mix_prob"] == 0.5
    loaded = load_pretrained(out / "tiny_wavlm.pt").eval()     # every key mapped, or it raises
    state = read_checkpoint(out / "checkpoint.pt")
    trained = pretrain.MaskedPrediction(WavLMConfig.tiny(), 8)
    trained.load_state_dict(state["model"])
    x = torch.randn(2, 12000)
    with torch.no_grad():
        a, _ = trained.wavlm.eval()(x)
        b, _ = loaded(x)
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert (out / "loss.png").exists() and len((out / "log.jsonl").read_text().splitlines()) == 5
    # the probe reads the run's checkpoint.pt as the same encoder as its export
    with torch.no_grad():
        c, _ = pretrain.probe_encoder(str(out / "checkpoint.pt")).eval()(x)
    assert all(torch.equal(u, v) for u, v in zip(a, c))


@pytest.mark.slow
def test_interrupted_run_resumes_to_the_same_weights(tmp_path, monkeypatch):
    run(tmp_path / "straight")
    lr_at = pretrain.lr_at

    def interrupt_at_step_3(step, total, peak):
        if step == 2:                                   # during the third step
            os.kill(os.getpid(), signal.SIGINT)
        return lr_at(step, total, peak)

    monkeypatch.setattr(pretrain, "lr_at", interrupt_at_step_3)
    with pytest.raises(SystemExit) as stopped:
        run(tmp_path / "interrupted")
    assert stopped.value.code == 130
    assert read_checkpoint(tmp_path / "interrupted" / "run" / "checkpoint.pt")["step"] == 3
    monkeypatch.setattr(pretrain, "lr_at", lr_at)
    run(tmp_path / "interrupted", "--resume")
    a = read_checkpoint(tmp_path / "straight" / "run" / "checkpoint.pt")
    b = read_checkpoint(tmp_path / "interrupted" / "run" / "checkpoint.pt")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    log = (tmp_path / "interrupted" / "run" / "log.jsonl").read_text().splitlines()
    assert len(log) == 5                                # one line per step


@pytest.mark.slow
def test_targets_choose_the_mean_removal_and_a_resume_keeps_them(tmp_path, capsys):
    """--targets mfcc: the k-means input is the MFCC frames as computed; mfcc-cmn (the
    default) removes each utterance's mean. A run resumed with the other choice would
    label its frames in another space than its centroids: refused."""
    args = lambda *extra: pretrain.parse_args(["--data", "toy", "--toy-size", "tiny", "--cache-dir",
                                               str(tmp_path / "cache"), *extra])
    _, paths, raw, _, _ = pretrain.load_corpus(args("--targets", "mfcc"))
    _, _, cmn, _, _ = pretrain.load_corpus(args())
    for path, r, c in zip(paths, raw, cmn):
        want = pretrain.mfcc_features(data.load_audio(path))
        assert torch.equal(r, want) and torch.allclose(c, want - want.mean(0), atol=1e-5)
        assert r.mean(0).abs().max() > 1.0                   # the mean is there to remove
    run(tmp_path, "--steps", "2", "--targets", "mfcc")
    assert read_checkpoint(tmp_path / "run" / "checkpoint.pt")["args"]["targets"] == "mfcc"
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        run(tmp_path, "--resume")
    assert e.value.code == 2 and "--targets mfcc;" in capsys.readouterr().err


@pytest.mark.slow
def test_second_iteration_clusters_a_layer_of_the_first_model(tmp_path, capsys):
    """--targets layer:L --targets-from CK (HuBERT's second iteration): the k-means input
    is layer L of the first model's hidden states, one frame per label as with MFCCs."""
    run(tmp_path / "first", "--steps", "2")
    first = str(tmp_path / "first" / "run" / "tiny_wavlm.pt")
    args = pretrain.parse_args(["--data", "toy", "--toy-size", "tiny", "--cache-dir",
                                str(tmp_path / "first" / "cache"), "--targets", "layer:2",
                                "--targets-from", first])
    _, paths, feats, _, _ = pretrain.load_corpus(args)
    model = load_pretrained(first).eval()
    for path, f in zip(paths, feats):
        wave = data.load_audio(path)
        with torch.no_grad():
            hidden, _ = model(wave[None])
        assert torch.allclose(f, hidden[2][0], atol=1e-6)
        assert f.shape[0] == pretrain.mfcc_frames(wave).shape[0]          # the label grid
    report = run(tmp_path / "first", "--steps", "2", "--out", str(tmp_path / "second"),
                 "--targets", "layer:2", "--targets-from", first)
    assert report["steps"] == 2
    capsys.readouterr()
    for bad, says in ((["--targets", "layer:9", "--targets-from", first], "has layers 0 to 4"),
                      (["--targets", "layer:x", "--targets-from", first], "choose mfcc-cmn"),
                      (["--targets", "layer:2"], "go together")):
        with pytest.raises(SystemExit) as e:
            run(tmp_path / "first", "--steps", "2", "--out", str(tmp_path / "bad"), *bad)
        assert e.value.code == 2 and says in capsys.readouterr().err, bad


def test_bad_input_is_one_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        pretrain.main(["--data-root", str(tmp_path / "nope")])
    assert e.value.code == 2 and "is not a folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as e:
        pretrain.main(["--data-root", str(tmp_path / "empty")])
    assert e.value.code == 2 and "no .wav or .flac" in capsys.readouterr().err
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.wav").write_bytes(b"not audio")
    with pytest.raises(SystemExit) as e:
        pretrain.main(["--data-root", str(tmp_path / "bad")])
    assert e.value.code == 2 and "x.wav" in capsys.readouterr().err


def test_crops_of_a_file_at_another_rate_follow_its_resampled_labels(tmp_path):
    """A 22.05-kHz file is resampled when its MFCC labels are made; its crops must be cut
    from the same resampled audio, or crop and labels would describe different sounds."""
    import soundfile as sf
    n = 2 * 22050
    wave = (np.sin(np.linspace(0, 4000, n)) * np.linspace(0, 1, n)).astype(np.float32)
    sf.write(tmp_path / "a.wav", wave, 22050)
    audio = pretrain.data.load_audio(str(tmp_path / "a.wav"))                  # at 16 kHz
    crops = pretrain.Crops([str(tmp_path / "a.wav")], [torch.zeros(200, dtype=torch.long)],
                           [len(audio)], 0.5)
    waves, _ = crops.batch(4, np.random.default_rng(0))
    rng = np.random.default_rng(0)                  # the same draws, in batch()'s order:
    rng.integers(0, 1, 4)                           # the files, then each crop's start
    last = (len(audio) - 8000) // 320
    for w in waves:
        start = int(rng.integers(0, last + 1))
        assert torch.allclose(w, audio[start * 320:start * 320 + 8000])


# ------------------------------------------------------------------------------ the probe
@pytest.fixture(scope="module")
def tiny_sv(tmp_path_factory):
    """The tiny toy SV corpus (11 test files, 3 test speakers), generated once."""
    cache = tmp_path_factory.mktemp("probe_cache")
    return str(cache), pretrain.data.prepare_data("toy", cache_dir=str(cache), toy_size="tiny")


def all_pairs(spec):
    """Every pair of the spec's test files as a trial list: 55 trials instead of 12, so
    that the EERs of different layers differ and a wrong layer cannot pass by a tie."""
    rels = sorted({t for _, a, b in spec.trials["vox1_o"] for t in (a, b)})
    rows = [(int(a.split("/")[0] == b.split("/")[0]), a, b)
            for i, a in enumerate(rels) for b in rels[i + 1:]]
    return dataclasses.replace(spec, trials={"pairs": TrialList(rows)})


def printed_rows(text):
    """{scoring block: {system: [numbers]}} from the printed probe table ("-" cells
    skipped); a block starts at a line ending in ":" ("raw cosine:", ...)."""
    blocks, rows = {}, None
    for line in text.splitlines()[1:]:
        if line.endswith(":"):
            rows = blocks.setdefault(line.split(" (")[0].rstrip(":"), {})
        elif line.startswith(("random (seed", "mfcc")):
            name = re.match(r"(random \(seed \d+\)|mfcc mean\+std|mfcc mean)", line).group(1)
            rows[name] = [float(x) for x in re.findall(r"\d+\.\d\d", line[len(name):])]
    return blocks


def test_probe_prints_the_numbers_it_returns_and_is_deterministic(tiny_sv, tmp_path, capsys):
    cache, _ = tiny_sv
    argv = ["--probe", "--probe-seed", "0", "1", "--toy-size", "tiny", "--cache-dir", cache]
    first = pretrain.main(argv + ["--out", str(tmp_path / "probe.json")])
    printed = printed_rows(capsys.readouterr().out)
    second = pretrain.main(argv)
    capsys.readouterr()
    assert first["rows"] == second["rows"]                           # bit for bit
    assert json.loads((tmp_path / "probe.json").read_text())["rows"] == first["rows"]
    assert [r["system"] for r in first["rows"]] == ["random (seed 0)", "random (seed 1)",
                                                    "mfcc mean", "mfcc mean+std"]
    assert list(printed) == ["raw cosine", "cosine after mean subtraction"]
    for block, key in zip(printed, ("eer", "eer_centred")):
        for row in first["rows"]:
            eer = [round(100 * e, 2) for e in row[key]]
            best = min(eer)
            # the layers, then the best layer's EER (the MFCC rows: only that)
            assert printed[block][row["system"]] == (eer + [best] if len(eer) > 1 else [best])
    assert len(first["rows"][0]["eer"]) == WavLMConfig.tiny().num_layers + 1
    raw_only = pretrain.main(argv + ["--probe-centre", "0"])
    assert list(printed_rows(capsys.readouterr().out)) == ["raw cosine"]
    assert [r["eer"] for r in raw_only["rows"]] == [r["eer"] for r in first["rows"]]
    assert all(r["eer_centred"] is None for r in raw_only["rows"])


def test_probe_equals_a_brute_force_oracle(tiny_sv):
    """Per layer: hidden states of the model run directly, pooled by hand, cosine by
    numpy, EER by metrics.compute_eer, against the probe's EER, raw and after subtracting
    the mean of the first 2 files (by path) of every training speaker; the MFCC rows
    likewise."""
    _, spec = tiny_sv
    spec = all_pairs(spec)
    result = pretrain.probe(seeds=(2,), spec=spec, centre_per_speaker=2)
    trials = spec.sv_trials("pairs")
    labels = np.array([y for y, _, _ in trials])
    centre_files = [p for s in sorted({s for _, s in spec.train_items})
                    for p in sorted(p for p, t in spec.train_items if t == s)[:2]]
    assert result["centre_files"] == len(centre_files) > 2
    torch.manual_seed(2)
    model = MaskedWavLM(WavLMConfig.tiny()).eval()
    pooled, mfcc = {}, {}
    for path in spec.eval_paths("pairs") + centre_files:
        wave = pretrain.data.load_audio(path)
        with torch.no_grad():
            hidden, _ = model(wave[None])
        pooled[path] = [h[0].numpy().mean(0) for h in hidden]        # (E,) per layer
        feats = pretrain.mfcc_features(wave).numpy()                   # (T, 39)
        mfcc[path] = [feats.mean(0), np.concatenate([feats.mean(0), feats.std(0, ddof=1)])]

    def eer(vectors, centre):
        mean = (np.mean([vectors[p] for p in centre_files], axis=0) if centre
                else np.zeros_like(vectors[centre_files[0]]))
        unit = {p: (v - mean) / np.linalg.norm(v - mean) for p, v in vectors.items()}
        scores = np.array([unit[a] @ unit[b] for _, a, b in trials])
        return compute_eer(scores, labels)[0]

    for key, centre in (("eer", False), ("eer_centred", True)):
        layers = [eer({p: v[k] for p, v in pooled.items()}, centre) for k in range(5)]
        assert len(set(layers)) > 1                      # the layers are told apart
        assert result["rows"][0][key] == pytest.approx(layers, abs=1e-12)
        floors = [eer({p: v[k] for p, v in mfcc.items()}, centre) for k in range(2)]
        assert [r[key][0] for r in result["rows"][1:]] == pytest.approx(floors, abs=1e-12)
    assert result["rows"][0]["eer"] != result["rows"][0]["eer_centred"]   # it changes something


def test_probe_of_a_saved_random_model_equals_its_random_row(tiny_sv, tmp_path):
    """A checkpoint goes through load_pretrained: the seed-0 random model written as a
    unilm file must probe exactly as the seed-0 random row."""
    _, spec = tiny_sv
    spec = all_pairs(spec)
    torch.manual_seed(0)
    model = MaskedWavLM(WavLMConfig.tiny())
    torch.save(unilm_checkpoint(model, torch.zeros(model.config.hidden_size)),
               tmp_path / "random0.pt")
    result = pretrain.probe([tmp_path / "random0.pt"], seeds=(0,), spec=spec)
    assert result["rows"][1]["system"] == f"{tmp_path.name}/random0.pt"    # folder/file
    for key in ("eer", "eer_centred"):
        assert result["rows"][1][key] == result["rows"][0][key]


def test_probe_bad_input_is_one_error_line(tmp_path, capsys):
    for bad, says in ((tmp_path / "missing.pt", "no such checkpoint"),
                      (tmp_path / "junk.pt", "junk.pt")):
        if bad.name == "junk.pt":
            bad.write_bytes(b"not a checkpoint")
        with pytest.raises(SystemExit) as e:
            pretrain.main(["--probe", str(bad), "--toy-size", "tiny", "--cache-dir",
                           str(tmp_path / "cache")])
        err = capsys.readouterr().err
        assert e.value.code == 2 and says in err
        assert len(err.strip().splitlines()) == 1 and err.startswith("error: ")
