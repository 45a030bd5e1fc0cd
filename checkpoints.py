"""
The files this library writes and reads back: our model files, training checkpoints,
and the atomic write that keeps both whole through a crash.

- A model file (`save_model` / `load_model`) holds a MaskedWavLM's config, its weights
  (gates included) and an `extra` dict (classifier.py adds the head): self-contained,
  loadable without the original pre-trained checkpoint.
- A training checkpoint (`save_checkpoint` / `load_checkpoint`) holds everything
  a run needs to continue bit for bit: weights, multipliers, optimiser and RNG states.
- Every file is written to a temporary name and renamed over the old one (os.replace is
  atomic on POSIX and Windows), so a reader never sees half a file.
- Checkpoints are untrusted input: `read_checkpoint` loads tensors and plain containers
  only (weights_only=True), and `load_state_exactly` names every missing, unexpected or
  misshapen key at once instead of skipping any.
(docs/method.md Sec. 5 describes the formats and the key maps of foreign checkpoints.)
"""

import hashlib
import json
import os
import pickle
from typing import Optional, Tuple

import torch
import torch.nn as nn

from wavlm_masked import MaskedWavLM, WavLMConfig

# ----------------------------------------------------------------------- atomic writes


def atomic_torch_save(obj, path):
    path = os.fspath(path)
    torch.save(obj, path + ".tmp")
    os.replace(path + ".tmp", path)


def atomic_write_text(path, text: str):
    path = os.fspath(path)
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


def write_json(path, obj):
    atomic_write_text(path, json.dumps(obj, indent=2))


def file_sha256(path) -> str:
    """The file's SHA-256, read in 1-MiB blocks (model files are hundreds of MB)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ------------------------------------------------------------------- our model files
FILE_FORMAT = "insitu-pruning/wavlm-v1"


def save_model(model: MaskedWavLM, path: str, extra: Optional[dict] = None):
    """One self-contained file: config, weights (gates included) and an optional `extra`
    dict of tensors and plain values. Written atomically (temp file + os.replace), so a
    crash mid-write never leaves a half-written checkpoint behind."""
    payload = {"format": FILE_FORMAT, "config": model.config.to_dict(),
               "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
               "extra": extra or {}}
    atomic_torch_save(payload, path)


def load_model(path: str, map_location="cpu") -> Tuple[MaskedWavLM, dict]:
    """Inverse of `save_model`: returns (model, extra). Needs no original checkpoint."""
    payload = read_checkpoint(path, map_location)
    if not isinstance(payload, dict) or payload.get("format") != FILE_FORMAT:
        raise ValueError(f"{path} is not a model file written by checkpoints.save_model() (no "
                         f"format tag {FILE_FORMAT!r}); to import a pretrained checkpoint use "
                         f"pretrained.load_pretrained()")
    model = MaskedWavLM(WavLMConfig.from_dict(payload["config"]))
    load_state_exactly(model, payload["state_dict"], path)
    return model, payload["extra"]


def read_checkpoint(path, map_location="cpu"):
    """Checkpoints are untrusted input: tensors and plain containers only, no pickled code.
    The errors are our own words: torch's advice to retry with weights_only=False would
    run whatever code the file holds."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:      # truncated zip, foreign pickle, non-torch file, ...
        with open(path, "rb") as f:
            head = f.read(4)
        # torch.save writes a zip archive (magic "PK\x03\x04"); torch < 1.6 wrote a bare
        # pickle stream (first byte 0x80, the pickle protocol marker).
        is_torch_file = head == b"PK\x03\x04" or head[:1] == b"\x80"
        if (is_torch_file and isinstance(e, pickle.UnpicklingError)
                and "Weights only load failed" in str(e)):
            why = ("it holds pickled Python objects other than tensors and plain containers, "
                   "which are refused because loading them can run code; save a plain state "
                   "dict instead")
        elif is_torch_file:
            why = "it is truncated or damaged (download or copy it again)"
        else:
            why = "it is not a PyTorch checkpoint (check the path)"
        raise ValueError(f"cannot read checkpoint {path}: {why}") from None


def load_state_exactly(model: nn.Module, state_dict: dict, source: str):
    """load_state_dict(strict=True), but with an error that lists every problem at once."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    shapes = [f"{k}: file {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        msg = [f"checkpoint {source} does not match the model architecture:"]
        if missing:
            msg.append(f"  missing keys ({len(missing)}): "
                       f"{missing[:20]}{' ...' if len(missing) > 20 else ''}")
        if unexpected:
            msg.append(f"  unexpected keys ({len(unexpected)}): "
                       f"{unexpected[:20]}{' ...' if len(unexpected) > 20 else ''}")
        if shapes:
            msg.append(f"  shape mismatches ({len(shapes)}): {shapes[:20]}")
        raise ValueError("\n".join(msg))
    model.load_state_dict(state_dict, strict=True)


# ------------------------------------------------------------- training checkpoints


def save_checkpoint(path, step, model, lambdas, optimizer, lambda_optimizer, args: dict, attempts):
    """Everything needed to continue bit-for-bit: weights, gates, multipliers, optimiser
    states, RNG states, data position (= step), and the attempts so far. Tensors and
    plain values only, so the file loads with weights_only=True."""
    state = {"step": step, "model": model.state_dict(), "ssl_config": model.ssl.config.to_dict(),
             "lambdas": lambdas.detach().cpu(), "optimizer": optimizer.state_dict(),
             "lambda_optimizer": lambda_optimizer.state_dict(), "torch_rng": torch.get_rng_state(),
             "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
             "args": args, "attempts": attempts}
    atomic_torch_save(state, path)


def load_checkpoint(path, model, lambdas, optimizer, lambda_optimizer):
    """Restore what save_checkpoint wrote -> (the step to continue from, attempts)."""
    state = read_checkpoint(path)
    load_state_exactly(model, state["model"], path)
    with torch.no_grad():
        lambdas.copy_(state["lambdas"])
    optimizer.load_state_dict(state["optimizer"])
    lambda_optimizer.load_state_dict(state["lambda_optimizer"])
    torch.set_rng_state(state["torch_rng"])
    if state["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    return state["step"], state.get("attempts", [])


# ------------------------------------------------------ averaging the last snapshots
def snapshot_path(out, step: int) -> str:
    return os.path.join(out, f"snapshot_{step}.pt")


def save_snapshot(out, step: int, model: nn.Module):
    atomic_torch_save({k: v.detach().cpu() for k, v in model.state_dict().items()},
                      snapshot_path(out, step))


def average_state_dicts(states: list, fixed=lambda key: False) -> dict:
    """The element-wise mean of several state dicts of one architecture (accumulated in
    float64, stored in each tensor's own dtype). Keys for which `fixed(key)` holds (the
    gate logits) and integer tensors must be equal in all of them: they are taken as
    they are, so that the average keeps the structure exactly."""
    out = {}
    for key, first in states[0].items():
        values = [s[key] for s in states]
        if fixed(key) or not first.is_floating_point():
            if not all(torch.equal(first, v) for v in values[1:]):
                raise ValueError(f"cannot average: {key} differs between the snapshots (the "
                                 f"structure changed between them)")
            out[key] = first.clone()
        else:
            out[key] = (sum(v.double() for v in values) / len(values)).to(first.dtype)
    return out


def load_averaged_snapshots(out, steps: list, model: nn.Module):
    """Load the mean of the snapshots at `steps` into `model` (gate logits must agree)."""
    states = [read_checkpoint(snapshot_path(out, s)) for s in steps]
    averaged = average_state_dicts(states, fixed=lambda key: key.endswith("log_alpha"))
    load_state_exactly(model, averaged, f"the average of {len(steps)} snapshots in {out}")
