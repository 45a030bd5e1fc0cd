"""Tests for heads.py: pooling heads (shapes, parameter count, padding invariance),
the gradient multiplier, AAM-softmax against direct formulas, and the spoofing head."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import heads


def rand_hidden(L, B, T, D, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, T, D, generator=g) for _ in range(L)]


def randomise_layer_weights(head, seed=1):
    """Zero init makes the layer softmax uniform, a special case; use uneven weights."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in head.named_parameters():
            if p.dim() == 1 and p.numel() == head.num_layers:
                p.copy_(torch.randn(p.shape, generator=g))


# -----------------------------------------------------------------------------
# MHFA


def mhfa_param_formula(L, D, C, H, E):
    # two layer-weight vectors, two compressions D->C, attention C->H, output H*C->E
    return 2 * L + 2 * (D * C + C) + (C * H + H) + (H * C * E + E)


def test_mhfa_parameter_count():
    n = sum(p.numel() for p in heads.MHFA(13, 768).parameters())
    assert n == mhfa_param_formula(13, 768, 128, 32, 256) == 1_249_850
    assert 1.2e6 <= n <= 1.3e6  # "about 1.25 M" for WavLM Base
    n = sum(p.numel() for p in heads.MHFA(25, 1024, compression_dim=64, num_heads=8,
                                          embed_dim=192).parameters())
    assert n == mhfa_param_formula(25, 1024, 64, 8, 192)


def test_mhfa_shapes_and_attention():
    head = heads.MHFA(5, 32, compression_dim=16, num_heads=4, embed_dim=24)
    hs = rand_hidden(5, 3, 20, 32)
    lengths = torch.tensor([20, 11, 3])
    emb, att = head(hs, lengths, return_attention=True)
    assert emb.shape == (3, 24) and att.shape == (3, 4, 20)
    assert torch.allclose(att.sum(-1), torch.ones(3, 4), atol=1e-6)
    for b, n in enumerate(lengths.tolist()):
        assert torch.all(att[b, :, n:] == 0)  # exactly zero on padding
    assert torch.equal(head(torch.stack(hs), lengths), emb)  # a stacked (L, B, T, D) works too
    with pytest.raises(ValueError, match="expects 5"):
        head(hs[:4], lengths)
    emb.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in head.parameters())


@pytest.mark.parametrize("make", [
    lambda: heads.MHFA(13, 768),
    lambda: heads.ASPHead(13, 768, attentive=True),
    lambda: heads.ASPHead(13, 768, attentive=False),
])
def test_padding_invariance(make):
    torch.manual_seed(0)
    head = make().eval()
    randomise_layer_weights(head)
    lengths = [50, 37, 12, 1]
    singles = [rand_hidden(13, 1, n, 768, seed=10 + i) for i, n in enumerate(lengths)]
    # pad with large garbage, not zeros, so that any leak of padding shows
    batch = [torch.randn(4, 50, 768) * 100 for _ in range(13)]
    for l in range(13):
        for b, n in enumerate(lengths):
            batch[l][b, :n] = singles[b][l][0]
    with torch.no_grad():
        padded = head(batch, torch.tensor(lengths))
        alone = torch.cat([head(s) for s in singles])  # lengths=None: no padding at all
        unmasked = head(batch)
    assert torch.allclose(padded, alone, atol=1e-5, rtol=0), (padded - alone).abs().max()
    # negative control: the same batch without lengths does differ, so the check can fail
    assert not torch.allclose(unmasked[1:], alone[1:], atol=1e-3)


# -----------------------------------------------------------------------------
# gradient multiplier


def test_scale_grad():
    x = torch.randn(3, 4, requires_grad=True)
    w = torch.randn(3, 4)
    y = heads.scale_grad(x, 0.1)
    assert torch.equal(y, x)  # identity forward, bit-exact
    (y * w).sum().backward()
    assert torch.allclose(x.grad, 0.1 * w)
    x.grad = None
    (heads.scale_grad(heads.scale_grad(x, 0.1), 0.1) * w).sum().backward()
    assert torch.allclose(x.grad, 0.01 * w)
    assert heads.scale_grad(x, 1.0) is x


# -----------------------------------------------------------------------------
# AAM-softmax


def embeddings_at_angles(weight_row, thetas, seed=0):
    """Embeddings whose angle to `weight_row` is exactly theta (up to float rounding)."""
    g = torch.Generator().manual_seed(seed)
    w = F.normalize(weight_row.double(), dim=0)
    out = []
    for th in thetas:
        u = torch.randn(w.shape, generator=g, dtype=torch.float64)
        u = F.normalize(u - (u @ w) * w, dim=0)  # orthogonal to w
        out.append(math.cos(th) * w + math.sin(th) * u)
    return torch.stack(out).float()


def direct_cos(x, weight, num_classes, K):
    c = F.normalize(x.double(), dim=1) @ F.normalize(weight.double(), dim=1).t()  # (B, N*K)
    return c.view(len(x), num_classes, K).amax(2)


def test_aam_margin_zero_is_scaled_cosine_softmax():
    torch.manual_seed(0)
    aam = heads.AAMSoftmax(16, 10, scale=32.0, margin=0.0)
    x, y = torch.randn(64, 16), torch.randint(0, 10, (64,))
    ref = F.cross_entropy(32.0 * direct_cos(x, aam.weight.detach(), 10, 1), y)
    assert aam(x, y).item() == pytest.approx(ref.item(), abs=1e-5)


@pytest.mark.parametrize("easy", [False, True])
def test_aam_target_logit_is_s_cos_theta_plus_m(easy):
    torch.manual_seed(0)
    s, m, N = 32.0, 0.2, 7
    aam = heads.AAMSoftmax(16, N, scale=s, margin=m, easy_margin=easy)
    thetas = np.linspace(0.05, math.pi - 0.05, 40)  # covers theta + m > pi; avoids pi/2 exactly
    y = torch.arange(40) % N
    x = torch.cat([embeddings_at_angles(aam.weight[y[i]].detach(), [t], seed=i)
                   for i, t in enumerate(thetas)])
    logits = aam.logits(x, y).double()
    cos = direct_cos(x, aam.weight.detach(), N, 1)  # (B, N)
    for i, th in enumerate(thetas):
        c = float(cos[i, y[i]])
        assert c == pytest.approx(math.cos(th), abs=1e-6)
        t = math.acos(c)
        if easy:
            want = s * (math.cos(t + m) if c > 0 else c)
        else:
            # cos(theta + m) where theta + m <= pi, else the decreasing continuation
            want = s * (math.cos(t + m) if t + m <= math.pi else c - m * math.sin(m))
        assert logits[i, y[i]].item() == pytest.approx(want, abs=1e-4)
        others = torch.arange(N) != y[i]
        assert torch.allclose(logits[i, others], s * cos[i, others], atol=1e-4)  # untouched
    assert aam(x, y).item() == pytest.approx(F.cross_entropy(logits, y).item(), abs=1e-5)
    # the margin can only lower the target logit (for theta in (0, pi))
    assert torch.all(logits[torch.arange(40), y] <= s * cos[torch.arange(40), y] + 1e-4)


def test_aam_sub_centres_take_the_nearest_centre():
    torch.manual_seed(1)
    aam = heads.AAMSoftmax(8, 5, margin=0.0, sub_centers=3)
    assert aam.weight.shape == (15, 8)
    x, y = torch.randn(20, 8), torch.randint(0, 5, (20,))
    want = direct_cos(x, aam.weight.detach(), 5, 3)
    assert torch.allclose(aam.cosine(x).double(), want, atol=1e-6)
    assert torch.allclose(aam.logits(x, y).double(), 32.0 * want, atol=1e-4)


def test_aam_inter_topk_penalty():
    torch.manual_seed(2)
    s, m, mp, k, N = 32.0, 0.2, 0.06, 3, 9
    aam = heads.AAMSoftmax(12, N, scale=s, margin=m, sub_centers=2, inter_topk=k, inter_penalty=mp)
    x, y = torch.randn(30, 12), torch.randint(0, N, (30,))
    # make some samples sit almost on a non-target centre: theta < m' clamps to cosine 1
    x[:3] = aam.weight.detach()[2 * ((y[:3] + 1) % N)] + 1e-4 * torch.randn(3, 12)
    cos = direct_cos(x, aam.weight.detach(), N, 2).numpy()
    logits = aam.logits(x, y).detach().double().numpy()
    for i in range(30):
        yi = int(y[i])
        t = math.acos(cos[i, yi])
        assert logits[i, yi] == pytest.approx(s * math.cos(t + m), abs=1e-4)
        non = [j for j in range(N) if j != yi]
        top = sorted(non, key=lambda j: -cos[i, j])[:k]
        for j in non:
            tj = math.acos(min(1.0, cos[i, j]))
            want = s * (math.cos(max(tj - mp, 0.0)) if j in top else cos[i, j])
            assert logits[i, j] == pytest.approx(want, abs=1e-4)
    assert np.allclose(logits[:3].max(1), s, atol=1e-4)  # the clamped near-centre cases
    # the penalty follows the margin schedule: half the margin, half the penalty
    aam.set_margin(0.1)
    assert aam.penalty == pytest.approx(0.03) and aam.margin == 0.1
    aam.set_margin(0.0)
    assert torch.allclose(aam.logits(x, y), aam.logits(x), atol=1e-5)  # no margin, no penalty


def test_aam_gradient_finite_on_the_centre():
    aam = heads.AAMSoftmax(8, 4, margin=0.2, inter_topk=2, inter_penalty=0.06)
    x = aam.weight.detach()[[0, 1]].clone().requires_grad_(True)  # cos = 1 exactly
    aam(x, torch.tensor([0, 1])).backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(aam.weight.grad).all()


def test_margin_schedule():
    f = lambda step: heads.margin_schedule(step, 1000, 0.2, start_frac=0.1, end_frac=0.3)
    assert f(0) == 0.0 and f(99) == 0.0 and f(100) == 0.0
    assert f(200) == pytest.approx(0.1) and f(300) == 0.2 and f(999) == 0.2
    assert all(f(a) <= f(a + 1) for a in range(999))
    assert heads.margin_schedule(5, 10, 0.2, 0.5, 0.5) == 0.2  # a step, no ramp
    with pytest.raises(ValueError):
        heads.margin_schedule(0, 10, 0.2, 0.6, 0.5)


# -----------------------------------------------------------------------------
# spoofing head


def test_spoof_head_loss_and_classes():
    torch.manual_seed(3)
    head = heads.SpoofHead(16, class_weight=[0.9, 0.1])
    x, y = torch.randn(10, 16), torch.randint(0, 2, (10,))
    z = head.logits(x)
    assert z.shape == (10, 2)
    assert head(x, y).item() == pytest.approx(
        F.cross_entropy(z, y, weight=torch.tensor([0.9, 0.1])).item(), rel=1e-6)
    assert (heads.SPOOF, heads.BONAFIDE) == (0, 1)


def test_logits_to_llr_removes_the_training_prior():
    """If the logits are exact log joint probabilities (+ any per-row constant, which
    softmax ignores), the LLR must come out as log p(x|bona) - log p(x|spoof)."""
    rng = np.random.default_rng(4)
    log_pb, log_ps = rng.normal(size=50), rng.normal(size=50)
    for prior in (0.05, 0.5, 0.9):
        const = rng.normal(size=50) * 10
        z = np.stack([log_ps + math.log(1 - prior), log_pb + math.log(prior)],
                     axis=1) + const[:, None]
        assert np.allclose(heads.logits_to_llr(z, prior), log_pb - log_ps, atol=1e-10)
        zt = torch.from_numpy(z)
        assert torch.allclose(heads.logits_to_llr(zt, prior), torch.from_numpy(log_pb - log_ps),
                              atol=1e-10)
    with pytest.raises(ValueError):
        heads.logits_to_llr(z, 1.0)
