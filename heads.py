"""
Back-ends and losses that sit on top of the (pruned) WavLM: pooling heads that turn the
stack of hidden states into one utterance embedding, and the losses trained on it.

Used by the seed paper (Peng et al. 2025, "Hybrid Pruning", arXiv 2508.16232, Sec. 2-3):
the same MHFA back-end is used for speaker verification (SV, AAM-softmax loss) and for
anti-spoofing (CM, 2-class cross-entropy), and SSL gradients are scaled down (0.1 SV,
0.01 CM) while WavLM is fine-tuned and pruned.

Contents
- MHFA: multi-head factorized attentive pooling (J. Peng, O. Plchot, T. Stafylakis,
  L. Mosner, L. Burget, J. Cernocky, "An attention-based backend allowing efficient
  fine-tuning of transformer models for speaker verification", SLT 2022,
  arXiv 2210.01273, Sec. 3, eq. (1)-(4)).
- ASPHead: a simpler baseline, layer-weighted sum -> attentive statistics pooling
  (K. Okabe, T. Koshinaka, K. Shinoda, Interspeech 2018, arXiv 1803.10963) or plain
  mean+std -> linear. For teaching and as an ablation.
- scale_grad: identity forward, gradient * factor backward.
- AAMSoftmax: additive angular margin softmax, "ArcFace" (J. Deng, J. Guo, N. Xue,
  S. Zafeiriou, CVPR 2019, arXiv 1801.07698, eq. (3)), with K sub-centres (Deng et al.,
  "Sub-center ArcFace", ECCV 2020) and the inter-top-k penalty (M. Zhao et al.,
  "Multi-query multi-head attention pooling and Inter-topK penalty for speaker
  verification", ICASSP 2022, arXiv 2110.05042, Sec. 3). The paper's SV settings:
  s = 32, m = 0.2, K = 3, k = 5, m' = 0.06.
- SpoofHead + logits_to_llr: 2-class head for CM and its conversion to a calibrated-
  in-form log-likelihood ratio, so that actDCF and Cllr (metrics.py) mean something.

Shapes: B batch, T frames, D SSL hidden size, L+1 hidden-state tensors, C compression
dim, H heads, E embedding dim, N classes, K sub-centres.
"""

import math
from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

# -----------------------------------------------------------------------------
# helpers shared by the pooling heads


def padding_mask(lengths: Optional[torch.Tensor], T: int, device=None) -> Optional[torch.Tensor]:
    """(B,) frame counts -> (B, T) bool, True where a frame is PADDING (t >= lengths[b]).

    `lengths` are counted in frames of the hidden states (not audio samples). A row with
    length 0 has no valid frame; the heads then pool over padding (finite garbage), so
    callers should not pass empty utterances.
    """
    if lengths is None:
        return None
    t = torch.arange(T, device=device if device is not None else lengths.device)
    return t[None, :] >= lengths.to(t.device)[:, None]  # (B, T)


def layer_mix(hidden_states: Sequence[torch.Tensor], weights: torch.Tensor) -> torch.Tensor:
    """sum_l weights[l] * hidden_states[l]  ->  (B, T, D).

    A python loop instead of torch.stack(...): stacking would copy all L+1 (B, T, D)
    tensors into one new buffer that autograd then keeps alive; the loop only holds the
    running sum (the hidden states themselves are saved by the SSL model anyway).
    """
    out = weights[0] * hidden_states[0]
    for l in range(1, len(hidden_states)):
        out = out + weights[l] * hidden_states[l]
    return out  # (B, T, D)


def masked_softmax_over_time(logits: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
    """Softmax over dim 1 (time) of (B, T, H) logits, padded frames getting weight 0.

    We fill with the most negative finite number rather than -inf: exp(min - max)
    underflows to exactly 0 whenever the row has at least one valid frame, and a fully
    padded row gives a finite (uniform) result instead of NaN that would poison the batch.
    """
    if mask is not None:
        logits = logits.masked_fill(mask[:, :, None], torch.finfo(logits.dtype).min)
    return logits.softmax(dim=1)  # (B, T, H)


# -----------------------------------------------------------------------------
# MHFA


class MHFA(nn.Module):
    """Multi-head factorized attentive pooling (Peng et al., SLT 2022, Sec. 3).

    Keys and values come from two *different* convex combinations of the layers: what
    decides WHERE to attend (keys: which sound is being said) need not live in the same
    layers as WHAT is pooled (values: speaker or spoofing cues), so the model learns one
    layer mix for each. With h_l the l-th hidden state (B, T, D):

        k  = sum_l softmax(w_k)_l h_l            v  = sum_l softmax(w_v)_l h_l     (1)
        k' = W_ck k   (D -> C)                   v' = W_cv v   (D -> C)            (2)
        a  = softmax_t(W_a k')    (C -> H attention logits, softmax over time)     (3)
        e  = W_o concat_h( sum_t a[t, h] v'[t] )   (H*C -> E)                      (4)

    Each head is a learnable "query" (a row of W_a) over compressed keys, so the heads act
    like a set of discovered phonetic classes, each producing a class-conditional mean of
    the values. Unlike the reference code we mask padded frames out of the softmax (3),
    so a padded batch gives the same embeddings as the unpadded utterances.

    Parameters for the Base defaults (13 layers, D=768, C=128, H=32, E=256):
    2*13 + 2*(768*128+128) + (128*32+32) + (32*128*256+256) = 1,249,850.
    """

    def __init__(self, num_layers: int, in_dim: int, compression_dim: int = 128,
                 num_heads: int = 32, embed_dim: int = 256):
        super().__init__()
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.compression_dim = compression_dim
        self.embed_dim = embed_dim
        # zeros -> softmax gives equal weight to all layers at start
        self.weights_k = nn.Parameter(torch.zeros(num_layers))
        self.weights_v = nn.Parameter(torch.zeros(num_layers))
        self.compress_k = nn.Linear(in_dim, compression_dim)
        self.compress_v = nn.Linear(in_dim, compression_dim)
        self.att_head = nn.Linear(compression_dim, num_heads)
        self.proj = nn.Linear(num_heads * compression_dim, embed_dim)

    def forward(self, hidden_states: Sequence[torch.Tensor], lengths: Optional[torch.Tensor] = None,
                return_attention: bool = False):
        """hidden_states: L+1 tensors (B, T, D) (or one (L+1, B, T, D) tensor);
        lengths: (B,) valid frames per utterance, or None if nothing is padded.
        Returns (B, E), or ((B, E), attention (B, H, T)) with return_attention=True."""
        if len(hidden_states) != self.num_layers:
            raise ValueError(f"MHFA expects {self.num_layers} hidden-state tensors, "
                             f"got {len(hidden_states)}")
        B, T, _ = hidden_states[0].shape
        k = layer_mix(hidden_states, self.weights_k.softmax(0))  # (B, T, D)
        v = layer_mix(hidden_states, self.weights_v.softmax(0))  # (B, T, D)
        k = self.compress_k(k)  # (B, T, C)
        v = self.compress_v(v)  # (B, T, C)
        att = masked_softmax_over_time(self.att_head(k),
                                       padding_mask(lengths, T, k.device))  # (B, T, H)
        # per head, attention-weighted mean of the compressed values over time
        pooled = torch.einsum("bth,btc->bhc", att, v)  # (B, H, C)
        emb = self.proj(pooled.reshape(B, self.num_heads * self.compression_dim))  # (B, E)
        if return_attention:
            return emb, att.transpose(1, 2)  # (B, E), (B, H, T)
        return emb

    def layer_weights(self):
        """Softmax-normalised key and value layer weights, each (L+1,), for plotting."""
        return self.weights_k.detach().softmax(0), self.weights_v.detach().softmax(0)


# -----------------------------------------------------------------------------
# A simpler baseline head


class ASPHead(nn.Module):
    """Layer-weighted sum -> attentive statistics pooling -> linear (Okabe et al. 2018).

        x_t   = sum_l softmax(w)_l LN(h_l)[t]                              (B, T, D)
        e_t   = u^T tanh(W x_t + b)      one attention logit per frame      (B, T, 1)
        a     = softmax_t(e)             padded frames masked out
        mu    = sum_t a_t x_t,   sigma = sqrt(sum_t a_t (x_t - mu)^2)       (B, D) each
        emb   = W_o [mu; sigma]                                             (B, E)

    With attentive=False, a is uniform over the valid frames (mean + std pooling).
    Each layer is layer-normalised (no affine) before mixing, as in SUPERB's weighted
    sum: WavLM layers have very different scales, and without it the mixing weights
    would mostly learn those scales instead of which layer is useful.
    """

    def __init__(self, num_layers: int, in_dim: int, attention_dim: int = 128,
                 embed_dim: int = 256, attentive: bool = True):
        super().__init__()
        self.num_layers = num_layers
        self.attentive = attentive
        self.layer_logits = nn.Parameter(torch.zeros(num_layers))
        if attentive:
            self.att_hidden = nn.Linear(in_dim, attention_dim)
            self.att_out = nn.Linear(attention_dim, 1)
        self.proj = nn.Linear(2 * in_dim, embed_dim)

    def forward(self, hidden_states: Sequence[torch.Tensor], lengths: Optional[torch.Tensor] = None,
                return_attention: bool = False):
        if len(hidden_states) != self.num_layers:
            raise ValueError(f"ASPHead expects {self.num_layers} hidden-state tensors, "
                             f"got {len(hidden_states)}")
        B, T, D = hidden_states[0].shape
        normed = [F.layer_norm(h, (D,)) for h in hidden_states]  # per frame: padding-safe
        x = layer_mix(normed, self.layer_logits.softmax(0))  # (B, T, D)
        mask = padding_mask(lengths, T, x.device)
        if self.attentive:
            logits = self.att_out(torch.tanh(self.att_hidden(x)))  # (B, T, 1)
        else:
            logits = x.new_zeros(B, T, 1)  # equal logits -> uniform weights
        att = masked_softmax_over_time(logits, mask)  # (B, T, 1)
        mu = (att * x).sum(1)  # (B, D)
        # two-pass variance: sum a (x - mu)^2 avoids the cancellation of E[x^2] - mu^2
        var = (att * (x - mu[:, None, :]) ** 2).sum(1)  # (B, D)
        sigma = torch.sqrt(var.clamp_min(1e-6))  # floor keeps the sqrt gradient finite
        emb = self.proj(torch.cat([mu, sigma], dim=1))  # (B, E)
        if return_attention:
            return emb, att.transpose(1, 2)  # (B, E), (B, 1, T)
        return emb


# -----------------------------------------------------------------------------
# Gradient multiplier


class _ScaleGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, factor):
        ctx.factor = factor
        return x.view_as(x)  # a view, so autograd records this node; no copy

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.factor, None


def scale_grad(x: torch.Tensor, factor: float) -> torch.Tensor:
    """Identity in the forward pass; multiplies the gradient flowing back into `x` by
    `factor`.

    Applied to every hidden state the SSL model hands to the back-end,
    `[scale_grad(h, 0.1) for h in hidden_states]`, it scales the task-loss gradient of
    all SSL parameters by `factor` (backprop is linear), while the freshly initialised
    head learns at the full rate. The paper uses 0.1 for SV and 0.01 for CM. Note that
    it also scales the task-loss gradient reaching the pruning gates inside the SSL
    model, but not the sparsity-regulariser gradient, which does not pass through here.

    Unlike the trick `x * f + x.detach() * (1 - f)`, the forward value is bit-exact.
    """
    if factor == 1.0:
        return x
    return _ScaleGrad.apply(x, float(factor))


# -----------------------------------------------------------------------------
# AAM-softmax (ArcFace) with sub-centres and inter-top-k penalty


def margin_schedule(step: int, total_steps: int, final_margin: float,
                    start_frac: float = 0.0, end_frac: float = 0.25) -> float:
    """Margin at `step`: 0 until start_frac*total_steps, then a linear ramp reaching
    `final_margin` at end_frac*total_steps, constant afterwards.

    Why ramp: with random embeddings a full margin makes every target logit tiny, the
    loss is dominated by the margin and training can stall; starting at m = 0 (plain
    normalised softmax) lets the classes separate first. Feed the value to
    AAMSoftmax.set_margin() each step (or epoch).
    """
    if not 0.0 <= start_frac <= end_frac <= 1.0:
        raise ValueError(f"need 0 <= start_frac <= end_frac <= 1, got {start_frac}, {end_frac}")
    start, end = start_frac * total_steps, end_frac * total_steps
    if step < start:
        return 0.0
    if step >= end or end == start:
        return float(final_margin)
    return float(final_margin) * (step - start) / (end - start)


class AAMSoftmax(nn.Module):
    """Additive angular margin softmax loss (ArcFace, Deng et al. 2019, eq. (3)).

    With x the embedding, W_j the class centres, both L2-normalised, cos(theta_j) = x.W_j:

        loss = -log  exp(s cos(theta_y + m))
                     / ( exp(s cos(theta_y + m)) + sum_{j!=y} exp(s cos theta_j) )

    The margin m is added to the ANGLE of the target class, so a sample only wins once it
    is closer to its centre by m radians than to any other: this directly shapes the
    cosine geometry that cosine scoring uses at test time.

    Pitfalls handled ("threshold handling"):
    - cos(theta + m) is not monotone once theta + m > pi: pushing theta further from the
      centre would INCREASE the target logit. Beyond theta > pi - m (cos < cos(pi - m))
      we switch to cos(theta) - m sin(m), a fixed penalty close to the margin's first-
      order effect (m sin theta), which keeps decreasing in theta (InsightFace's
      convention; it jumps down by about m^2/2 at the switch, harmless in practice).
    - easy_margin=True instead applies the margin only when cos(theta) > 0.

    Sub-centres (K > 1, Sub-center ArcFace): each class has K centres and cos(theta_j) is
    the max over them, so noisy or multi-modal classes need not be pulled onto one point.

    Inter-top-k (Zhao et al. 2022): the k non-target classes closest to x get their
    cosine raised to cos(theta_j - m'), i.e. the hardest negatives are made to look even
    closer, adding an extra margin against them. Clamped at theta_j < m' (cosine 1).
    The penalty follows the margin schedule: m'_eff = m' * m / m_final.
    """

    def __init__(self, embed_dim: int, num_classes: int, scale: float = 32.0, margin: float = 0.2,
                 sub_centers: int = 1, inter_topk: int = 0, inter_penalty: float = 0.0,
                 easy_margin: bool = False):
        super().__init__()
        self.num_classes = num_classes
        self.sub_centers = sub_centers
        self.scale = float(scale)
        self.final_margin = float(margin)
        self.inter_topk = min(int(inter_topk), num_classes - 1)
        self.final_penalty = float(inter_penalty)
        self.easy_margin = easy_margin
        self.weight = nn.Parameter(torch.empty(num_classes * sub_centers, embed_dim))  # (N*K, E)
        nn.init.xavier_uniform_(self.weight)
        self.set_margin(margin)

    def set_margin(self, margin: float):
        """Margin-schedule hook: sets m (and scales the inter-top-k penalty alongside)."""
        m = float(margin)
        self.margin = m
        self.cos_m, self.sin_m = math.cos(m), math.sin(m)
        self.th = math.cos(math.pi - m)  # cos(theta) below this means theta + m > pi
        self.mm = math.sin(math.pi - m) * m  # = m sin m, the fallback penalty
        ratio = m / self.final_margin if self.final_margin > 0 else 1.0
        self.penalty = self.final_penalty * ratio
        self.cos_p, self.sin_p = math.cos(self.penalty), math.sin(self.penalty)

    def cosine(self, embeddings: torch.Tensor) -> torch.Tensor:
        """(B, E) -> (B, N) cosine to the nearest sub-centre of each class, in float32."""
        x = F.normalize(embeddings.float(), dim=1)
        w = F.normalize(self.weight.float(), dim=1)
        cos = x @ w.t()  # (B, N*K)
        if self.sub_centers > 1:
            cos = cos.view(-1, self.num_classes, self.sub_centers).amax(dim=2)  # (B, N)
        return cos

    def logits(self, embeddings: torch.Tensor,
               labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(B, N) logits. With labels: the margins applied (what the loss sees);
        without: plain s*cos(theta), e.g. for classification accuracy."""
        cos = self.cosine(embeddings)  # (B, N)
        if labels is None:
            return self.scale * cos
        y = labels.long()[:, None]  # (B, 1): the column index of each row's target class
        # Tensor.scatter / gather along dim 1 work row by row: scatter(1, idx, v) returns a
        # COPY of the (B, N) tensor with row b's columns idx[b] set to v; gather(1, idx)
        # reads row b's columns idx[b]. No in-place write, so autograd sees every step.
        if self.inter_topk > 0 and self.penalty > 0:
            # Hardest negatives. cos.scatter(1, y, -2.0): a copy where each row's target
            # column reads -2.0; every real cosine is >= -1, so the target can never be
            # among the top k, even when k = N - 1 (inter_topk is capped there). Any value
            # below -1 would do; -2.0 stays finite. .topk(k, dim=1) then gives the k
            # largest NON-target cosines per row and their class indices, (B, k) each.
            top_cos, top_idx = cos.scatter(1, y, -2.0).topk(self.inter_topk, dim=1)  # (B, k)
            sin = torch.sqrt((1.0 - top_cos * top_cos).clamp_min(1e-12))
            raised = top_cos * self.cos_p + sin * self.sin_p  # cos(theta - m')
            raised = torch.where(top_cos > self.cos_p,  # theta < m'
                                 torch.ones_like(raised), raised)
            # Write the raised cosines back into the (B, N) matrix at those k columns;
            # the target column and the other negatives keep their values.
            cos = cos.scatter(1, top_idx, raised)
        c = cos.gather(1, y)  # (B, 1) target cosine (never touched by the penalty above)
        # clamp_min keeps the sqrt gradient finite if an embedding sits exactly on its centre
        sin = torch.sqrt((1.0 - c * c).clamp_min(1e-12))
        phi = c * self.cos_m - sin * self.sin_m  # cos(theta + m)
        if self.easy_margin:
            phi = torch.where(c > 0, phi, c)
        else:
            phi = torch.where(c > self.th, phi, c - self.mm)
        # Put cos(theta_y + m) into each row's target column: (B, N) logits with both
        # margins in place, scaled by s.
        return self.scale * cos.scatter(1, y, phi)  # (B, N)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.logits(embeddings, labels), labels.long())


# -----------------------------------------------------------------------------
# Anti-spoofing head

# Class indices of SpoofHead, chosen to match metrics.py's label convention
# (1 = bona fide = the "target" class whose scores should be high).
SPOOF = 0
BONAFIDE = 1


class SpoofHead(nn.Module):
    """Linear layer to 2 logits, trained with cross-entropy.

    Class index 0 = spoof, 1 = bona fide (SPOOF, BONAFIDE above). `class_weight`
    (a length-2 sequence, same order) is passed to the cross-entropy, e.g. to balance
    ASVspoof5's ~1:9 bona fide:spoof training set.
    """

    def __init__(self, embed_dim: int, class_weight: Optional[Sequence[float]] = None):
        super().__init__()
        self.fc = nn.Linear(embed_dim, 2)
        if class_weight is not None:
            self.register_buffer("class_weight", torch.tensor(class_weight, dtype=torch.float32))
        else:
            self.class_weight = None

    def logits(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.fc(embeddings)  # (B, 2)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.logits(embeddings).float(), labels.long(),
                               weight=self.class_weight)


def logits_to_llr(logits, p_bonafide: float = 0.5):
    """2-class logits (..., 2) [spoof, bona fide] -> log-likelihood ratio (...,)
    log p(x | bona fide) - log p(x | spoof).

    Softmax cross-entropy makes the logit difference an estimate of the POSTERIOR
    log-odds under the class prior the classifier was trained with. Bayes' rule,

        log P(bona|x)/P(spoof|x) = log p(x|bona)/p(x|spoof) + log pi/(1 - pi),

    so the LLR is the logit difference minus the prior log-odds. `p_bonafide` = pi is
    that training prior: the bona fide fraction of the training data, or, with class
    weights w, w_b pi / (w_b pi + w_s (1 - pi)). (The prior used to *evaluate*, such as
    ASVspoof5's P_spoof = 0.05, is a different number: it sets the Bayes threshold of
    actDCF, not this conversion.) Only a score in LLR form can be thresholded
    at the Bayes threshold that actDCF uses, and only an LLR has a meaningful Cllr.

    Works on torch tensors and numpy arrays alike.
    """
    if not 0.0 < p_bonafide < 1.0:
        raise ValueError(f"p_bonafide must be in (0, 1), got {p_bonafide}")
    return (logits[..., BONAFIDE] - logits[..., SPOOF]) - math.log(p_bonafide / (1.0 - p_bonafide))
