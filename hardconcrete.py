"""
HardConcrete gates: a differentiable stand-in for "keep this unit or drop it".

Reference: C. Louizos, M. Welling, D. P. Kingma, "Learning Sparse Neural Networks
through L0 Regularization", ICLR 2018 (arXiv 1712.01312), Sec. 2.3-2.4, eq. (9)-(12).
Used by the seed paper (Peng et al. 2025, "Hybrid Pruning", arXiv 2508.16232, Sec. 2)
to put one gate on every prunable structure of WavLM.

The problem. We want to minimise  task_loss + lambda * ||theta||_0, where the L0 "norm"
counts the units that are switched on. Counting is not differentiable. Louizos et al.
put a random gate z in [0, 1] on each unit and minimise the *expected* loss instead;
the expected number of non-zero gates IS differentiable in the gate parameters.

The distribution of one gate (parameters log_alpha, temperature beta, stretch l < 0 < 1 < r):

    u ~ U(0, 1)
    s = sigmoid((log u - log(1 - u) + log_alpha) / beta)     # "binary concrete" in (0, 1)
    s_bar = s * (r - l) + l                                   # stretched to (l, r) = (-0.1, 1.1)
    z = clamp(s_bar, 0, 1)                                    # "hard": clipped to [0, 1]

Stretching past [0, 1] and clipping back puts real probability mass exactly AT 0 and
AT 1 (all the mass of s_bar below 0 collapses to z = 0, all above 1 to z = 1). So a
sampled gate can switch a unit off exactly, yet z stays a differentiable function of
log_alpha on the interval where it is not clipped (the reparameterisation trick).

Why P(z != 0) has a closed form. z != 0  <=>  s_bar > 0  <=>  s > -l / (r - l).
Because s = sigmoid((logit(u) + log_alpha) / beta) is monotone in u, this is the event

    logit(u) > beta * logit(-l / (r - l)) - log_alpha = beta * log(-l / r) - log_alpha

(using logit(-l/(r-l)) = log(-l / r)). logit(u) of a uniform u is a standard logistic
variable, whose survival function is sigmoid(-x). Hence

    P(z != 0) = sigmoid(log_alpha - beta * log(-l / r))                      (eq. 12)

which for beta = 2/3, l = -0.1, r = 1.1 is sigmoid(log_alpha + 1.5986). Summed over
the units of a group it is the expected number of kept units, `l0_norm()`.

At evaluation we need one fixed architecture, not a random one. Following the seed
paper's released code (inherited from DPHuBERT), the eval gate keeps the
round(E[L0]) units with the largest log_alpha, zeroes the rest, and keeps each kept
unit's soft value sigmoid(0.8 * log_alpha / beta) in (0, 1). Those soft values are NOT
lost when the model is physically pruned: `wavlm_masked.MaskedWavLM.prune()` folds
them into the next layer's weights, so pruned and masked models compute the same.
"""

import math

import torch
import torch.nn as nn

# The constants of Louizos et al. (2018), Sec. 4: temperature 2/3, stretch (-0.1, 1.1).
TEMPERATURE = 2.0 / 3.0
STRETCH_LOW = -0.1
STRETCH_HIGH = 1.1
EPS = 1e-6  # keeps log(u) and log(1 - u) finite when u is drawn


class HardConcrete(nn.Module):
    """One group of `n` gates (e.g. the 12 heads of one attention layer).

    forward() returns the gate vector z of shape (n,):
      * training: a fresh sample from the HardConcrete distribution (differentiable);
      * eval:     the deterministic mask (round(l0_norm) units kept, soft values).
    """

    def __init__(self, n: int, init_drop_rate: float = 0.5,
                 temperature: float = TEMPERATURE,
                 stretch_low: float = STRETCH_LOW, stretch_high: float = STRETCH_HIGH,
                 min_kept: int = 0):
        super().__init__()
        if n < 1:
            raise ValueError(f"a HardConcrete group needs at least one unit, got n={n}")
        if not 0.0 < init_drop_rate < 1.0:
            raise ValueError(f"init_drop_rate must lie in (0, 1), got {init_drop_rate}")
        self.n = n
        # A floor on the eval mask, for groups that must never be empty (a conv layer
        # with no channels would disconnect the model from its input). 0 = no floor.
        self.min_kept = min_kept
        self.init_drop_rate = init_drop_rate
        self.temperature = temperature
        self.stretch_low = stretch_low
        self.stretch_high = stretch_high
        # log(-l/r) appears in P(z != 0); beta * log(-l/r) = -1.5986 for the defaults.
        self.log_ratio = math.log(-stretch_low / stretch_high)
        self.log_alpha = nn.Parameter(torch.empty(n))
        self.reset_parameters()

    def reset_parameters(self):
        # Start near "keep with probability 1 - p": sigmoid(log_alpha) = 1 - p when
        # log_alpha = log(1 - p) - log(p). The tiny noise breaks ties between units.
        p = self.init_drop_rate
        with torch.no_grad():
            self.log_alpha.normal_(math.log(1.0 - p) - math.log(p), 0.01)

    # ----------------------------------------------------------------------- L0
    def keep_probability(self) -> torch.Tensor:
        """P(z_i != 0) for every unit, shape (n,). Closed form, eq. (12)."""
        return torch.sigmoid(self.log_alpha - self.temperature * self.log_ratio)

    def l0_norm(self) -> torch.Tensor:
        """Expected number of kept units, a differentiable scalar."""
        return self.keep_probability().sum()

    def num_kept(self) -> int:
        """How many units the deterministic (eval) mask keeps: round(E[L0])."""
        return max(self.min_kept, int(torch.round(self.l0_norm().detach()).item()))

    def num_kept_tensor(self) -> torch.Tensor:
        """num_kept() as a float64 tensor on the gate's device: no .item(), so on a GPU
        the training loop's size estimate does not wait for the GPU once per gate."""
        return torch.round(self.l0_norm().detach()).clamp(min=self.min_kept).double()

    # --------------------------------------------------------------------- masks
    def sample(self) -> torch.Tensor:
        """One draw z ~ HardConcrete(log_alpha), shape (n,); gradients reach log_alpha."""
        u = torch.empty_like(self.log_alpha).uniform_(EPS, 1.0 - EPS)
        s = torch.sigmoid((torch.log(u) - torch.log1p(-u) + self.log_alpha) / self.temperature)
        s_bar = s * (self.stretch_high - self.stretch_low) + self.stretch_low
        return s_bar.clamp(0.0, 1.0)

    def deterministic_mask(self) -> torch.Tensor:
        """Eval mask, shape (n,): the top-round(L0) units keep a soft value, others are 0.

        It is recomputed on every call instead of being cached. A cached mask is a
        known source of bugs (it goes stale after an optimiser step or a
        load_state_dict in eval mode) and recomputing costs one top-k over <= a few
        thousand numbers, nothing next to a transformer layer.
        """
        # Why 0.8: it is an empirical constant, not a derived one. It comes from FLOP
        # (Wang, Wohlwend & Lei, "Structured Pruning of Large Language Models", EMNLP
        # 2020, arXiv 1910.04732), whose code calls it "an empirically validated magic
        # number" for approximating E[z]. CoFi (Xia et al., ACL 2022) keeps it as
        # `magical_number=0.8`, citing Wang et al.; DPHuBERT copies FLOP's gate and the
        # seed paper's recipes reuse DPHuBERT's. What it does: sigmoid(log_alpha / beta)
        # is the gate's noise-free value (u = 1/2, before the stretch), and the factor
        # softens it to the temperature beta / 0.8 = 5/6, pulling values toward 1/2.
        # For log_alpha = 2: 0.917 instead of 0.953, while the true E[z] is 0.857. It
        # changes no kept set (the ranking uses log_alpha), only the kept values.
        soft = torch.sigmoid(0.8 * self.log_alpha / self.temperature)
        k = self.num_kept()
        mask = torch.zeros_like(soft)
        if k > 0:
            # Rank by log_alpha (= by soft value, sigmoid is monotone). Exact ties
            # are left to torch.topk, whose order among equals is not specified; the
            # initial noise on log_alpha makes them practically impossible.
            keep = torch.topk(self.log_alpha.detach(), k).indices
            mask[keep] = 1.0
        return soft * mask

    def forward(self) -> torch.Tensor:
        return self.sample() if self.training else self.deterministic_mask()

    def extra_repr(self) -> str:
        return (f"n={self.n}, init_drop_rate={self.init_drop_rate}, "
                f"temperature={self.temperature:.4f}")
