"""
The downstream model: waveform -> (prunable) WavLM -> pooling head -> loss head.

    wave (B, S) -> MaskedWavLM -> L+1 hidden states (B, T, E) -> MHFA | ASP -> (B, 256)
                -> SV: AAM-softmax over speakers       (training loss; cosine scoring at test)
                -> CM: 2-class linear head             (training loss; its LLR is the score)

Peng et al. 2025, "Hybrid Pruning" (arXiv 2508.16232), Sec. 2-3: the SSL model is
fine-tuned together with an MHFA back-end (Peng et al., SLT 2022) under AAM-softmax for
speaker verification, or with a binary head for anti-spoofing, while it is pruned.

Both training (train.py) and scoring (scoring.py, evaluate.py) need this model, and neither owns
it, so it lives here. It is built from explicit arguments; `save_classifier` /
`load_classifier` write and read `pruned_model.pt`, a file that needs neither the
original checkpoint nor any training code.
"""

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn

import checkpoints
import devices
import heads
from wavlm_masked import MaskedWavLM

EMBED_DIM = 256          # speaker-embedding size of the seed paper's MHFA back-end


@dataclass
class HeadConfig:
    """The back-end: pooling head and, for SV, the AAM-softmax loss (defaults: the paper's)."""
    kind: str = "mhfa"               # "mhfa" (the paper) or "asp" (attentive statistics)
    mhfa_heads: int = 32             # MHFA attention heads
    mhfa_compression: int = 128      # MHFA compression dimension
    aam_scale: float = 32.0          # AAM-softmax scale s
    aam_margin: float = 0.2          # AAM-softmax margin m (reached at the end of its ramp)
    sub_centers: int = 3             # sub-centres per speaker
    inter_topk: int = 5              # inter-top-k: hardest non-target speakers ...
    inter_penalty: float = 0.06      # ... get this extra margin


class Classifier(nn.Module):
    """SSL model -> pooling head -> loss head. One module, so DDP sees every parameter.

    ssl          the (gated or pruned) WavLM.
    task         "sv" (speaker verification) or "cm" (anti-spoofing countermeasure).
    num_classes  training speakers (SV); ignored for CM, which has two classes.
    grad_mult    factor on the gradient that flows from the head into the SSL model
                 (the recipes' 0.1 / 0.01 protect pre-trained weights from a fresh head).
    p_bonafide   CM: the bona fide share of the training data, to turn logits into LLRs.
    """

    def __init__(self, ssl: MaskedWavLM, task: str, num_classes: int, head: HeadConfig = None,
                 grad_mult: float = 1.0, p_bonafide: float = 0.5):
        super().__init__()
        if task not in ("sv", "cm"):
            raise ValueError(f"task must be 'sv' or 'cm', got {task!r}")
        cfg, head = ssl.config, head or HeadConfig()
        self.ssl, self.task, self.num_classes = ssl, task, num_classes
        self.head_config, self.grad_mult, self.p_bonafide = head, grad_mult, p_bonafide
        if head.kind == "mhfa":
            self.head = heads.MHFA(cfg.num_layers + 1, cfg.hidden_size,
                                   compression_dim=head.mhfa_compression,
                                   num_heads=head.mhfa_heads, embed_dim=EMBED_DIM)
        elif head.kind == "asp":
            self.head = heads.ASPHead(cfg.num_layers + 1, cfg.hidden_size, embed_dim=EMBED_DIM)
        else:
            raise ValueError(f"head kind must be 'mhfa' or 'asp', got {head.kind!r}")
        if task == "sv":
            self.loss_head = heads.AAMSoftmax(EMBED_DIM, num_classes, scale=head.aam_scale,
                                              margin=head.aam_margin, sub_centers=head.sub_centers,
                                              inter_topk=head.inter_topk,
                                              inter_penalty=head.inter_penalty)
        else:
            self.loss_head = heads.SpoofHead(EMBED_DIM)

    def embed(self, waves, lengths=None):
        """(B, S) waveforms -> (B, 256) embeddings."""
        hidden_states, frames = self.ssl(waves, lengths)                 # L+1 x (B, T, E), (B,)
        hidden_states = [heads.scale_grad(h, self.grad_mult) for h in hidden_states]
        return self.head(hidden_states, frames)                         # (B, 256)

    def forward(self, waves, labels):
        """The training loss of a batch."""
        return self.loss_head(self.embed(waves), labels)

    def score(self, waves, lengths=None):
        """What evaluation compares: SV the embedding (B, 256), CM the LLR (B,)."""
        emb = self.embed(waves, lengths)
        if self.task == "sv":
            return emb
        with torch.autocast(device_type=emb.device.type, enabled=False):   # the LLR in fp32
            return heads.logits_to_llr(self.loss_head.logits(emb.float()), self.p_bonafide)


def utterance_scorer(model: Classifier, device: torch.device, amp: str = "none"):
    """A function wave (1, S) CPU float tensor -> 1-D CPU tensor: SV (256,), CM (1,) LLR.
    scoring.evaluate_sets takes any such function: this one, or an exported model's."""
    model.eval()

    @torch.no_grad()
    def score(wave):
        with devices.autocast(device, amp):
            return model.score(wave.to(device)).float()[0].reshape(-1).cpu()
    return score


# ----------------------------------------------------------------- pruned_model.pt
def save_classifier(model: Classifier, path, extra: dict = None):
    """The SSL model (config + weights) and the head in one file (checkpoints.save_model
    format), atomically. `extra`: plain values to keep beside them (e.g. the recipe)."""
    head_state = {k: v.detach().cpu() for k, v in model.state_dict().items()
                  if not k.startswith("ssl.")}
    checkpoints.save_model(model.ssl, path, extra={
        "head": head_state, "head_config": asdict(model.head_config), "task": model.task,
        "num_classes": model.num_classes, "grad_mult": model.grad_mult,
        "p_bonafide": model.p_bonafide, **(extra or {})})


def load_classifier(path, device="cpu"):
    """pruned_model.pt -> (Classifier in eval mode, the file's extra dict)."""
    ssl, extra = checkpoints.load_model(path)
    needed = ("head", "head_config", "task", "num_classes")
    if any(k not in extra for k in needed):
        raise ValueError(f"{path} holds a WavLM but no classifier head (missing "
                         f"{[k for k in needed if k not in extra]}); "
                         f"expected a pruned_model.pt from train.py")
    model = Classifier(ssl, extra["task"], extra["num_classes"], HeadConfig(**extra["head_config"]),
                       grad_mult=extra.get("grad_mult", 1.0),
                       p_bonafide=extra.get("p_bonafide", 0.5))
    ssl_state = {f"ssl.{k}": v for k, v in ssl.state_dict().items()}
    checkpoints.load_state_exactly(model, {**ssl_state, **extra["head"]}, path)
    return model.to(device).eval(), extra

