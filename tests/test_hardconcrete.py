"""HardConcrete gate: the sampled distribution against its closed form (Louizos et al. 2018)."""
import math

import torch

from hardconcrete import HardConcrete


def test_init_follows_drop_rate():
    for p in (0.01, 0.5, 0.9):
        g = HardConcrete(4000, init_drop_rate=p)
        assert abs(g.log_alpha.mean().item() - (math.log(1 - p) - math.log(p))) < 0.01
        assert abs(g.log_alpha.std().item() - 0.01) < 0.002


def test_sampled_nonzero_frequency_matches_closed_form():
    torch.manual_seed(0)
    g = HardConcrete(7)
    with torch.no_grad():
        g.log_alpha.copy_(torch.tensor([-4.0, -2.0, -1.0, 0.0, 1.0, 2.0, 4.0]))
    g.train()
    samples = torch.stack([g() for _ in range(40000)])                  # (N, 7)
    freq_nonzero = (samples > 0).float().mean(0)
    closed = torch.sigmoid(g.log_alpha - (2 / 3) * math.log(0.1 / 1.1)).detach()
    assert torch.allclose(freq_nonzero, closed, atol=0.01), (freq_nonzero, closed)
    assert torch.allclose(g.l0_norm().detach(), closed.sum())
    # All samples lie in [0, 1], with real mass exactly at both ends.
    assert samples.min() >= 0 and samples.max() <= 1
    assert (samples == 0).any() and (samples == 1).any()


def test_eval_mask_keeps_round_l0_units():
    torch.manual_seed(1)
    for _ in range(20):
        n = int(torch.randint(1, 60, ()).item())
        g = HardConcrete(n)
        with torch.no_grad():
            g.log_alpha.uniform_(-6, 6)
        g.eval()
        z = g()
        expected = int(round(g.l0_norm().item()))
        assert int((z > 0).sum()) == expected == g.num_kept()
        # The kept units are those with the largest log_alpha.
        if 0 < expected < n:
            assert g.log_alpha[z > 0].min() >= g.log_alpha[z == 0].max()
        assert torch.equal(g(), z)                                  # deterministic


def test_gradients_reach_log_alpha():
    g = HardConcrete(5)
    g.train()
    (g() * torch.arange(5.0)).sum().backward()
    assert g.log_alpha.grad is not None and g.log_alpha.grad.abs().sum() > 0
    g.zero_grad()
    g.l0_norm().backward()
    assert (g.log_alpha.grad > 0).all()


def test_eval_mask_follows_parameter_changes():
    """No stale mask after load_state_dict or an optimiser step in eval mode."""
    g = HardConcrete(10)
    g.eval()
    before = g().clone()
    g.load_state_dict({"log_alpha": torch.linspace(-5, 5, 10)})
    after = g()
    assert not torch.equal(before, after)
    assert int((after > 0).sum()) == g.num_kept()
    opt = torch.optim.SGD(g.parameters(), lr=100.0)
    g.log_alpha.grad = torch.ones(10)           # pushes every log_alpha down by 100
    opt.step()
    assert int((g() > 0).sum()) == 0
