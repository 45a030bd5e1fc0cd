"""
A prunable WavLM: our own readable implementation, with a HardConcrete gate on every
structure the seed paper prunes, an exact differentiable model-size estimate, and a
`prune()` that cuts the model down to a smaller dense WavLM computing the same thing.

Papers:
  * WavLM: S. Chen et al., "WavLM: Large-Scale Self-Supervised Pre-Training for Full
    Stack Speech Processing", IEEE JSTSP 2022 (arXiv 2110.13900), Sec. III-B (gated
    relative position bias, eq. 5-7).
  * Seed paper: Peng et al. 2025, "Hybrid Pruning: In-Situ Compression of
    Self-Supervised Speech Models for Speaker Verification and Anti-Spoofing"
    (arXiv 2508.16232), Sec. 2: gates on CNN channels, attention heads, whole
    attention blocks, FFN units and whole FFN blocks; the hidden size is not pruned.
  * Structured-pruning parameterisation: Peng et al., "DPHuBERT", Interspeech 2023.

The same code serves HuBERT Base and wav2vec 2.0 Base (`relative_position=False`).

Where the gates sit, and why each one can be folded away exactly:

    waveform (B, S)
      -> conv block i:  conv -> [GroupNorm (block 0, Base) | LayerNorm (all, Large)] -> GELU
                        -> x z_conv_i                   (z folded into conv i+1's input)
      -> feature projection: LayerNorm -> x z_conv_last -> Linear   (z folded into Linear)
      -> + positional conv -> (post-LN: LayerNorm)
      -> layer l:  attention: heads x z_head -> out_proj -> x z_att   (both folded into out_proj)
                   FFN:       GELU(W1 x) x z_unit -> W2 -> x z_ffn      (both folded into W2)

Two traps make naive pruning inexact (docs/method.md Sec. 4); this design avoids both:
  1. A LayerNorm over conv channels computes its mean and variance over ALL channels,
     so zeroing a channel changes the statistics of the others, while removing it does
     not. Our LayerNorms over channels therefore use statistics over the *kept*
     channels only (`masked_layer_norm`). For the last conv block the gate acts after
     the feature-projection LayerNorm, where it can be folded into the projection.
  2. WavLM's relative-position embedding lives in layer 0's attention in the reference
     code; removing that block would silently remove the bias of every later layer.
     Here the embedding belongs to the encoder and every layer gets the full bias.
"""

import copy
import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from hardconcrete import HardConcrete

# The library's version: recorded in exported models (export.py) to say which code
# produced them. Bump it when a change alters what a saved model computes.
__version__ = "0.1.0"

PRUNE_UNITS = ("conv", "head", "attlayer", "interm", "ffnlayer")
# The seed paper's initial drop rates: start almost fully "on", except FFN units at 0.5.
DEFAULT_INIT_DROP_RATES = {"conv": 0.01, "head": 0.01, "attlayer": 0.01, "interm": 0.5,
                           "ffnlayer": 0.01}
STANDARD_CONV_LAYERS = [(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512, 2, 2)] * 2


# ----------------------------------------------------------------------------- config
@dataclass
class WavLMConfig:
    """Architecture of one (possibly pruned) model, plus which gates it carries.

    The last five fields describe a pruned model; None means "as dense as the rest of
    the config says". A config only holds plain Python values, so it is saved as-is.
    """
    extractor_mode: str = "group_norm"          # "group_norm" (Base) or "layer_norm" (Large)
    conv_layers: List[Tuple[int, int, int]] = field(default_factory=lambda:
                                                    list(STANDARD_CONV_LAYERS))
    conv_bias: bool = False
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12                          # heads of the ORIGINAL model: fixes head_dim
    ffn_dim: int = 3072
    layer_norm_first: bool = False               # False: post-LN (Base); True: pre-LN (Large)
    pos_conv_kernel: int = 128
    pos_conv_groups: int = 16
    relative_position: bool = True               # WavLM gated relative position bias
    num_buckets: int = 320
    max_distance: int = 800
    layer_norm_eps: float = 1e-5
    # Zero mean and unit variance per utterance before the CNN: the Large checkpoints were
    # pre-trained on normalised waveforms (unilm cfg "normalize", HF "do_normalize").
    normalize_waveform: bool = False
    dropout: float = 0.0                         # after projection, attention and FFN blocks
    attention_dropout: float = 0.0
    activation_dropout: float = 0.0
    # --- pruned structure, per transformer layer
    heads: Optional[List[List[int]]] = None      # indices (into the original heads) still there
    ffn_dims: Optional[List[int]] = None         # FFN width of each layer
    attention_blocks: Optional[List[bool]] = None
    ffn_blocks: Optional[List[bool]] = None
    # --- gates
    prune_units: List[str] = field(default_factory=list)
    init_drop_rates: Dict[str, float] = field(default_factory=lambda: dict(DEFAULT_INIT_DROP_RATES))

    def __post_init__(self):
        self.conv_layers = [tuple(int(v) for v in layer) for layer in self.conv_layers]
        L = self.num_layers
        if self.heads is None:
            self.heads = [list(range(self.num_heads)) for _ in range(L)]
        if self.ffn_dims is None:
            self.ffn_dims = [self.ffn_dim] * L
        if self.attention_blocks is None:
            self.attention_blocks = [True] * L
        if self.ffn_blocks is None:
            self.ffn_blocks = [True] * L
        self.heads = [[int(h) for h in hs] for hs in self.heads]
        self.prune_units = list(self.prune_units)
        unknown = set(self.prune_units) - set(PRUNE_UNITS)
        if unknown:
            raise ValueError(f"unknown prune units {sorted(unknown)}; choose from {PRUNE_UNITS}")
        self.init_drop_rates = {**DEFAULT_INIT_DROP_RATES, **self.init_drop_rates}
        if self.extractor_mode not in ("group_norm", "layer_norm"):
            raise ValueError(f"extractor_mode must be 'group_norm' or 'layer_norm', "
                             f"got {self.extractor_mode!r}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible "
                             f"by num_heads {self.num_heads}")
        for name in ("heads", "ffn_dims", "attention_blocks", "ffn_blocks"):
            if len(getattr(self, name)) != L:
                raise ValueError(f"config.{name} has {len(getattr(self, name))} entries, "
                                 f"expected num_layers={L}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "WavLMConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown WavLMConfig fields {sorted(unknown)}: the file was written "
                             f"by another program or another version of this library")
        return cls(**d)

    # --- presets (architectures of the public checkpoints)
    @classmethod
    def wavlm_base(cls, **kw):
        return cls(**kw)

    @classmethod
    def wavlm_base_plus(cls, **kw):
        return cls(**kw)    # same architecture as Base; more and more varied pre-training data

    @classmethod
    def wavlm_large(cls, **kw):
        return cls(**{**dict(extractor_mode="layer_norm", hidden_size=1024, num_layers=24,
                             num_heads=16, ffn_dim=4096, layer_norm_first=True), **kw})

    @classmethod
    def hubert_base(cls, **kw):
        return cls(**{**dict(relative_position=False), **kw})

    @classmethod
    def wav2vec2_base(cls, **kw):
        return cls(**{**dict(relative_position=False), **kw})

    @classmethod
    def tiny(cls, **kw):
        """A small WavLM for CPU experiments and tests (same 320-sample frame hop)."""
        convs = [(64, 10, 5), (64, 3, 2), (64, 3, 2), (64, 3, 2), (64, 3, 2), (64, 2, 2),
                 (64, 2, 2)]
        return cls(**{**dict(conv_layers=convs, hidden_size=128, num_layers=4, num_heads=4,
                             ffn_dim=512, pos_conv_kernel=16, pos_conv_groups=4), **kw})

    @classmethod
    def tiny_small(cls, target_params: int, **kw):
        """A dense model of the tiny family with about `target_params` parameters: the
        "train a small model instead" baseline for a pruned tiny model of that size.

        There are many small models of a given size; this one keeps as much of the tiny
        model's shape as the budget allows and shrinks, in this order, the FFN width
        (the cheapest unit to give up, and the one pruning removes first), the number of
        layers, the CNN channels, and last the hidden size (which also shrinks every
        other part: attention, positional convolution, projection). Each candidate keeps
        32-dim attention heads and an FFN between 1x and 4x the hidden size (the tiny
        model's ratio), and the FFN width is solved so that the count hits the target:
        it is linear in the width, so two counts give the slope. The first candidate
        that works, in the order above, is returned; it lands within one FFN unit per
        layer (~0.1%) of the target. Below ~70k parameters nothing fits: ValueError.
        """
        for hidden in (128, 96, 64):
            for channels in (64, 48, 32):
                for layers in (4, 3, 2, 1):
                    convs = [(channels, k, s) for _, k, s in cls.tiny().conv_layers]
                    base = cls.tiny(**{**dict(hidden_size=hidden, num_heads=hidden // 32,
                                              num_layers=layers, conv_layers=convs), **kw})
                    n1 = MaskedWavLM(replace(base, ffn_dim=1, ffn_dims=None)).num_params()
                    n2 = MaskedWavLM(replace(base, ffn_dim=2, ffn_dims=None)).num_params()
                    ffn = round(1 + (target_params - n1) / (n2 - n1))
                    if hidden <= ffn <= 4 * hidden:
                        return replace(base, ffn_dim=ffn, ffn_dims=None)
        raise ValueError(f"no model of the tiny family has {target_params:,} parameters "
                         f"(the smallest has about 70k)")


# ----------------------------------------------------------------------- small pieces
def masked_layer_norm(x, keep, weight, bias, eps):
    """LayerNorm over the last dim of x (..., C), with statistics over kept channels only.

    keep: (C,) float 0/1 or None (= all kept). With every channel kept this IS
    F.layer_norm. With some dropped, it equals F.layer_norm applied to the kept channels
    alone, which is exactly what the physically pruned model computes (trap 1 above).
    """
    if keep is None or bool(keep.all()):
        return F.layer_norm(x, x.shape[-1:], weight, bias, eps)
    dtype = x.dtype
    x = x.float()                                   # statistics in fp32, also under bf16
    n = keep.sum().clamp(min=1.0)
    mean = (x * keep).sum(-1, keepdim=True) / n
    var = (((x - mean) * keep) ** 2).sum(-1, keepdim=True) / n
    y = (x - mean) * torch.rsqrt(var + eps) * weight + bias
    return y.to(dtype)


def normalize_waveforms(waveforms, lengths=None, eps=1e-5):
    """Each utterance to zero mean and unit variance over its own samples; padding (beyond
    `lengths`) stays 0, so a padded batch gives what each utterance gives alone. (B, S)."""
    if lengths is None:
        return F.layer_norm(waveforms, waveforms.shape[-1:], eps=eps)
    valid = (torch.arange(waveforms.shape[1], device=waveforms.device)[None, :]
             < lengths[:, None]).to(waveforms.dtype)                                # (B, S)
    count = lengths.to(waveforms.dtype)[:, None]                                    # (B, 1)
    mean = (waveforms * valid).sum(1, keepdim=True) / count
    var = ((waveforms - mean) * valid).pow(2).sum(1, keepdim=True) / count
    return (waveforms - mean) * torch.rsqrt(var + eps) * valid


def frame_lengths(lengths: torch.Tensor, conv_layers) -> torch.Tensor:
    """Valid output frames per item: L <- floor((L - kernel) / stride) + 1 per conv layer."""
    for _, kernel, stride in conv_layers:
        lengths = torch.div(lengths - kernel, stride, rounding_mode="floor") + 1
        lengths = lengths.clamp(min=0)
    return lengths


def distance_buckets(relative: torch.Tensor, num_buckets: int, max_distance: int) -> torch.Tensor:
    """Bucket index of each relative position (key - query), as in T5 and WavLM
    (bidirectional). Any shape in, the same shape out (long).

    Half the buckets are for keys after the query. Within each half, the first
    `exact` distances get one bucket each, the rest share log-spaced buckets up to
    max_distance (everything further lands in the last bucket).
    """
    half = num_buckets // 2
    buckets = (relative > 0).long() * half
    distance = relative.abs()
    exact = half // 2
    # clamp(min=1) only guards log(0); those entries take the `distance < exact` branch.
    log_ratio = torch.log(distance.clamp(min=1).float() / exact) / math.log(max_distance / exact)
    far = (exact + log_ratio * (half - exact)).long().clamp(max=half - 1)
    return buckets + torch.where(distance < exact, distance, far)


def relative_offsets(num_frames: int, max_distance: int, device) -> torch.Tensor:
    """(T, T) index into a table of the relative positions -max_distance .. +max_distance:
    clamp(key - query, -max_distance, max_distance) + max_distance.

    Every distance >= max_distance falls in the last bucket of its direction, so the
    clamp changes no bucket; it only makes the table finite. Integer arithmetic on
    arange(T) alone: no float, no branch on T, so it exports with a dynamic length.
    """
    positions = torch.arange(num_frames, device=device)
    relative = positions[None, :] - positions[:, None]                        # key - query, (T, T)
    return relative.clamp(-max_distance, max_distance) + max_distance


def relative_position_buckets(num_frames: int, num_buckets: int, max_distance: int,
                               device) -> torch.Tensor:
    """Bucket index of every (query, key) pair, (T, T): a look-up in the table of the
    2 * max_distance + 1 distinct relative positions (`distance_buckets`)."""
    offsets = torch.arange(-max_distance, max_distance + 1, device=device)
    table = distance_buckets(offsets, num_buckets, max_distance)          # (2 * max_distance + 1,)
    return table[relative_offsets(num_frames, max_distance, device)]


class WeightNormConv1d(nn.Module):
    """Conv1d with weight normalisation over dim 2 (Salimans & Kingma 2016), as in
    wav2vec 2.0's positional conv: weight = g * v / ||v||, one norm per kernel tap."""

    def __init__(self, channels: int, kernel: int, groups: int):
        super().__init__()
        self.groups = groups
        # A Python int, fixed here: padding read from weight.shape in forward() becomes a
        # traced value under torch.onnx.export, which conv1d refuses ("got padding=[]").
        self.padding = kernel // 2
        self.weight_g = nn.Parameter(torch.ones(1, 1, kernel))                 # (1, 1, K)
        self.weight_v = nn.Parameter(torch.empty(channels, channels // groups, kernel))
        self.bias = nn.Parameter(torch.zeros(channels))
        nn.init.normal_(self.weight_v, 0.0, math.sqrt(4.0 / (kernel * channels)))
        with torch.no_grad():
            self.weight_g.copy_(self.weight_v.norm(dim=(0, 1), keepdim=True))

    def forward(self, x):                                                       # (B, C, T)
        # = weight_v * (weight_g / ||weight_v||, norm over dims 0 and 1), as one fused
        # kernel: the unfused three-op version costs ~10x more time forward + backward.
        weight = torch._weight_norm(self.weight_v, self.weight_g, 2)
        return F.conv1d(x, weight, self.bias, padding=self.padding, groups=self.groups)


# ------------------------------------------------------------------- feature extractor
class ConvBlock(nn.Module):
    def __init__(self, cfg: WavLMConfig, index: int, in_channels: int):
        super().__init__()
        out_channels, kernel, stride = cfg.conv_layers[index]
        self.stride = stride
        self.conv = nn.Conv1d(in_channels, out_channels, kernel, stride=stride, bias=cfg.conv_bias)
        nn.init.kaiming_normal_(self.conv.weight)
        self.norm_kind = None
        if cfg.extractor_mode == "layer_norm":
            self.norm_kind = "layer"
            self.norm = nn.LayerNorm(out_channels, eps=cfg.layer_norm_eps)
        elif index == 0:
            # GroupNorm with one group per channel: per-channel statistics over time,
            # so removing a channel never changes the others (prunes exactly).
            self.norm_kind = "group"
            self.norm = nn.GroupNorm(out_channels, out_channels, eps=cfg.layer_norm_eps)
        self.channel_gate = (HardConcrete(out_channels, cfg.init_drop_rates["conv"], min_kept=1)
                             if "conv" in cfg.prune_units else None)

    def forward(self, x, apply_gate: bool = True):
        """x: (B, C_in, S) -> (B, C_out, S'), plus this block's gate z (C_out,) or None."""
        z = self.channel_gate() if self.channel_gate is not None else None
        x = self.conv(x)
        if self.norm_kind == "group":
            x = self.norm(x)
        elif self.norm_kind == "layer":
            keep = None if z is None else (z > 0).to(x.dtype)
            x = masked_layer_norm(x.transpose(1, 2), keep, self.norm.weight, self.norm.bias,
                                  self.norm.eps).transpose(1, 2)
        x = F.gelu(x)
        if z is not None and apply_gate:
            x = x * z[:, None].to(x.dtype)
        return x, z


class FeatureExtractor(nn.Module):
    def __init__(self, cfg: WavLMConfig):
        super().__init__()
        blocks, in_channels = [], 1
        for i in range(len(cfg.conv_layers)):
            blocks.append(ConvBlock(cfg, i, in_channels))
            in_channels = cfg.conv_layers[i][0]
        self.conv_layers = nn.ModuleList(blocks)

    def forward(self, waveforms):
        """(B, S) -> features (B, T, C_last) and the last block's gate (applied later)."""
        x = waveforms[:, None, :]                                                # (B, 1, S)
        last = len(self.conv_layers) - 1
        for i, block in enumerate(self.conv_layers):
            # The last block's gate must act after the projection LayerNorm (trap 1).
            x, z = block(x, apply_gate=(i != last))
        return x.transpose(1, 2), z


class FeatureProjection(nn.Module):
    def __init__(self, in_channels: int, cfg: WavLMConfig):
        super().__init__()
        self.layer_norm = nn.LayerNorm(in_channels, eps=cfg.layer_norm_eps)
        self.projection = nn.Linear(in_channels, cfg.hidden_size)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x, z_last):                                # (B, T, C) -> (B, T, E)
        keep = None if z_last is None else (z_last > 0).to(x.dtype)
        x = masked_layer_norm(x, keep, self.layer_norm.weight, self.layer_norm.bias,
                              self.layer_norm.eps)
        if z_last is not None:
            x = x * z_last.to(x.dtype)
        return self.dropout(self.projection(x))


# ------------------------------------------------------------------------- transformer
class SelfAttention(nn.Module):
    """Multi-head self-attention over the kept heads, with WavLM's gated relative bias."""

    def __init__(self, cfg: WavLMConfig, layer: int):
        super().__init__()
        E, d = cfg.hidden_size, cfg.head_dim
        self.num_heads_total = cfg.num_heads
        self.head_dim = d
        kept = cfg.heads[layer]
        self.num_heads = len(kept)
        self.all_heads = kept == list(range(cfg.num_heads))
        # Which original heads remain: they pick their slice of the full-head position
        # bias and of the input split used by the bias gate.
        self.register_buffer("kept_heads", torch.tensor(kept, dtype=torch.long), persistent=False)
        self.q_proj = nn.Linear(E, self.num_heads * d)
        self.k_proj = nn.Linear(E, self.num_heads * d)
        self.v_proj = nn.Linear(E, self.num_heads * d)
        self.out_proj = nn.Linear(self.num_heads * d, E)
        self.dropout = cfg.attention_dropout
        self.relative_position = cfg.relative_position
        if cfg.relative_position:
            self.gru_rel_pos_linear = nn.Linear(d, 8)
            self.gru_rel_pos_const = nn.Parameter(torch.ones(1, self.num_heads, 1, 1))
        self.head_gate = (HardConcrete(self.num_heads, cfg.init_drop_rates["head"])
                          if "head" in cfg.prune_units and self.num_heads > 0 else None)

    def gated_position_bias(self, x, position_bias):
        """WavLM eq. (5)-(7): a per-query, per-head scalar gate on the shared bias.

        x: (B, T, E) layer input; position_bias: (H_total, T, T) -> (B, h, T, T).
        The gate reads head h's slice of the input (d = E / H_total channels), so the
        split uses the ORIGINAL head count even after heads were pruned.

        The paper (Chen et al. 2022, arXiv 2110.13900, Sec. III-B) computes an update
        gate and a reset gate from the query q_i of each head, both sigmoids of a dot
        product, and rescales the bucket bias d_{i-j} by a learned scalar w:
            r_{i-j} = d_{i-j} + g_update d_{i-j} + (1 - g_update) w g_reset d_{i-j}.
        Write a = 1 - g_update (also a sigmoid: of the negated dot product; the sign
        is absorbed by the learned weights), b = g_reset, c = w. Then
            r / d = 1 + (1 - a) + a b c = a (b c - 1) + 2,
        which is the `- 1.0` and `+ 2.0` below. c is `gru_rel_pos_const`, one per head,
        initialised to 1. The gate is linear in a, from 2 (a = 0) to 1 + b c (a = 1),
        so it lies between min(1, 1 + c) and max(2, 1 + c). For 0 <= c <= 1, as at
        initialisation, that is (1, 2): the plain d_{i-j} term always passes (the bias
        is never switched off or flipped) and the input can at most double it, per
        query frame. A learned c outside [0, 1] widens the range to (1 + c, 2) or (1, 1 + c).

        "q_i" is, as in the reference code's main path and in HF and torchaudio, the
        layer INPUT cut into per-head slices, not q_proj(x). (The reference's fallback
        path, taken only on TPUs, under TorchScript or with incremental decoding, gates
        with the projected, scaled query instead.)
        See docs/method.md Sec. 4 for why the embedding lives in the encoder.
        """
        B, T, _ = x.shape
        x_heads = x.view(B, T, self.num_heads_total, self.head_dim).transpose(1, 2)   # (B, H, T, d)
        bias = position_bias
        if not self.all_heads:
            x_heads = x_heads.index_select(1, self.kept_heads)                        # (B, h, T, d)
            bias = bias.index_select(0, self.kept_heads)                              # (h, T, T)
        # d -> 8 outputs, summed in two groups of 4 (outputs 0-3 -> a, 4-7 -> b). A sum
        # of linear outputs is one linear output with the rows summed, so this IS a
        # Linear(d, 2); neither paper nor reference code says why 8. We keep the 8 rows
        # because that is the shape every checkpoint stores (grep_linear: (8, d)).
        gates = self.gru_rel_pos_linear(x_heads).view(B, self.num_heads, T, 2, 4).sum(-1)
        gate_a, gate_b = torch.sigmoid(gates).chunk(2, dim=-1)                        # (B, h, T, 1)
        gate = gate_a * (gate_b * self.gru_rel_pos_const - 1.0) + 2.0     # a (b c - 1) + 2
        return gate * bias[None]                                                      # (B, h, T, T)

    def forward(self, x, position_bias=None, key_padding=None):
        B, T, E = x.shape
        if self.num_heads == 0:                     # every head pruned: only the bias is left
            return self.out_proj(x.new_zeros(B, T, 0))
        h, d = self.num_heads, self.head_dim
        q = self.q_proj(x).view(B, T, h, d).transpose(1, 2)                           # (B, h, T, d)
        k = self.k_proj(x).view(B, T, h, d).transpose(1, 2)
        v = self.v_proj(x).view(B, T, h, d).transpose(1, 2)
        mask = None
        if self.relative_position:
            mask = self.gated_position_bias(x, position_bias).to(q.dtype)             # (B, h, T, T)
            if key_padding is not None:
                mask = mask.masked_fill(key_padding[:, None, None, :], float("-inf"))
        elif key_padding is not None:
            mask = ~key_padding[:, None, None, :]         # bool: True = may be attended to
        context = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                                 dropout_p=self.dropout if self.training else 0.0)
        if self.head_gate is not None:
            context = context * self.head_gate()[None, :, None, None].to(context.dtype)
        # An explicit contiguous copy, not reshape(): the CPU attention kernel may return
        # (B, T, h, d) memory, and then reshape is a free view in eager but a view whose
        # validity depends on the kernel's strides under torch.export, which the ONNX
        # exporter re-checks with other strides and rejects. The copy is B*T*E floats,
        # noise next to the projections around it.
        context = context.transpose(1, 2).clone(memory_format=torch.contiguous_format)  # (B,T,h,d)
        context = context.view(B, T, h * d)                                           # (B, T, h*d)
        return self.out_proj(context)


class FeedForward(nn.Module):
    def __init__(self, cfg: WavLMConfig, layer: int):
        super().__init__()
        width = cfg.ffn_dims[layer]
        self.intermediate_dense = nn.Linear(cfg.hidden_size, width)
        self.output_dense = nn.Linear(width, cfg.hidden_size)
        self.dropout = nn.Dropout(cfg.activation_dropout)
        self.unit_gate = (HardConcrete(width, cfg.init_drop_rates["interm"])
                          if "interm" in cfg.prune_units and width > 0 else None)

    def forward(self, x):                                           # (B, T, E) -> (B, T, E)
        hidden = F.gelu(self.intermediate_dense(x))                 # (B, T, F)
        if self.unit_gate is not None:
            hidden = hidden * self.unit_gate().to(hidden.dtype)
        return self.output_dense(self.dropout(hidden))


class EncoderLayer(nn.Module):
    """One transformer layer. Post-LN (Base):  x = LN(x + att(x)); x = LN(x + ffn(x)).
    Pre-LN (Large): x = x + att(LN(x)); x = x + ffn(LN(x)). A removed block adds nothing;
    its LayerNorm stays in post-LN (it still normalises the residual) and goes in pre-LN."""

    def __init__(self, cfg: WavLMConfig, layer: int):
        super().__init__()
        E, eps = cfg.hidden_size, cfg.layer_norm_eps
        self.layer_norm_first = cfg.layer_norm_first
        has_att, has_ffn = cfg.attention_blocks[layer], cfg.ffn_blocks[layer]
        self.attention = SelfAttention(cfg, layer) if has_att else None
        self.feed_forward = FeedForward(cfg, layer) if has_ffn else None
        self.attention_layer_norm = nn.LayerNorm(E, eps=eps) \
            if (has_att or not cfg.layer_norm_first) else None
        self.ffn_layer_norm = nn.LayerNorm(E, eps=eps) \
            if (has_ffn or not cfg.layer_norm_first) else None
        self.attention_gate = HardConcrete(1, cfg.init_drop_rates["attlayer"]) \
            if has_att and "attlayer" in cfg.prune_units else None
        self.ffn_gate = HardConcrete(1, cfg.init_drop_rates["ffnlayer"]) \
            if has_ffn and "ffnlayer" in cfg.prune_units else None
        self.dropout = nn.Dropout(cfg.dropout)

    def _attention(self, x, position_bias, key_padding):
        out = self.dropout(self.attention(x, position_bias, key_padding))
        return out * self.attention_gate().to(out.dtype) if self.attention_gate is not None else out

    def _ffn(self, x):
        out = self.dropout(self.feed_forward(x))
        return out * self.ffn_gate().to(out.dtype) if self.ffn_gate is not None else out

    def forward(self, x, position_bias=None, key_padding=None):
        if self.layer_norm_first:
            if self.attention is not None:
                x = x + self._attention(self.attention_layer_norm(x), position_bias, key_padding)
            if self.feed_forward is not None:
                x = x + self._ffn(self.ffn_layer_norm(x))
        else:
            if self.attention is not None:
                x = x + self._attention(x, position_bias, key_padding)
            x = self.attention_layer_norm(x)
            if self.feed_forward is not None:
                x = x + self._ffn(x)
            x = self.ffn_layer_norm(x)
        return x


class Encoder(nn.Module):
    def __init__(self, cfg: WavLMConfig):
        super().__init__()
        self.cfg = cfg
        self.pos_conv = WeightNormConv1d(cfg.hidden_size, cfg.pos_conv_kernel, cfg.pos_conv_groups)
        self.layer_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        # Owned by the encoder, not by layer 0's attention (trap 2 in the top docstring).
        self.rel_attn_embed = nn.Embedding(cfg.num_buckets, cfg.num_heads) \
            if cfg.relative_position else None
        if cfg.relative_position:
            # The bucket of each of the 2 * max_distance + 1 relative positions, computed
            # once. forward() only gathers from it, which (a) skips a log over T^2 pairs per
            # forward and (b) makes an exported model (ONNX) use these exact integers rather
            # than re-deriving them with another library's float log, where a 1-ulp
            # difference at a bucket boundary would move a whole bias entry.
            table = distance_buckets(torch.arange(-cfg.max_distance, cfg.max_distance + 1),
                                     cfg.num_buckets, cfg.max_distance)
            # (2 * max_distance + 1,)
            self.register_buffer("bucket_table", table, persistent=False)
        self.layers = nn.ModuleList(EncoderLayer(cfg, i) for i in range(cfg.num_layers))
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x, key_padding=None) -> List[torch.Tensor]:
        """x: (B, T, E) projected features -> [input of layer 0, output of each layer]."""
        if key_padding is not None:
            x = x.masked_fill(key_padding[..., None], 0.0)   # the positional conv must not see pads
        pos = F.gelu(self.pos_conv(x.transpose(1, 2)))                   # (B, E, T+1) for even K
        # drop the extra frame of an even kernel
        x = x + pos[..., : x.shape[1]].transpose(1, 2)
        if not self.cfg.layer_norm_first:
            x = self.layer_norm(x)
        x = self.dropout(x)
        position_bias = None
        if self.rel_attn_embed is not None:
            # Look the bias up for the 2 * max_distance + 1 offsets first, then spread it over
            # the (T, T) pairs: one gather over T^2 instead of two (buckets, then bias).
            offset_bias = self.rel_attn_embed(self.bucket_table)         # (2 * max_distance + 1, H)
            offsets = relative_offsets(x.shape[1], self.cfg.max_distance, x.device)         # (T, T)
            position_bias = F.embedding(offsets, offset_bias).permute(2, 0, 1)    # (H_total, T, T)
        hidden_states = [x]
        for layer in self.layers:
            x = layer(x, position_bias, key_padding)
            hidden_states.append(x)
        if self.cfg.layer_norm_first:          # pre-LN models normalise the final output
            hidden_states[-1] = self.layer_norm(x)
        return hidden_states


# ------------------------------------------------------------------------------ model
class MaskedWavLM(nn.Module):
    def __init__(self, config: WavLMConfig):
        super().__init__()
        self.config = config
        self.feature_extractor = FeatureExtractor(config)
        self.feature_projection = FeatureProjection(config.conv_layers[-1][0], config)
        self.encoder = Encoder(config)

    def forward(self, waveforms, lengths=None):
        """waveforms (B, S), lengths (B,) samples or None ->
        (hidden_states: num_layers + 1 tensors (B, T, E), frame lengths (B,) or None)."""
        if self.config.normalize_waveform:
            waveforms = normalize_waveforms(waveforms, lengths)
        features, z_last = self.feature_extractor(waveforms)                      # (B, T, C)
        x = self.feature_projection(features, z_last)                             # (B, T, E)
        key_padding = None
        if lengths is not None:
            lengths = frame_lengths(lengths, self.config.conv_layers)
            key_padding = (torch.arange(x.shape[1], device=x.device)[None, :]
                           >= lengths[:, None])                                   # (B, T)
        return self.encoder(x, key_padding), lengths

    # --- gates
    def gates(self) -> Dict[str, HardConcrete]:
        return {name: m for name, m in self.named_modules() if isinstance(m, HardConcrete)}

    def gate_parameters(self) -> List[nn.Parameter]:
        return [g.log_alpha for g in self.gates().values()]

    def model_parameters(self) -> List[nn.Parameter]:
        """Every parameter except gate logits: what the model size counts."""
        gate_ids = {id(p) for p in self.gate_parameters()}
        return [p for p in self.parameters() if id(p) not in gate_ids]

    def num_params(self) -> int:
        return sum(p.numel() for p in self.model_parameters())

    # --- size
    def expected_num_params(self, deterministic: Optional[bool] = None) -> torch.Tensor:
        """Model size as a function of the gates (docs/method.md Sec. 3).

        Training mode: E[#params], a differentiable product of expectations (gates are
        independent), built from each gate's l0_norm. Eval mode: the count of what the
        deterministic masks keep, which equals sum(p.numel()) of `self.prune()` exactly.
        `deterministic` overrides the choice the mode makes. The function mirrors,
        term by term, the parameters each module creates above.
        """
        deterministic = (not self.training) if deterministic is None else deterministic
        cfg = self.config
        device = next(self.parameters()).device
        # float64: a WavLM has ~1e8 parameters, beyond float32's 2**24 exact integers.
        # Constants stay Python floats (also float64): a tensor made from a Python
        # number on a GPU is a host-to-device copy that waits for the GPU.
        const = float

        def count(gate, full):
            if gate is None:
                return const(full)
            return gate.num_kept_tensor() if deterministic else gate.l0_norm().double()

        E, d = cfg.hidden_size, cfg.head_dim
        total = const(0.0)
        in_ch = const(1.0)
        for i, block in enumerate(self.feature_extractor.conv_layers):
            out_ch, kernel, _ = cfg.conv_layers[i]
            out_ch = count(block.channel_gate, out_ch)
            total = total + in_ch * out_ch * kernel + (out_ch if cfg.conv_bias else 0.0)
            if block.norm_kind is not None:
                total = total + 2 * out_ch
            in_ch = out_ch
        total = total + 2 * in_ch + in_ch * E + E                          # feature projection
        total = (total + E * (E // cfg.pos_conv_groups) * cfg.pos_conv_kernel
                 + cfg.pos_conv_kernel + E)
        total = total + 2 * E                                              # encoder LayerNorm
        if cfg.relative_position:
            total = total + cfg.num_buckets * cfg.num_heads
        for layer in self.encoder.layers:
            if layer.attention is not None:
                att = layer.attention
                h = count(att.head_gate, att.num_heads)
                size = 3 * (E * h * d + h * d) + h * d * E + E
                if cfg.relative_position:
                    size = size + d * 8 + 8 + h
                if cfg.layer_norm_first:
                    size = size + 2 * E
                total = total + count(layer.attention_gate, 1) * size
            if layer.feed_forward is not None:
                ffn = layer.feed_forward
                width = count(ffn.unit_gate, ffn.output_dense.in_features)
                size = 2 * E * width + width + E + (2 * E if cfg.layer_norm_first else 0)
                total = total + count(layer.ffn_gate, 1) * size
            if not cfg.layer_norm_first:
                total = total + 4 * E                                      # the two post-LNs
        return torch.as_tensor(total, dtype=torch.float64, device=device)  # a float if no gates

    @torch.no_grad()
    def shift_gates_to_size(self, target_params: float) -> Dict[str, float]:
        """Shift gate logits so that the exported size (eval masks) comes as close to
        `target_params` as the units allow. Returns the offset added per kind of gate.

        Lowering every log_alpha of some gates by the same delta keeps each group's
        ranking of its units and lowers every P(z != 0), so the exported size can only
        shrink as delta falls: bisection on that monotone step function finds the delta
        whose size is nearest the target. A first pass shifts all gates alike; since a
        head or a whole block moves the size in big steps, a second pass shifts only the
        FFN-unit gates and a third only the conv-channel gates, the finest units, to
        close what is left. The soft values of the kept units move with their logits,
        which is why the caller fine-tunes the fixed structure afterwards (train.py).
        """
        named = self.gates()
        passes = {"all": list(named.values()),
                  "interm": [g for n, g in named.items() if n.endswith("unit_gate")],
                  "conv": [g for n, g in named.items() if n.endswith("channel_gate")]}
        size = lambda: self.expected_num_params(deterministic=True).item()
        shifts = {}
        for kind, gates in passes.items():
            start = [g.log_alpha.clone() for g in gates]

            def size_at(delta):
                for g, la in zip(gates, start):
                    g.log_alpha.copy_(la + delta)
                return size()

            if not gates:
                continue
            lo, hi = -30.0, 30.0              # |log_alpha| > 25: P(z != 0) is ~0 or ~1 anyway
            for _ in range(40):               # invariant: size_at(lo) <= target < size_at(hi)
                mid = (lo + hi) / 2
                lo, hi = (mid, hi) if size_at(mid) <= target_params else (lo, mid)
            best = min((0.0, lo, hi), key=lambda d: (abs(size_at(d) - target_params), abs(d)))
            size_at(best)
            shifts[kind] = best
        return shifts

    # --- pruning
    @torch.no_grad()
    def prune(self) -> "MaskedWavLM":
        """A new dense model without gates that computes what this model computes in
        eval mode. Rows/columns of removed units go; soft gate values are folded into
        the weights that consume them; the new model is built from its own config and
        loaded with strict=True, so no stale attribute survives."""
        was_training = self.training
        self.eval()
        cfg = self.config
        sd = {k: v.clone() for k, v in self.state_dict().items() if not k.endswith("log_alpha")}
        new = copy.deepcopy(cfg)
        new.prune_units = []

        def keep_and_scale(gate, n):
            if gate is None:
                return torch.arange(n), torch.ones(n)
            z = gate().float().cpu()
            keep = torch.nonzero(z > 0).flatten()
            return keep, z[keep]

        # CNN: block i keeps its rows; block i+1 drops the matching input columns and
        # absorbs block i's soft gate values (the gate multiplies the GELU output).
        blocks = self.feature_extractor.conv_layers
        prev_keep, prev_scale = None, None
        for i, block in enumerate(blocks):
            p = f"feature_extractor.conv_layers.{i}."
            keep, scale = keep_and_scale(block.channel_gate, cfg.conv_layers[i][0])
            w = sd[p + "conv.weight"][keep]                                  # (C_out', C_in, k)
            if prev_keep is not None:
                w = w[:, prev_keep] * prev_scale[None, :, None].to(w)
            sd[p + "conv.weight"] = w
            for name in ("conv.bias", "norm.weight", "norm.bias"):
                if p + name in sd:
                    sd[p + name] = sd[p + name][keep]
            new.conv_layers[i] = (len(keep),) + tuple(cfg.conv_layers[i][1:])
            prev_keep, prev_scale = keep, scale
        # The last block's gate sits after the projection LayerNorm: fold into the Linear.
        for name in ("feature_projection.layer_norm.weight", "feature_projection.layer_norm.bias"):
            sd[name] = sd[name][prev_keep]
        w = sd["feature_projection.projection.weight"]
        sd["feature_projection.projection.weight"] = w[:, prev_keep] * prev_scale[None, :].to(w)

        for i, layer in enumerate(self.encoder.layers):
            p = f"encoder.layers.{i}."
            self._prune_attention(layer, i, p, sd, new, keep_and_scale)
            self._prune_ffn(layer, i, p, sd, new, keep_and_scale)

        pruned = MaskedWavLM(new).to(next(self.parameters()).device)
        pruned.load_state_dict(sd, strict=True)
        self.train(was_training)
        return pruned.eval()

    def _prune_attention(self, layer, i, p, sd, new, keep_and_scale):
        if layer.attention is None:
            return
        att_keys = [k for k in sd if k.startswith(p + "attention.")]
        block_scale = layer.attention_gate().item() if layer.attention_gate is not None else 1.0
        if block_scale == 0.0:
            for k in att_keys:
                del sd[k]
            if self.config.layer_norm_first:
                for k in ("weight", "bias"):
                    del sd[p + "attention_layer_norm." + k]
            new.attention_blocks[i] = False
            new.heads[i] = []
            return
        att = layer.attention
        keep, scale = keep_and_scale(att.head_gate, att.num_heads)
        d = att.head_dim
        rows = (keep[:, None] * d + torch.arange(d)[None, :]).flatten()    # the rows of kept heads
        for proj in ("q_proj", "k_proj", "v_proj"):
            sd[p + f"attention.{proj}.weight"] = sd[p + f"attention.{proj}.weight"][rows]
            sd[p + f"attention.{proj}.bias"] = sd[p + f"attention.{proj}.bias"][rows]
        w = sd[p + "attention.out_proj.weight"][:, rows]                     # (E, h'*d)
        w = w * scale.repeat_interleave(d)[None, :].to(w) * block_scale
        sd[p + "attention.out_proj.weight"] = w
        sd[p + "attention.out_proj.bias"] = sd[p + "attention.out_proj.bias"] * block_scale
        if p + "attention.gru_rel_pos_const" in sd:
            sd[p + "attention.gru_rel_pos_const"] = sd[p + "attention.gru_rel_pos_const"][:, keep]
        new.heads[i] = [self.config.heads[i][j] for j in keep.tolist()]

    def _prune_ffn(self, layer, i, p, sd, new, keep_and_scale):
        if layer.feed_forward is None:
            return
        block_scale = layer.ffn_gate().item() if layer.ffn_gate is not None else 1.0
        if block_scale == 0.0:
            for k in [k for k in sd if k.startswith(p + "feed_forward.")]:
                del sd[k]
            if self.config.layer_norm_first:
                for k in ("weight", "bias"):
                    del sd[p + "ffn_layer_norm." + k]
            new.ffn_blocks[i] = False
            new.ffn_dims[i] = 0
            return
        ffn = layer.feed_forward
        keep, scale = keep_and_scale(ffn.unit_gate, ffn.output_dense.in_features)
        q = p + "feed_forward."
        sd[q + "intermediate_dense.weight"] = sd[q + "intermediate_dense.weight"][keep]
        sd[q + "intermediate_dense.bias"] = sd[q + "intermediate_dense.bias"][keep]
        w = sd[q + "output_dense.weight"][:, keep]
        sd[q + "output_dense.weight"] = w * scale[None, :].to(w) * block_scale
        sd[q + "output_dense.bias"] = sd[q + "output_dense.bias"] * block_scale
        new.ffn_dims[i] = len(keep)

    def structure_summary(self) -> dict:
        """What survives per layer under the current (eval) masks: for plots and reports."""
        out = {"conv_channels": [], "heads": [], "ffn_units": [], "attention": [], "ffn": []}
        for i, block in enumerate(self.feature_extractor.conv_layers):
            g = block.channel_gate
            out["conv_channels"].append(g.num_kept() if g is not None
                                        else self.config.conv_layers[i][0])
        for layer in self.encoder.layers:
            att_on = layer.attention is not None and (layer.attention_gate is None
                                                      or layer.attention_gate.num_kept() > 0)
            ffn_on = layer.feed_forward is not None and (layer.ffn_gate is None
                                                         or layer.ffn_gate.num_kept() > 0)
            att, ffn = layer.attention, layer.feed_forward
            out["attention"].append(att_on)
            out["ffn"].append(ffn_on)
            out["heads"].append(0 if not att_on else
                                (att.head_gate.num_kept() if att.head_gate is not None
                                 else att.num_heads))
            out["ffn_units"].append(0 if not ffn_on else
                                    (ffn.unit_gate.num_kept() if ffn.unit_gate is not None
                                     else ffn.output_dense.in_features))
        return out
