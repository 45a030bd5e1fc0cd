"""export.py: onnxruntime must compute what PyTorch computes (the oracle), on lengths far
from the one the graph was captured with, for dense, pruned, Base- and Large-style
models and for removed blocks; the CLI and the scorer must refuse bad input loudly.

Every real export takes ~10 s on a 2-core CPU (capture + translation), so those tests
are marked slow; the fast ones check the error paths on a hand-made ONNX graph."""
import json
import os
import subprocess
import sys

import pytest
import soundfile as sf
import torch

import checkpoints
import classifier
import data
import evaluate
import export
import scoring
import wavlm_masked as W

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
from common import pruned_pair  # noqa: E402

TOL = 1e-4
# 0.5 s, an odd length, 4 s and 60 s; the graph is captured on 2 s of audio.
LENGTHS = [8000, 20817, 64000, 960000]
LARGE = dict(extractor_mode="layer_norm", layer_norm_first=True, conv_bias=True)


def nontrivial(model):
    """Random biases and norm parameters, so that no term of the graph is a no-op."""
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn_like(p))
    return model


def with_head(ssl, task="sv", seed=0):
    torch.manual_seed(seed)
    model = classifier.Classifier(ssl, task, num_classes=7, grad_mult=0.1, p_bonafide=0.3)
    nontrivial(model.head)
    nontrivial(model.loss_head)
    return model.eval()


def dense_ssl(**kw):
    torch.manual_seed(0)
    return nontrivial(W.MaskedWavLM(W.WavLMConfig.tiny(**kw))).eval()


def pruned_ssl(**kw):
    _, _, pruned = pruned_pair(W.WavLMConfig.tiny(**kw), 0.6, seed=1)
    return pruned


def blocks_removed_ssl():
    """Layer 1 loses its attention block, layer 2 its FFN block (plus some heads/units)."""
    torch.manual_seed(2)
    masked = nontrivial(W.MaskedWavLM(W.WavLMConfig.tiny(prune_units=list(W.PRUNE_UNITS)))).eval()
    with torch.no_grad():
        for g in masked.gates().values():
            g.log_alpha.fill_(8.0)                               # keep everything ...
        masked.encoder.layers[1].attention_gate.log_alpha.fill_(-20.0)   # ... but these two blocks
        masked.encoder.layers[2].ffn_gate.log_alpha.fill_(-20.0)
        masked.encoder.layers[0].attention.head_gate.log_alpha[1] = -20.0
        masked.encoder.layers[3].feed_forward.unit_gate.log_alpha[:300] = -20.0
    pruned = masked.prune()
    assert pruned.config.attention_blocks == [True, False, True, True]
    assert pruned.config.ffn_blocks == [True, True, False, True]
    return pruned


MODELS = {
    "dense-base": lambda: with_head(dense_ssl()),
    "dense-large": lambda: with_head(dense_ssl(**LARGE)),
    "pruned-base": lambda: with_head(pruned_ssl()),
    "pruned-large": lambda: with_head(pruned_ssl(**LARGE)),
    "blocks-removed": lambda: with_head(blocks_removed_ssl()),
    "pruned-base-cm": lambda: with_head(pruned_ssl(), task="cm"),
}


def reference(model, wave):
    with torch.no_grad():
        return model.score(wave)[0].reshape(-1)


# ------------------------------------------------------------------ parity (slow)
@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_onnxruntime_equals_pytorch(tmp_path, name):
    model = MODELS[name]()
    info = export.export_onnx(model, tmp_path / "m.onnx", verify_seconds=())
    score, info2 = export.onnx_scorer(tmp_path / "m.onnx")
    assert info2 == info
    assert info["task"] == model.task
    assert info["params"]["ssl"] == model.ssl.num_params()
    assert info["structure"]["attention_blocks"] == model.ssl.config.attention_blocks
    g = torch.Generator().manual_seed(3)
    for n in LENGTHS + [info["min_samples"]]:
        wave = torch.randn(1, n, generator=g)
        got, want = score(wave), reference(model, wave)
        assert got.shape == want.shape == ((256,) if model.task == "sv" else (1,))
        diff = (got - want).abs().max().item()
        assert diff <= TOL, (name, n, diff)
    # Shorter than the range export found is refused, not scored wrongly.
    with pytest.raises(ValueError, match="shorter than"):
        score(torch.randn(1, info["min_samples"] - 1))


@pytest.mark.slow
def test_gated_model_is_pruned_before_export(tmp_path, capsys):
    dense, masked, pruned = pruned_pair(W.WavLMConfig.tiny(), 0.5, seed=4)
    model = with_head(masked)
    wave = torch.randn(1, 30000)
    want = reference(model, wave)                  # the gated model, eval mode
    info = export.export_onnx(model, tmp_path / "m.onnx", verify_seconds=(1.0,))
    assert "exporting its pruned version" in capsys.readouterr().out
    assert info["params"]["ssl"] == pruned.num_params() and info["verified"]["max_abs_diff"] <= TOL
    score, _ = export.onnx_scorer(tmp_path / "m.onnx")
    assert (score(wave) - want).abs().max().item() <= TOL


def small_run_args(tmp_path, data_name):
    return ["--data", data_name, "--toy-size", "tiny", "--cache-dir", str(tmp_path / "cache"),
            "--steps", "4", "--batch-size", "2", "--crop-seconds", "0.5",
            "--out", str(tmp_path / "run"), "--no-progress", "--num-workers", "0",
            "--eval-every", "4", "--save-every", "4", "--target", "0.5"]


@pytest.mark.slow
@pytest.mark.parametrize("data_name", ["toy", "toy_spoof"])
def test_toy_run_export_and_onnx_scoring(tmp_path, data_name, capsys):
    """train.py -> export.py -> evaluate.py --onnx gives the metrics of --checkpoint."""
    import train
    train.main(small_run_args(tmp_path, data_name))
    ckpt, onnx_path = tmp_path / "run" / "pruned_model.pt", tmp_path / "model.onnx"
    assert export.main([str(ckpt), "--out", str(onnx_path), "--int8"]) == 0
    info = json.loads((tmp_path / "model.onnx.json").read_text())
    assert info["source"] == "pruned_model.pt" and info["verified"]["max_abs_diff"] <= TOL
    # The int8 file is a model of its own: its own sidecar, a scorer, and a (small) error.
    q_info = json.loads((tmp_path / "model.int8.onnx.json").read_text())
    assert q_info["source"] == "model.onnx" and "int8" in q_info["quantization"]
    assert q_info["onnx_bytes"] < info["onnx_bytes"]
    q_fn, _ = export.onnx_scorer(tmp_path / "model.int8.onnx")
    fp_fn, _ = export.onnx_scorer(onnx_path)
    wave = torch.randn(1, 40000)
    a, b = q_fn(wave), fp_fn(wave)
    assert a.shape == b.shape and torch.isfinite(a).all()
    if data_name == "toy":            # embeddings: the direction is what cosine scoring uses
        assert torch.nn.functional.cosine_similarity(a, b, dim=0).item() > 0.95
    common = ["--data", data_name, "--toy-size", "tiny", "--cache-dir", str(tmp_path / "cache")]
    capsys.readouterr()
    assert evaluate.main(["--checkpoint", str(ckpt), *common]) == 0
    by_torch = capsys.readouterr().out
    assert evaluate.main(["--onnx", str(onnx_path), "--threads", "1", *common]) == 0
    by_onnx = capsys.readouterr().out
    def metric_lines(out):
        return [l.split("threshold")[0] for l in out.splitlines() if "EER" in l or "DCF" in l]
    assert metric_lines(by_onnx) == metric_lines(by_torch) and metric_lines(by_torch)

    # A file at another sample rate: both paths resample it, with the same notice.
    model, _ = classifier.load_classifier(ckpt)
    spec = data.prepare_data(data_name, None, str(tmp_path / "cache"), toy_size="tiny")
    wav, sr = sf.read(spec.eval_paths(spec.eval_names()[0])[0], dtype="float32")
    path8k = str(tmp_path / "8k.wav")
    sf.write(path8k, wav[::2], sr // 2)
    data._resample_noticed.discard(sr // 2)
    onnx_fn, _ = export.onnx_scorer(onnx_path)
    got = scoring.embed_paths(onnx_fn, [path8k])[path8k]
    assert "note: resampling 8000 Hz audio to 16000 Hz" in capsys.readouterr().out
    torch_fn = classifier.utterance_scorer(model, torch.device("cpu"))
    want = scoring.embed_paths(torch_fn, [path8k])[path8k]
    assert (got - want).abs().max().item() <= TOL


# ------------------------------------------------------------ error paths (fast)
def toy_onnx(tmp_path, task="sv"):
    """A stand-in for an exported model: the right input and output names and the
    metadata export.py embeds, but a trivial graph (mean of the wave, tiled)."""
    import onnx
    from onnx import TensorProto, helper
    out_name = export.output_name(task)
    dim = 256 if task == "sv" else 1
    nodes = [helper.make_node("ReduceMean", ["wave"], ["m"], keepdims=1),               # (1, 1)
             helper.make_node("Tile", ["m", "reps"], [out_name + "_2d"]),              # (1, dim)
             helper.make_node("Reshape", [out_name + "_2d", "shape"], [out_name])]
    graph = helper.make_graph(
        nodes, "toy", [helper.make_tensor_value_info("wave", TensorProto.FLOAT, [1, "S"])],
        [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, None)],
        initializer=[helper.make_tensor("reps", TensorProto.INT64, [2], [1, dim]),
                     helper.make_tensor("shape", TensorProto.INT64, [2 if task == "sv" else 1],
                                        [1, dim] if task == "sv" else [1])])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    proto.ir_version = 8
    info = {"format": export.SIDECAR_FORMAT, "task": task, "sample_rate": 16000, "min_samples": 720,
            "output": {"name": out_name, "shape": [1, dim] if task == "sv" else [1]}, "opset": 18}
    helper.set_model_props(proto, {export.METADATA_KEY: json.dumps(info)})
    path = tmp_path / "toy.onnx"
    onnx.save(proto, str(path))
    export.write_sidecar(path, info)
    return path, info


def test_scorer_reads_a_consistent_pair(tmp_path):
    path, _ = toy_onnx(tmp_path, "cm")
    score, info = export.onnx_scorer(path)
    assert info["task"] == "cm"
    out = score(torch.full((1, 1000), 0.25))
    assert out.shape == (1,) and out.item() == pytest.approx(0.25)
    with pytest.raises(ValueError, match="shorter than"):
        score(torch.zeros(1, 719))
    with pytest.raises(ValueError, match=r"shape \(1, S\)"):
        score(torch.zeros(2, 1000))


def test_missing_sidecar_is_an_error(tmp_path):
    path, _ = toy_onnx(tmp_path)
    os.remove(export.sidecar_path(path))
    with pytest.raises(ValueError, match="has no sidecar"):
        export.onnx_scorer(path)


def test_sidecar_of_another_file_is_an_error(tmp_path):
    path, _ = toy_onnx(tmp_path)
    with open(path, "ab") as f:                     # the .onnx changed after export
        f.write(b"\0")
    with pytest.raises(ValueError, match="does not belong"):
        export.onnx_scorer(path)


def test_edited_sidecar_is_an_error(tmp_path):
    path, info = toy_onnx(tmp_path)
    side = json.loads(export.sidecar_path(path).read_text())
    side["task"] = "cm"                             # the hash still matches the .onnx
    export.sidecar_path(path).write_text(json.dumps(side))
    with pytest.raises(ValueError, match="disagree.*task"):
        export.onnx_scorer(path)


def test_sidecar_sample_rate_must_match_the_audio(tmp_path):
    path, info = toy_onnx(tmp_path)
    with pytest.raises(ValueError, match="expects 16000 Hz"):
        export.onnx_scorer(path, sample_rate=8000)


def test_evaluate_onnx_without_sidecar_exits_2(tmp_path, capsys):
    path, _ = toy_onnx(tmp_path)
    os.remove(export.sidecar_path(path))
    with pytest.raises(SystemExit) as e:
        evaluate.main(["--onnx", str(path), "--data", "toy"])
    assert e.value.code == 2 and "has no sidecar" in capsys.readouterr().err


def tiny_classifier_file(tmp_path):
    path = tmp_path / "pruned_model.pt"
    classifier.save_classifier(with_head(dense_ssl()), path)
    return path


@pytest.mark.parametrize("kind", ["garbage", "truncated", "ssl-only", "missing"])
def test_export_cli_rejects_bad_files(tmp_path, capsys, kind):
    path = tmp_path / "file.pt"
    if kind == "garbage":
        path.write_text("not a model\n")
    elif kind == "truncated":
        good = tiny_classifier_file(tmp_path).read_bytes()
        path.write_bytes(good[: len(good) // 2])
    elif kind == "ssl-only":                        # a WavLM without the classifier head
        checkpoints.save_model(dense_ssl(), path)
    with pytest.raises(SystemExit) as e:
        export.main([str(path), "--out", str(tmp_path / "m.onnx")])
    err = capsys.readouterr().err
    assert e.value.code == 2
    assert err.startswith("export.py: error: ") and err.count("\n") == 1, err
    assert not (tmp_path / "m.onnx").exists()


def test_export_cli_error_has_no_traceback(tmp_path):
    path = tmp_path / "file.pt"
    path.write_bytes(os.urandom(1000))
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "export.py"), str(path)],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stderr.startswith("export.py: error: ")
