"""
Deploying a pruned model: export its inference path to ONNX, and score with onnxruntime.

    python export.py runs/toy_t0.7/pruned_model.pt --out model.onnx
    python evaluate.py --onnx model.onnx --data toy

The seed paper (Peng et al. 2025, "Hybrid Pruning", arXiv 2508.16232, Sec. 1) prunes
WavLM so that it can run on resource-constrained devices. `prune()` already gives a
smaller *dense* WavLM, so nothing special is needed at run time: any runtime that runs
a WavLM runs the pruned one, faster. ONNX (Open Neural Network Exchange, onnx.ai) is the
common file format of such runtimes; onnxruntime (Microsoft) is the reference one.

What is exported is exactly `Classifier.score`, for one utterance:

    wave (1, S) float32 at 16 kHz
      -> pruned WavLM -> L+1 hidden states (1, T, E) -> MHFA -> embedding (1, 256)
      -> SV: the embedding itself (cosine scoring happens outside, over trials)
         CM: the 2-class head's log-likelihood ratio (1,)

The AAM-softmax speaker centres are training-only and are left out. Batch 1 because that
is how utterances are scored (scoring.embed_paths): a GroupNorm extractor normalises over
all frames, so padding unequal utterances into a batch would change their embeddings.

How (torch 2.9): two steps, each of which can fail for its own reasons.
  1. torch.export.export captures forward() as a graph of aten operators, with the length
     S as a *symbol*: shapes downstream become formulas in S (T = ((S // 80 - 3) // 2
     - 1) // 2 + 1 for the standard CNN). Python code that branches on a value computed
     from S, or asks whether a view of a symbolic stride is legal, cannot be captured or
     translated; wavlm_masked.py avoids both (the relative-position table, the head
     merge). We ask for Dim.DYNAMIC, which lets export narrow the range of S to what
     the graph needs (T >= 2 frames, i.e. S >= 720 samples, 45 ms) rather than fail;
     that minimum is recorded in the sidecar and enforced by the scorer below.
  2. torch.onnx.export(exported_program) translates each aten operator into ONNX
     operators (opset 18) with onnxscript, and saves the weights inside the file.

Parity is checked, not assumed: export_onnx() runs PyTorch and onnxruntime side by side
on a few lengths and records the largest absolute difference in the sidecar
(tests/test_export.py checks 1e-4 on several configurations and lengths up to 60 s).

The sidecar `model.onnx.json` says what the file is (task, sample rate, output size, the
minimum length, parameter counts, the pruned structure, library and opset versions) and
holds the SHA-256 of the .onnx bytes. A scorer refuses an .onnx without its sidecar, or
with one that belongs to another file: a silently wrong score (an LLR read as an
embedding, an 8-kHz model fed 16-kHz audio) is worse than an error.
"""

import argparse
import copy
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

import checkpoints
import classifier
from data import SAMPLE_RATE        # every model of this library reads 16-kHz audio
from wavlm_masked import __version__

SIDECAR_FORMAT = "insitu-pruning/onnx-sidecar-v1"
METADATA_KEY = "insitu_pruning"   # the same description, embedded in the .onnx itself
OPSET = 18
INPUT_NAME = "wave"


class ScoreModule(nn.Module):
    """forward(wave (1, S)) = classifier.score(wave): the graph that gets exported.
    A Classifier's own forward() is the training loss, which needs labels."""

    def __init__(self, model: classifier.Classifier):
        super().__init__()
        self.model = model

    def forward(self, wave):                                   # (1, S) -> SV (1, 256) | CM (1,)
        return self.model.score(wave)


def output_name(task: str) -> str:
    return "embedding" if task == "sv" else "llr"


def sidecar_path(onnx_path) -> Path:
    return Path(str(onnx_path) + ".json")


# --------------------------------------------------------------------------- export
def describe(model: classifier.Classifier) -> dict:
    """What the sidecar says about the model itself (everything but file facts)."""
    ssl = model.ssl
    head_params = sum(p.numel() for p in model.head.parameters())
    # The CM score uses the 2-class head; SV's AAM-softmax centres are left out.
    if model.task == "cm":
        head_params += sum(p.numel() for p in model.loss_head.parameters())
    summary = ssl.structure_summary()
    return {
        "format": SIDECAR_FORMAT,
        "task": model.task,
        "sample_rate": SAMPLE_RATE,
        "input": {"name": INPUT_NAME, "shape": [1, "S"], "dtype": "float32"},
        "output": {"name": output_name(model.task),
                   "shape": [1, classifier.EMBED_DIM] if model.task == "sv" else [1]},
        "embed_dim": classifier.EMBED_DIM,
        "head": model.head_config.kind,
        "p_bonafide": model.p_bonafide if model.task == "cm" else None,
        "params": {"ssl": ssl.num_params(), "head": head_params,
                   "total": ssl.num_params() + head_params},
        "structure": {
            "hidden_size": ssl.config.hidden_size,
            "num_layers": ssl.config.num_layers,
            "extractor_mode": ssl.config.extractor_mode,
            "layer_norm_first": ssl.config.layer_norm_first,
            "conv_channels": summary["conv_channels"],
            "heads": summary["heads"],
            "ffn_units": summary["ffn_units"],
            "attention_blocks": summary["attention"],
            "ffn_blocks": summary["ffn"],
        },
        "library_version": __version__,
        "torch_version": torch.__version__.split("+")[0],
    }


def prepare_for_export(model: classifier.Classifier) -> classifier.Classifier:
    """A CPU copy in eval mode (the caller's model is left as it was). A gated model is
    cut down first: prune() computes the same eval-mode function without gates, and
    gates (data-dependent top-k masks) are not what one deploys."""
    model = copy.deepcopy(model).cpu().eval()
    if model.ssl.gates():
        print("note: the model still carries gates; exporting its pruned version (same outputs)")
        model.ssl = model.ssl.prune()
    return model


def capture(model: classifier.Classifier, example_seconds: float = 2.0):
    """Step 1: torch.export with a symbolic length -> (ExportedProgram, minimum samples)."""
    g = torch.Generator().manual_seed(0)
    wave = torch.randn(1, int(example_seconds * SAMPLE_RATE), generator=g)
    length = torch.export.Dim.DYNAMIC
    with torch.no_grad():
        program = torch.export.export(ScoreModule(model), (wave,),
                                      dynamic_shapes={"wave": {1: length}})
    # The one symbol of the graph is S; its range is what export found the graph needs.
    (symbol_range,) = program.range_constraints.values()
    return program, int(symbol_range.lower)


def export_onnx(model: classifier.Classifier, out_path, opset: int = OPSET,
                verify_seconds=(1.0, 3.7), source: str = None) -> dict:
    """Export `model` (a Classifier) to `out_path` and write the sidecar next to it.
    Returns the sidecar dict. verify_seconds: lengths on which onnxruntime is compared
    with PyTorch right away (empty: skip)."""
    model = prepare_for_export(model)
    out_path = Path(out_path)
    info = describe(model)
    t0 = time.perf_counter()
    program, min_samples = capture(model)
    # The exporter warns that torchvision's detection ops are unavailable: irrelevant here.
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    onnx_program = torch.onnx.export(program, dynamo=True, opset_version=opset,
                                     input_names=[INPUT_NAME],
                                     output_names=[output_name(model.task)],
                                     optimize=True, verbose=False)
    info.update(opset=opset, min_samples=min_samples, min_seconds=min_samples / SAMPLE_RATE,
                source=os.path.basename(source) if source else None)
    # The description travels inside the .onnx too, so a sidecar can be checked against it.
    onnx_program.model.metadata_props[METADATA_KEY] = json.dumps(info, sort_keys=True)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    onnx_program.save(str(out_path))
    info["export_seconds"] = round(time.perf_counter() - t0, 1)
    if verify_seconds:
        info["verified"] = verify(model, out_path, verify_seconds, min_samples)
    return write_sidecar(out_path, info)


def write_sidecar(onnx_path, info: dict) -> dict:
    """<onnx_path>.json: `info` plus the size and SHA-256 of the .onnx as it is now."""
    info = {**info, "onnx_sha256": checkpoints.file_sha256(onnx_path),
            "onnx_bytes": Path(onnx_path).stat().st_size}
    sidecar_path(onnx_path).write_text(json.dumps(info, indent=1) + "\n")
    return info


def verify(model, onnx_path, seconds, min_samples=0) -> dict:
    """Largest |onnxruntime - PyTorch| over random waves of the given lengths."""
    session = make_session(onnx_path)
    g = torch.Generator().manual_seed(1)
    worst = 0.0
    for s in seconds:
        wave = torch.randn(1, max(min_samples, int(s * SAMPLE_RATE)), generator=g)
        with torch.no_grad():
            ref = model.score(wave).numpy()
        got = session.run(None, {INPUT_NAME: wave.numpy()})[0]
        worst = max(worst, float(np.abs(got - ref).max()))
    return {"seconds": list(seconds), "max_abs_diff": worst}


def quantize_int8(onnx_path, out_path, verify_model=None, verify_seconds=(1.0, 3.7)) -> dict:
    """onnxruntime dynamic int8 quantisation of an exported model, with its own sidecar.

    "Dynamic": the weights of every MatMul / Gemm (the projections and FFNs, where most
    of the parameters and MACs are) are stored as int8 with one scale per tensor, and
    each activation is quantised on the fly from its observed range; the products run
    in int8 with int32 accumulation. No calibration data is needed. The convolutions
    and everything else stay in float. This is NOT exact: the sidecar records the
    difference to PyTorch, and the EER should be re-measured (evaluate.py --onnx).
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    info = read_sidecar(onnx_path)
    root = logging.getLogger()
    # Quiet the quantiser's generic advice to pre-process (shape inference) first.
    level, root.level = root.level, logging.ERROR
    try:
        quantize_dynamic(str(onnx_path), str(out_path), weight_type=QuantType.QInt8,
                         op_types_to_quantize=["MatMul", "Gemm"])
    finally:
        root.setLevel(level)
    method = ("onnxruntime dynamic int8: MatMul/Gemm weights int8 (per tensor), "
              "activations quantised at run time")
    proto = onnx.load(str(out_path))
    embedded = {p.key: p.value for p in proto.metadata_props}
    description = {**json.loads(embedded.get(METADATA_KEY, "{}")), "quantization": method,
                   "source": Path(onnx_path).name}
    embedded[METADATA_KEY] = json.dumps(description, sort_keys=True)
    onnx.helper.set_model_props(proto, embedded)
    onnx.save(proto, str(out_path))
    info = {k: v for k, v in info.items() if k not in ("verified", "onnx_sha256", "onnx_bytes")}
    info.update(quantization=method, source=Path(onnx_path).name)
    if verify_model is not None and verify_seconds:
        info["verified"] = verify(verify_model, out_path, verify_seconds, info["min_samples"])
    return write_sidecar(out_path, info)


# -------------------------------------------------------------------------- scoring
def make_session(onnx_path, threads: int = None):
    """An onnxruntime CPU session. threads: intra-op threads (None: onnxruntime's choice,
    one per physical core)."""
    import onnxruntime as ort
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])


def read_sidecar(onnx_path) -> dict:
    """The sidecar of `onnx_path`, checked against the file. Raises ValueError."""
    onnx_path, side = Path(onnx_path), sidecar_path(onnx_path)
    if not onnx_path.is_file():
        raise ValueError(f"{onnx_path}: no such file")
    if not side.is_file():
        raise ValueError(f"{onnx_path} has no sidecar {side.name}: without it the task, sample "
                         f"rate and output are unknown; re-export with "
                         f"`python export.py <pruned_model.pt> --out {onnx_path}`")
    try:
        info = json.loads(side.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read the sidecar {side}: {e}") from None
    if not isinstance(info, dict) or info.get("format") != SIDECAR_FORMAT:
        raise ValueError(f"{side} is not a sidecar written by export.py "
                         f"(no format tag {SIDECAR_FORMAT!r})")
    if info.get("onnx_sha256") != checkpoints.file_sha256(onnx_path):
        raise ValueError(f"{side.name} does not belong to {onnx_path.name}: the SHA-256 of the "
                         f".onnx differs from the one recorded at export (the file was replaced or "
                         f"modified); re-export both together")
    return info


def check_session(session, info: dict, onnx_path):
    """The graph must say what the sidecar says (an edited sidecar is caught here)."""
    embedded = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
    problems = []
    if embedded is None:
        problems.append(f"the .onnx carries no {METADATA_KEY!r} metadata "
                        f"(not written by export.py)")
    else:
        embedded = json.loads(embedded)
        problems += [f"{k}: sidecar {info.get(k)!r}, model {v!r}"
                     for k, v in embedded.items() if info.get(k) != v]
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if [i.name for i in inputs] != [INPUT_NAME]:
        problems.append(f"inputs {[i.name for i in inputs]}, expected [{INPUT_NAME!r}]")
    if [o.name for o in outputs] != [info.get("output", {}).get("name")]:
        problems.append(f"outputs {[o.name for o in outputs]}, sidecar says {info.get('output')}")
    if problems:
        raise ValueError(f"{onnx_path} and its sidecar disagree: " + "; ".join(problems))


def onnx_scorer(onnx_path, threads: int = None, sample_rate: int = SAMPLE_RATE):
    """(score_fn, sidecar) for an exported model. score_fn has the contract of
    classifier.utterance_scorer: wave (1, S) float CPU tensor at `sample_rate` ->
    1-D CPU tensor, SV (256,) or CM (1,), so scoring.evaluate_sets takes either."""
    info = read_sidecar(onnx_path)
    if info["sample_rate"] != sample_rate:
        raise ValueError(f"{onnx_path} expects {info['sample_rate']} Hz audio but the scorer is "
                         f"fed {sample_rate} Hz (data.load_audio resamples to {sample_rate} Hz)")
    session = make_session(onnx_path, threads)
    check_session(session, info, onnx_path)
    min_samples = info["min_samples"]

    def score(wave):
        if wave.dim() != 2 or wave.shape[0] != 1:
            raise ValueError(f"expected one utterance, shape (1, S); got {tuple(wave.shape)}")
        if wave.shape[1] < min_samples:
            ms = 1000 * min_samples / info["sample_rate"]
            raise ValueError(f"utterance of {wave.shape[1]} samples is shorter than the exported "
                             f"model's minimum, {min_samples} samples ({ms:.0f} ms)")
        out = session.run(None, {INPUT_NAME: wave.detach().cpu().float().numpy()})[0]
        return torch.from_numpy(np.ascontiguousarray(out[0])).reshape(-1)
    return score, info


# ------------------------------------------------------------------------------ CLI
def build_parser():
    p = argparse.ArgumentParser(description="Export a trained model (pruned_model.pt) to ONNX for "
                                            "onnxruntime; writes <out>.json beside it.")
    p.add_argument("checkpoint", help="pruned_model.pt written by train.py")
    p.add_argument("--out", default=None,
                   help="the .onnx file (default: beside the checkpoint, model.onnx)")
    p.add_argument("--opset", type=int, default=OPSET, help=f"ONNX opset (default {OPSET})")
    p.add_argument("--verify-seconds", type=float, nargs="*", default=[1.0, 3.7],
                   help="compare onnxruntime with PyTorch on random waves of these lengths "
                        "(none: skip)")
    p.add_argument("--int8", action="store_true",
                   help="also write <out>.int8.onnx: dynamic int8 quantisation "
                        "(smaller, not exact)")
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    out = Path(args.out) if args.out else Path(args.checkpoint).with_name("model.onnx")
    try:
        model, _ = classifier.load_classifier(args.checkpoint)
    except FileNotFoundError:
        parser.exit(2, f"export.py: error: {args.checkpoint}: no such file\n")
    except (OSError, ValueError) as err:
        # One line, no traceback: the loaders' messages say what is wrong with the file.
        reason = str(err).splitlines()[0]
        reason = reason if len(reason) <= 300 else reason[:297] + "..."
        parser.exit(2, f"export.py: error: {args.checkpoint} is not a usable pruned_model.pt: "
                       f"{reason}\n")
    info = export_onnx(model, out, opset=args.opset, verify_seconds=args.verify_seconds,
                       source=args.checkpoint)
    p = info["params"]
    print(f"wrote {out} ({info['onnx_bytes'] / 1e6:.1f} MB, {info['task']}, {p['total']:,} "
          f"parameters: SSL {p['ssl']:,} + head {p['head']:,}) in {info['export_seconds']} s")
    print(f"      {sidecar_path(out)} (input {INPUT_NAME} (1, S) float32 at {info['sample_rate']} "
          f"Hz, S >= {info['min_samples']}; output {info['output']['name']} "
          f"{info['output']['shape']})")
    if "verified" in info:
        v = info["verified"]
        print(f"parity: max |onnxruntime - PyTorch| = {v['max_abs_diff']:.2e} "
              f"on {v['seconds']} s of noise")
    if args.int8:
        q_path = out.with_suffix(".int8.onnx")
        q = quantize_int8(out, q_path, verify_model=model, verify_seconds=args.verify_seconds)
        line = f"wrote {q_path} ({q['onnx_bytes'] / 1e6:.1f} MB, dynamic int8) and its sidecar"
        if "verified" in q:
            line += (f"; max |int8 - PyTorch| = {q['verified']['max_abs_diff']:.2e} "
                     f"(quantisation error, re-measure the EER)")
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
