"""Physical pruning: the pruned dense model must compute what the masked model computes,
and its parameter count must equal expected_num_params() of the masked model in eval."""
import pytest
import torch

import checkpoints
import wavlm_masked as W

CONFIGS = {
    "base-like": dict(),
    "large-like": dict(extractor_mode="layer_norm", layer_norm_first=True, conv_bias=True),
    "hubert-like": dict(relative_position=False),
}


def gated_model(seed, **kw):
    torch.manual_seed(seed)
    model = W.MaskedWavLM(W.WavLMConfig.tiny(prune_units=list(W.PRUNE_UNITS), **kw))
    with torch.no_grad():
        for p in model.model_parameters():          # non-trivial norms and biases
            if p.dim() == 1:
                p.add_(0.1 * torch.randn_like(p))
        for g in model.gates().values():
            g.log_alpha.uniform_(-3.0, 4.0)          # a mix of kept, removed and soft units
    return model


def masked_and_pruned_outputs(model, x, lengths):
    model.eval()
    with torch.no_grad():
        masked, frames = model(x, lengths)
        pruned_model = model.prune()
        pruned, frames2 = pruned_model(x, lengths)
    assert torch.equal(frames, frames2)
    return masked, pruned, frames, pruned_model


def assert_close(masked, pruned, frames, tol=1e-5):
    for a, b in zip(masked, pruned):
        for i, n in enumerate(frames.tolist()):
            diff = (a[i, :n] - b[i, :n]).abs().max().item()
            assert diff <= tol, diff


@pytest.mark.parametrize("kind", CONFIGS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pruned_equals_masked_and_size_is_exact(kind, seed):
    model = gated_model(seed, **CONFIGS[kind])
    x, lengths = torch.randn(2, 9000), torch.tensor([9000, 6500])
    masked, pruned, frames, pruned_model = masked_and_pruned_outputs(model, x, lengths)
    assert_close(masked, pruned, frames)
    assert int(model.expected_num_params().item()) == pruned_model.num_params()
    assert pruned_model.num_params() == sum(p.numel() for p in pruned_model.parameters())
    assert pruned_model.gates() == {}
    # Something of every kind was actually removed, so every code path was exercised.
    cfg = pruned_model.config
    assert any(c < 64 for c, _, _ in cfg.conv_layers) and cfg.conv_layers[-1][0] < 64
    assert any(len(h) < 4 for h in cfg.heads) and any(d < 512 for d in cfg.ffn_dims)


def test_removing_blocks_and_last_conv_channels():
    """Whole attention / FFN blocks (layer 0's attention included) and the last conv
    layer's channels, in the LayerNorm extractor where statistics change."""
    for kind in ("base-like", "large-like"):
        model = gated_model(3, **CONFIGS[kind])
        layers = model.encoder.layers
        with torch.no_grad():
            layers[0].attention_gate.log_alpha.fill_(-10.0)     # layer 0 owns no bias any more
            layers[2].ffn_gate.log_alpha.fill_(-10.0)
            layers[1].attention.head_gate.log_alpha.fill_(-10.0)  # all heads gone, block kept
            layers[1].attention_gate.log_alpha.fill_(10.0)
            model.feature_extractor.conv_layers[-1].channel_gate.log_alpha[:40] = -10.0
        x, lengths = torch.randn(2, 8000), torch.tensor([8000, 5000])
        masked, pruned, frames, pruned_model = masked_and_pruned_outputs(model, x, lengths)
        assert_close(masked, pruned, frames)
        cfg = pruned_model.config
        assert (cfg.attention_blocks[0] is False and cfg.ffn_blocks[2] is False
                and cfg.heads[1] == [])
        assert cfg.conv_layers[-1][0] <= 24
        assert pruned_model.encoder.rel_attn_embed is not None
        assert int(model.expected_num_params().item()) == pruned_model.num_params()


def test_relative_bias_survives_removal_of_layer0_attention():
    model = gated_model(4)
    with torch.no_grad():
        model.encoder.layers[0].attention_gate.log_alpha.fill_(-10.0)
    pruned = model.eval().prune()
    x = torch.randn(1, 8000)
    with torch.no_grad():
        out = pruned(x)[0][-1]
        pruned.encoder.rel_attn_embed.weight.zero_()
        without_bias = pruned(x)[0][-1]
    assert (out - without_bias).abs().max() > 1e-3       # later layers still use the bias


def test_expected_size_in_training_mode():
    model = gated_model(5)
    model.train()
    size = model.expected_num_params()
    size.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.gate_parameters())
    with torch.no_grad():
        for p in model.gate_parameters():
            p.fill_(30.0)                       # P(z != 0) = 1 everywhere: the dense size
    assert abs(model.expected_num_params().item() - model.num_params()) < 1e-3
    with torch.no_grad():
        for p in model.gate_parameters():
            p.fill_(-30.0)                      # only the parts without gates remain
    model.eval()
    assert int(model.expected_num_params().item()) == model.prune().num_params()


def test_save_load_roundtrip(tmp_path):
    model = gated_model(6)
    model.eval()
    x = torch.randn(2, 6000)
    for m in (model, model.prune()):
        checkpoints.save_model(m, tmp_path / "m.pt",
                               extra={"head": {"w": torch.ones(2)}, "note": "x"})
        loaded, extra = checkpoints.load_model(tmp_path / "m.pt")
        loaded.eval()
        assert extra["note"] == "x" and torch.equal(extra["head"]["w"], torch.ones(2))
        with torch.no_grad():
            for a, b in zip(m(x)[0], loaded(x)[0]):
                assert torch.equal(a, b)
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read checkpoint"):
        checkpoints.load_model(tmp_path / "bad.pt")
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a model file"):
        checkpoints.load_model(tmp_path / "other.pt")


@pytest.mark.parametrize("target", [0.3, 0.5, 0.7, 0.9])
def test_shift_gates_to_size_exports_the_target(target):
    """The settle phase's projection: the exported size lands on the target (within the
    ±0.005 the training recipe promises), and it is the size prune() produces."""
    torch.manual_seed(0)
    model = W.MaskedWavLM(W.WavLMConfig.tiny(prune_units=list(W.PRUNE_UNITS))).eval()
    params0 = W.MaskedWavLM(W.WavLMConfig.tiny()).num_params()
    with torch.no_grad():                           # spread the logits, as training does
        for gate in model.gates().values():
            gate.log_alpha.normal_(1.0, 2.0)
    model.shift_gates_to_size((1 - target) * params0)
    exported = model.expected_num_params().item()
    assert abs(1 - exported / params0 - target) <= 0.005
    assert model.prune().num_params() == exported
