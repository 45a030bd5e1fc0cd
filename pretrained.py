"""
Loading pretrained WavLM / HuBERT / wav2vec 2.0 checkpoints into our MaskedWavLM.

Three file formats hold the same weights under different names (docs/method.md Sec. 5):
  * unilm / Microsoft .pt: {'cfg': fairseq-style config, 'model': state dict};
  * a Hugging Face folder: config.json + model.safetensors / pytorch_model.bin;
  * a torchaudio bundle .pth: a bare state dict with a fused q/k/v projection.
Each is mapped to our names with explicit rules, the architecture is read from the
file's own config (or, for torchaudio, from the tensor shapes), and loading fails
loudly: any missing, unexpected or mis-shaped tensor is listed. Nothing is skipped
silently and no load is ever non-strict. Files are read with weights_only=True.

This is its own file because it is its own concept (file formats and key maps), and
wavlm_masked.py stays about the model.
"""

import ast
import json
import os
import re
from typing import List, Optional, Tuple

import torch

from checkpoints import load_state_exactly, read_checkpoint
from wavlm_masked import STANDARD_CONV_LAYERS, MaskedWavLM, WavLMConfig

# Keys that only the pre-training objective uses (mask embedding, cluster embeddings,
# final projection to targets). Dropping them is deliberate and the list is explicit:
# anything else unexpected is an error.
PRETRAINING_ONLY = re.compile(r"^(mask_emb|masked_spec_embed|label_embs_concat|final_proj\..*|"
                              r"quantizer\..*|project_q\..*|project_hid\..*|aux\..*)$")

# (pattern, replacement) per format, applied to the FIRST matching pattern.
HF_RULES = [
    (r"^feature_extractor\.conv_layers\.(\d+)\.conv\.(weight|bias)$",
     r"feature_extractor.conv_layers.\1.conv.\2"),
    (r"^feature_extractor\.conv_layers\.(\d+)\.layer_norm\.(weight|bias)$",
     r"feature_extractor.conv_layers.\1.norm.\2"),
    (r"^feature_projection\.(layer_norm|projection)\.(weight|bias)$", r"feature_projection.\1.\2"),
    (r"^encoder\.pos_conv_embed\.conv\.(weight_g|parametrizations\.weight\.original0)$",
     r"encoder.pos_conv.weight_g"),
    (r"^encoder\.pos_conv_embed\.conv\.(weight_v|parametrizations\.weight\.original1)$",
     r"encoder.pos_conv.weight_v"),
    (r"^encoder\.pos_conv_embed\.conv\.bias$", r"encoder.pos_conv.bias"),
    (r"^encoder\.layer_norm\.(weight|bias)$", r"encoder.layer_norm.\1"),
    (r"^encoder\.layers\.0\.attention\.rel_attn_embed\.weight$", r"encoder.rel_attn_embed.weight"),
    (r"^encoder\.layers\.(\d+)\.attention\.(q_proj|k_proj|v_proj|out_proj)\.(weight|bias)$",
     r"encoder.layers.\1.attention.\2.\3"),
    (r"^encoder\.layers\.(\d+)\.attention\.gru_rel_pos_linear\.(weight|bias)$",
     r"encoder.layers.\1.attention.gru_rel_pos_linear.\2"),
    (r"^encoder\.layers\.(\d+)\.attention\.gru_rel_pos_const$",
     r"encoder.layers.\1.attention.gru_rel_pos_const"),
    (r"^encoder\.layers\.(\d+)\.layer_norm\.(weight|bias)$",
     r"encoder.layers.\1.attention_layer_norm.\2"),
    (r"^encoder\.layers\.(\d+)\.feed_forward\.(intermediate_dense|output_dense)\.(weight|bias)$",
     r"encoder.layers.\1.feed_forward.\2.\3"),
    (r"^encoder\.layers\.(\d+)\.final_layer_norm\.(weight|bias)$",
     r"encoder.layers.\1.ffn_layer_norm.\2"),
]
UNILM_RULES = [
    (r"^feature_extractor\.conv_layers\.(\d+)\.0\.(weight|bias)$",
     r"feature_extractor.conv_layers.\1.conv.\2"),
    (r"^feature_extractor\.conv_layers\.0\.2\.(weight|bias)$",
     r"feature_extractor.conv_layers.0.norm.\1"),
    (r"^feature_extractor\.conv_layers\.(\d+)\.2\.1\.(weight|bias)$",
     r"feature_extractor.conv_layers.\1.norm.\2"),
    (r"^layer_norm\.(weight|bias)$", r"feature_projection.layer_norm.\1"),
    (r"^post_extract_proj\.(weight|bias)$", r"feature_projection.projection.\1"),
    (r"^encoder\.pos_conv\.0\.(weight_g|parametrizations\.weight\.original0)$",
     r"encoder.pos_conv.weight_g"),
    (r"^encoder\.pos_conv\.0\.(weight_v|parametrizations\.weight\.original1)$",
     r"encoder.pos_conv.weight_v"),
    (r"^encoder\.pos_conv\.0\.bias$", r"encoder.pos_conv.bias"),
    (r"^encoder\.layer_norm\.(weight|bias)$", r"encoder.layer_norm.\1"),
    (r"^encoder\.layers\.0\.self_attn\.relative_attention_bias\.weight$",
     r"encoder.rel_attn_embed.weight"),
    (r"^encoder\.layers\.(\d+)\.self_attn\.(q_proj|k_proj|v_proj|out_proj)\.(weight|bias)$",
     r"encoder.layers.\1.attention.\2.\3"),
    (r"^encoder\.layers\.(\d+)\.self_attn\.grep_linear\.(weight|bias)$",
     r"encoder.layers.\1.attention.gru_rel_pos_linear.\2"),
    (r"^encoder\.layers\.(\d+)\.self_attn\.grep_a$",
     r"encoder.layers.\1.attention.gru_rel_pos_const"),
    (r"^encoder\.layers\.(\d+)\.self_attn_layer_norm\.(weight|bias)$",
     r"encoder.layers.\1.attention_layer_norm.\2"),
    (r"^encoder\.layers\.(\d+)\.fc1\.(weight|bias)$",
     r"encoder.layers.\1.feed_forward.intermediate_dense.\2"),
    (r"^encoder\.layers\.(\d+)\.fc2\.(weight|bias)$",
     r"encoder.layers.\1.feed_forward.output_dense.\2"),
    (r"^encoder\.layers\.(\d+)\.final_layer_norm\.(weight|bias)$",
     r"encoder.layers.\1.ffn_layer_norm.\2"),
]


# Our names -> unilm's: the way back, for writing a checkpoint (pretrain.py) that the
# original WavLM code and load_pretrained both read. The CNN norms depend on the extractor:
# "default" (Base) has one GroupNorm, at index 2 of layer 0's Sequential(conv, dropout,
# norm, GELU); "layer_norm" (Large) has a LayerNorm in every layer, wrapped in a
# Sequential(transpose, norm, transpose) at index 2, hence ".2.1.".
TO_UNILM_RULES = [
    (r"^feature_extractor\.conv_layers\.(\d+)\.conv\.", r"feature_extractor.conv_layers.\1.0."),
    (r"^feature_projection\.layer_norm\.", "layer_norm."),
    (r"^feature_projection\.projection\.", "post_extract_proj."),
    (r"^encoder\.pos_conv\.(weight_g|weight_v|bias)$", r"encoder.pos_conv.0.\1"),
    (r"^encoder\.layer_norm\.", "encoder.layer_norm."),
    (r"^encoder\.rel_attn_embed\.weight$",
     "encoder.layers.0.self_attn.relative_attention_bias.weight"),
    (r"^encoder\.layers\.(\d+)\.attention\.gru_rel_pos_linear\.",
     r"encoder.layers.\1.self_attn.grep_linear."),
    (r"^encoder\.layers\.(\d+)\.attention\.gru_rel_pos_const$",
     r"encoder.layers.\1.self_attn.grep_a"),
    (r"^encoder\.layers\.(\d+)\.attention\.(q_proj|k_proj|v_proj|out_proj)\.",
     r"encoder.layers.\1.self_attn.\2."),
    (r"^encoder\.layers\.(\d+)\.attention_layer_norm\.",
     r"encoder.layers.\1.self_attn_layer_norm."),
    (r"^encoder\.layers\.(\d+)\.feed_forward\.intermediate_dense\.", r"encoder.layers.\1.fc1."),
    (r"^encoder\.layers\.(\d+)\.feed_forward\.output_dense\.", r"encoder.layers.\1.fc2."),
    (r"^encoder\.layers\.(\d+)\.ffn_layer_norm\.", r"encoder.layers.\1.final_layer_norm."),
]


def unilm_checkpoint(model: MaskedWavLM, mask_emb: torch.Tensor, **extra_cfg) -> dict:
    """A dense model as {'cfg', 'model'} in the layout of Microsoft's WavLM releases
    (WavLM-Base+.pt): unilm key names, the mask embedding, and a cfg with the fields
    their WavLMConfig reads. `extra_cfg` adds fields (e.g. the pre-training's mask_prob).
    A pruned or gated model has no unilm form (its layers differ in width): ValueError."""
    c = model.config
    dense = WavLMConfig(**{**c.to_dict(), "heads": None, "ffn_dims": None,
                           "attention_blocks": None, "ffn_blocks": None, "prune_units": []})
    if c.prune_units or c.to_dict() != dense.to_dict():
        raise ValueError("only a dense model without gates can be written as a unilm "
                         "checkpoint; save a pruned model with checkpoints.save_model()")
    norm = (r"feature_extractor.conv_layers.\1.2." if c.extractor_mode == "group_norm"
            else r"feature_extractor.conv_layers.\1.2.1.")
    rules = [(r"^feature_extractor\.conv_layers\.(\d+)\.norm\.", norm)] + TO_UNILM_RULES
    state = {}
    for key, value in model.state_dict().items():
        if key == "encoder.bucket_table" or key.endswith("log_alpha"):
            continue
        for pattern, repl in rules:
            if re.match(pattern, key):
                state[re.sub(pattern, repl, key, count=1)] = value.detach().cpu().clone()
                break
        else:
            raise ValueError(f"no unilm name for {key}")
    state["mask_emb"] = mask_emb.detach().cpu().clone()
    cfg = dict(extractor_mode="default" if c.extractor_mode == "group_norm" else "layer_norm",
               encoder_layers=c.num_layers, encoder_embed_dim=c.hidden_size,
               encoder_ffn_embed_dim=c.ffn_dim, encoder_attention_heads=c.num_heads,
               activation_fn="gelu", layer_norm_first=c.layer_norm_first,
               conv_feature_layers=str([tuple(layer) for layer in c.conv_layers]),
               conv_bias=c.conv_bias, normalize=c.normalize_waveform, conv_pos=c.pos_conv_kernel,
               conv_pos_groups=c.pos_conv_groups, relative_position_embedding=c.relative_position,
               num_buckets=c.num_buckets, max_distance=c.max_distance,
               gru_rel_pos=c.relative_position, **extra_cfg)
    return {"cfg": cfg, "model": state}


def _torchaudio_to_hf_names(sd: dict) -> dict:
    """torchaudio = HF names with `encoder.transformer.` and a fused in_proj (cat(q, k, v))."""
    out = {}
    for k, v in sd.items():
        k2 = k.replace("encoder.transformer.", "encoder.")
        k2 = k2.replace("encoder.feature_projection.", "feature_projection.")
        m = re.match(r"^encoder\.layers\.(\d+)\.attention\.attention\.in_proj_(weight|bias)$", k2)
        if m:
            for name, part in zip(("q_proj", "k_proj", "v_proj"), v.chunk(3, dim=0)):
                out[f"encoder.layers.{m[1]}.attention.{name}.{m[2]}"] = part
            continue
        k2 = re.sub(r"\.attention\.attention\.out_proj\.", ".attention.out_proj.", k2)
        out[k2] = v
    return out


def _rename(sd: dict, rules) -> Tuple[dict, List[str]]:
    out, unexpected = {}, []
    for key, value in sd.items():
        if PRETRAINING_ONLY.match(key):
            continue
        for pattern, repl in rules:
            if re.match(pattern, key):
                out[re.sub(pattern, repl, key)] = value
                break
        else:
            unexpected.append(key)
    return out, unexpected


def parse_conv_layers(text: str) -> List[Tuple[int, int, int]]:
    """Parse fairseq's `conv_feature_layers`, e.g. "[(512,10,5)] + [(512,3,2)] * 4",
    WITHOUT eval(): only list/tuple literals of ints, `+` and `* int` are accepted."""
    def ev(node):
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, (ast.List, ast.Tuple)):
            return [ev(e) for e in node.elts]
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return node.value
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            return ev(node.left) + ev(node.right)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult):
            left, right = ev(node.left), ev(node.right)
            if isinstance(left, list) and isinstance(right, int):
                return left * right
        raise ValueError(f"unsupported expression in conv_feature_layers: {text!r}")
    layers = ev(ast.parse(text, mode="eval"))
    return [(int(c), int(k), int(s)) for c, k, s in layers]


def config_from_unilm(cfg: dict) -> WavLMConfig:
    g = lambda k, default: cfg.get(k, default)
    return WavLMConfig(
        extractor_mode="layer_norm" if g("extractor_mode", "default") == "layer_norm"
                       else "group_norm",
        conv_layers=parse_conv_layers(g("conv_feature_layers", str(STANDARD_CONV_LAYERS))),
        conv_bias=bool(g("conv_bias", False)), hidden_size=int(g("encoder_embed_dim", 768)),
        num_layers=int(g("encoder_layers", 12)), num_heads=int(g("encoder_attention_heads", 12)),
        ffn_dim=int(g("encoder_ffn_embed_dim", 3072)),
        layer_norm_first=bool(g("layer_norm_first", False)),
        pos_conv_kernel=int(g("conv_pos", 128)), pos_conv_groups=int(g("conv_pos_groups", 16)),
        relative_position=bool(g("relative_position_embedding", False)),
        num_buckets=int(g("num_buckets", 320)), max_distance=int(g("max_distance", 1280)),
        normalize_waveform=bool(g("normalize", False)))


def config_from_hf(cfg: dict) -> WavLMConfig:
    model_type = cfg.get("model_type", "wavlm")
    if model_type not in ("wavlm", "hubert", "wav2vec2"):
        raise ValueError(f"config.json has model_type {model_type!r}; "
                         f"expected wavlm, hubert or wav2vec2")
    return WavLMConfig(
        extractor_mode="layer_norm" if cfg.get("feat_extract_norm", "group") == "layer"
                       else "group_norm",
        conv_layers=list(zip(cfg["conv_dim"], cfg["conv_kernel"], cfg["conv_stride"])),
        conv_bias=bool(cfg.get("conv_bias", False)), hidden_size=int(cfg["hidden_size"]),
        num_layers=int(cfg["num_hidden_layers"]), num_heads=int(cfg["num_attention_heads"]),
        ffn_dim=int(cfg["intermediate_size"]),
        layer_norm_first=bool(cfg.get("do_stable_layer_norm", False)),
        pos_conv_kernel=int(cfg.get("num_conv_pos_embeddings", 128)),
        pos_conv_groups=int(cfg.get("num_conv_pos_embedding_groups", 16)),
        relative_position=model_type == "wavlm", num_buckets=int(cfg.get("num_buckets", 320)),
        max_distance=int(cfg.get("max_bucket_distance", 800)),
        layer_norm_eps=float(cfg.get("layer_norm_eps", 1e-5)),
        # the releases' preprocessor_config.json says it (read by load_pretrained); without
        # one, the convention of every release: Large-style extractors normalise
        normalize_waveform=cfg.get("feat_extract_norm", "group") == "layer")


def config_from_torchaudio(sd: dict) -> WavLMConfig:
    """A torchaudio bundle file is a bare state dict: read the architecture off the shapes.
    Three facts are not in the shapes and follow the public checkpoints' convention: the
    standard conv strides (5, 2, 2, 2, 2, 2, 2) and head_dim 64; pre-LN, and waveforms
    normalised per utterance, iff the extractor uses LayerNorm (true of every WavLM,
    HuBERT and wav2vec 2.0 release: torchaudio's Large bundles normalise, Base ones do not)."""
    pre = "encoder.transformer."
    try:
        n_conv = len([k for k in sd
                      if re.match(r"^feature_extractor\.conv_layers\.\d+\.conv\.weight$", k)])
        convs = [tuple(sd[f"feature_extractor.conv_layers.{i}.conv.weight"].shape)
                 for i in range(n_conv)]
        strides = [5, 2, 2, 2, 2, 2, 2] if n_conv == 7 else None
        if strides is None:
            raise ValueError(f"{n_conv} conv layers: only the standard 7-layer extractor "
                             f"can be read from a bare torchaudio state dict")
        layer_norm = "feature_extractor.conv_layers.1.layer_norm.weight" in sd
        E = sd["encoder.feature_projection.projection.weight"].shape[0]
        n_layers = len({m[1] for k in sd
                        for m in [re.match(rf"^{re.escape(pre)}layers\.(\d+)\.", k)] if m})
        v = sd.get(pre + "pos_conv_embed.conv.parametrizations.weight.original1",
                   sd.get(pre + "pos_conv_embed.conv.weight_v"))
        rel = pre + "layers.0.attention.rel_attn_embed.weight"
        heads = sd[pre + "layers.0.attention.gru_rel_pos_const"].shape[1] if rel in sd else E // 64
        return WavLMConfig(
            extractor_mode="layer_norm" if layer_norm else "group_norm",
            conv_layers=[(c[0], c[2], s) for c, s in zip(convs, strides)],
            conv_bias="feature_extractor.conv_layers.0.conv.bias" in sd, hidden_size=E,
            num_layers=n_layers, num_heads=heads,
            ffn_dim=sd[pre + "layers.0.feed_forward.intermediate_dense.weight"].shape[0],
            layer_norm_first=layer_norm, normalize_waveform=layer_norm, pos_conv_kernel=v.shape[2],
            pos_conv_groups=E // v.shape[1], relative_position=rel in sd,
            num_buckets=sd[rel].shape[0] if rel in sd else 320, max_distance=800)
    except (KeyError, AttributeError) as e:
        raise ValueError(f"not a torchaudio WavLM/HuBERT/wav2vec 2.0 state dict: "
                         f"cannot find {e}") from None


def torchaudio_wavlm(config: WavLMConfig) -> torch.nn.Module:
    """The torchaudio model (`torchaudio.models.wavlm_model`) with the architecture of
    `config` and every dropout at 0: the reference that the oracle tests and the
    benchmarks compare our model against, and a way to write a torchaudio .pth."""
    import torchaudio
    c = config
    return torchaudio.models.wavlm_model(
        extractor_mode=c.extractor_mode, extractor_conv_layer_config=c.conv_layers,
        extractor_conv_bias=c.conv_bias, encoder_embed_dim=c.hidden_size,
        encoder_projection_dropout=0.0, encoder_pos_conv_kernel=c.pos_conv_kernel,
        encoder_pos_conv_groups=c.pos_conv_groups, encoder_num_layers=c.num_layers,
        encoder_num_heads=c.num_heads, encoder_num_buckets=c.num_buckets,
        encoder_max_distance=c.max_distance, encoder_attention_dropout=0.0,
        encoder_ff_interm_features=c.ffn_dim, encoder_ff_interm_dropout=0.0, encoder_dropout=0.0,
        encoder_layer_norm_first=c.layer_norm_first, encoder_layer_drop=0.0, aux_num_out=None)


def perturb_norms_and_biases_(model: torch.nn.Module) -> torch.nn.Module:
    """Add noise to every LayerNorm/GroupNorm, bias and gated-bias constant of a freshly
    built reference model (in place; returns it in eval mode). Fresh norms are 1 and 0
    and fresh biases often 0, so a comparison with random weights would not notice a
    norm or bias that our model mishandles; pretrained ones are never that tidy."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("bias") or "gru_rel_pos_const" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def torchaudio_hidden_states(ref: torch.nn.Module, waves: torch.Tensor, layer_norm_first: bool,
                             normalize_waveform: bool = False) -> List[torch.Tensor]:
    """A torchaudio WavLM's L+1 hidden states in our model's convention (the input to
    layer 0, then each layer's output), to compare with MaskedWavLM's first return value.
    torchaudio's extract_features returns only the L layer outputs, and for pre-LN models
    without the encoder's final LayerNorm, which our last hidden state includes.
    `layer_norm_first`: the config's flag (torchaudio's own attribute of that name does
    not follow it for WavLM). `normalize_waveform`: normalise each utterance first, as
    torchaudio's Large bundles do (a layer norm over the samples)."""
    if normalize_waveform:
        waves = torch.nn.functional.layer_norm(waves, waves.shape[-1:])
    layers, _ = ref.extract_features(waves)                               # L x (B, T, E)
    if layer_norm_first:
        layers[-1] = ref.encoder.transformer.layer_norm(layers[-1])
    first = ref.encoder.transformer._preprocess(
        ref.encoder._preprocess(ref.feature_extractor(waves, None)[0])[0])  # (B, T, E)
    return [first] + list(layers)


# Short names -> torchaudio bundle files (they need no config: see config_from_torchaudio).
PRETRAINED_FILES = {"wavlm_base": "wavlm_base.pth", "wavlm_base_plus": "wavlm_base_plus.pth",
                    "wavlm_large": "wavlm_large.pth",
                    "hubert_base": "hubert_fairseq_base_ls960.pth"}
PRETRAINED_URL = "https://download.pytorch.org/torchaudio/models/"


def _resolve_short_name(name: str) -> str:
    filename = PRETRAINED_FILES[name]
    path = os.path.join(torch.hub.get_dir(), "checkpoints", filename)
    if os.path.exists(path):
        return path
    os.makedirs(os.path.dirname(path), exist_ok=True)
    try:
        torch.hub.download_url_to_file(PRETRAINED_URL + filename, path, progress=True)
    except Exception as e:
        raise FileNotFoundError(
            f"pretrained model {name!r} is not cached and could not be downloaded "
            f"({type(e).__name__}: {e}).\n"
            f"Download {PRETRAINED_URL + filename} on a machine with internet access "
            f"and put it at\n"
            f"  {path}\nor pass the path of a unilm .pt, a Hugging Face model folder "
            f"or a torchaudio .pth to --ssl.") from None
    return path


def load_pretrained(source: str, prune_units=(), init_drop_rates: Optional[dict] = None,
                    **config_overrides) -> MaskedWavLM:
    """Build a MaskedWavLM from a pretrained checkpoint, with fresh gates on `prune_units`.

    source: a unilm .pt ({'cfg', 'model'}), a Hugging Face folder (config.json +
    pytorch_model.bin / model.safetensors), a torchaudio .pth state dict, or a short
    name in PRETRAINED_FILES. Every key is mapped explicitly; a missing, unexpected or
    mis-shaped tensor raises an error listing all of them.
    """
    source = os.fspath(source)
    if source in PRETRAINED_FILES:
        source = _resolve_short_name(source)
    if os.path.isdir(source):
        cfg_path = os.path.join(source, "config.json")
        if not os.path.exists(cfg_path):
            raise FileNotFoundError(f"{source} is a folder but has no config.json: "
                                    f"not a Hugging Face model folder")
        with open(cfg_path) as f:
            config = config_from_hf(json.load(f))
        preprocessor = os.path.join(source, "preprocessor_config.json")
        if os.path.exists(preprocessor):
            with open(preprocessor) as f:
                config.normalize_waveform = bool(json.load(f).get("do_normalize",
                                                                  config.normalize_waveform))
        st_path, bin_path = (os.path.join(source, "model.safetensors"),
                             os.path.join(source, "pytorch_model.bin"))
        if os.path.exists(st_path):
            from safetensors.torch import load_file
            raw = load_file(st_path)
        elif os.path.exists(bin_path):
            raw = read_checkpoint(bin_path)
        else:
            raise FileNotFoundError(f"{source} has neither model.safetensors nor pytorch_model.bin")
        # A saved *ForXVector/*ForCTC model prefixes the backbone's keys; take the backbone.
        raw = {re.sub(r"^(wavlm|hubert|wav2vec2)\.", "", k): v for k, v in raw.items()}
        state, unexpected = _rename(raw, HF_RULES)
    elif os.path.isfile(source):
        raw = read_checkpoint(source)
        if isinstance(raw, dict) and "cfg" in raw and "model" in raw:           # unilm / Microsoft
            cfg = raw["cfg"]
            config = config_from_unilm(cfg if isinstance(cfg, dict) else vars(cfg))
            state, unexpected = _rename(raw["model"], UNILM_RULES)
        elif isinstance(raw, dict) and any(k.startswith("encoder.transformer.") for k in raw):
            config = config_from_torchaudio(raw)
            state, unexpected = _rename(_torchaudio_to_hf_names(raw), HF_RULES)
        else:
            keys = list(raw)[:10] if isinstance(raw, dict) else type(raw).__name__
            raise ValueError(f"{source}: unrecognised checkpoint layout (first keys: {keys}); "
                             f"expected a unilm .pt with 'cfg' and 'model', a torchaudio state "
                             f"dict or a HF folder")
    else:
        raise FileNotFoundError(f"pretrained source {source!r} is neither a file, a folder "
                                f"nor one of {sorted(PRETRAINED_FILES)}")
    for k, v in config_overrides.items():
        setattr(config, k, v)
    config.prune_units = list(prune_units)
    if init_drop_rates:
        config.init_drop_rates.update(init_drop_rates)
    config.__post_init__()
    model = MaskedWavLM(config)
    # Gate logits are not in any pretrained file: take the freshly initialised ones.
    gate_state = {k: v for k, v in model.state_dict().items() if k.endswith("log_alpha")}
    if unexpected:
        raise ValueError(f"{source}: unexpected keys that map to no part of the model: "
                         f"{unexpected[:20]}")
    load_state_exactly(model, {**state, **gate_state}, source)
    return model


# -------------------------------------------------------------- what --ssl names
def small_sparsity(ssl):
    """For --ssl tiny-small:S, the sparsity S whose size the small dense model matches;
    None for any other --ssl, False for a malformed tiny-small name."""
    if not isinstance(ssl, str) or not ssl.startswith("tiny-small"):
        return None
    try:
        s = float(ssl.split(":", 1)[1])
    except (IndexError, ValueError):
        return False
    return s if 0.0 < s < 1.0 else False


def build_ssl(name: str, prune_units, seed: int) -> MaskedWavLM:
    """The gated SSL model that --ssl names: a pre-trained checkpoint (short name or path),
    the random 'tiny' model, or 'tiny-small:S', the dense tiny-family model with as many
    parameters as the tiny model pruned to sparsity S (the baseline "train a small model
    instead"). Seeded, so that the gate (and tiny model) initialisation is the same on
    every run and every rank."""
    small = small_sparsity(name)
    torch.manual_seed(seed)
    if small:
        dense = MaskedWavLM(WavLMConfig.tiny()).num_params()
        return MaskedWavLM(WavLMConfig.tiny_small(round((1.0 - small) * dense)))
    if name == "tiny":
        return MaskedWavLM(WavLMConfig.tiny(prune_units=prune_units))
    return load_pretrained(name, prune_units=prune_units)
