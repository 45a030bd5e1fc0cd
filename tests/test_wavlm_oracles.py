"""Our WavLM against trusted implementations with random weights (minGPT-style import tests).

Oracles: torchaudio.models.wavlm_model (state-dict .pth), transformers.WavLMModel /
HubertModel (a saved HF folder), and a unilm-format .pt (cfg + model) built from the HF
weights with the unilm key names. Every hidden state must agree to 1e-4 in fp32.
"""
import re

import numpy as np
import pytest
import torch
import transformers

import wavlm_masked as W
from pretrained import (load_pretrained, parse_conv_layers, perturb_norms_and_biases_,
                        torchaudio_hidden_states, torchaudio_wavlm)

TOL = 1e-4


def max_diff(a, b):
    return (a - b).abs().max().item()


@pytest.mark.parametrize("cfg", [
    W.WavLMConfig.tiny(),
    W.WavLMConfig.tiny(extractor_mode="layer_norm", layer_norm_first=True, conv_bias=True),
    pytest.param(W.WavLMConfig.wavlm_base(), marks=pytest.mark.slow),
], ids=["tiny-base", "tiny-large", "wavlm-base"])
def test_matches_torchaudio(cfg, tmp_path):
    torch.manual_seed(0)
    ref = perturb_norms_and_biases_(torchaudio_wavlm(cfg))
    torch.save(ref.state_dict(), tmp_path / "ta.pth")
    ours = load_pretrained(tmp_path / "ta.pth").eval()
    assert ours.num_params() == sum(p.numel() for p in ref.parameters())
    if cfg.num_layers == 12:
        assert ours.num_params() == 94_381_168    # torchaudio wavlm_base(), docs/method.md Sec. 3
    x = torch.randn(2, 16000)
    with torch.no_grad():
        expected = torchaudio_hidden_states(ref, x, cfg.layer_norm_first,    # L+1 states
                                            ours.config.normalize_waveform)
        got, _ = ours(x)
    assert len(got) == len(expected) == cfg.num_layers + 1
    for a, b in zip(got, expected):
        assert max_diff(a, b) < TOL


def hf_config(large: bool, model_type="wavlm"):
    kw = dict(hidden_size=64, num_hidden_layers=3, num_attention_heads=4, intermediate_size=128,
              conv_dim=[32] * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
              hidden_dropout=0.0, attention_dropout=0.0,
              activation_dropout=0.0, feat_proj_dropout=0.0, layerdrop=0.0,
              feat_extract_norm="layer" if large else "group", do_stable_layer_norm=large,
              conv_bias=large)
    if model_type == "wavlm":
        return transformers.WavLMConfig(max_bucket_distance=800, **kw)
    return transformers.HubertConfig(**kw)


def hf_outputs(model, x, lengths, normalize=False):
    mask = (torch.arange(x.shape[1])[None] < lengths[:, None]).long()
    if normalize:         # what the release's feature extractor does first (do_normalize)
        x = torch.from_numpy(np.stack(transformers.Wav2Vec2FeatureExtractor.zero_mean_unit_var_norm(
            list(x.numpy()), attention_mask=list(mask.numpy()), padding_value=0.0)))
    with torch.no_grad():
        out = model(x, attention_mask=mask, output_hidden_states=True)
    # transformers lists each layer's raw output; the pre-LN final LayerNorm is only in
    # last_hidden_state, which is what our last hidden state is.
    return list(out.hidden_states[:-1]) + [out.last_hidden_state]


def assert_same_valid_frames(got, expected, frames):
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        for i, n in enumerate(frames.tolist()):
            assert max_diff(a[i, :n], b[i, :n]) < TOL


@pytest.mark.parametrize("large", [False, True], ids=["base-like", "large-like"])
def test_matches_transformers_with_padding(large, tmp_path):
    torch.manual_seed(0)
    ref = perturb_norms_and_biases_(transformers.WavLMModel(hf_config(large)))
    ref.save_pretrained(tmp_path)
    ours = load_pretrained(tmp_path).eval()
    x = torch.randn(3, 12000)
    lengths = torch.tensor([12000, 9001, 4000])
    got, frames = ours(x, lengths)
    assert frames.tolist() == ref._get_feat_extract_output_lengths(lengths).tolist()
    assert_same_valid_frames(got, hf_outputs(ref, x, lengths, ours.config.normalize_waveform),
                             frames)
    # And without padding (lengths=None): every frame.
    full, none = ours(x[:1])
    assert none is None
    assert_same_valid_frames(full, hf_outputs(ref, x[:1], torch.tensor([12000]), large),
                             torch.tensor([full[0].shape[1]]))


def test_matches_hubert(tmp_path):
    """Without the relative position bias the same code is HuBERT Base."""
    torch.manual_seed(0)
    ref = perturb_norms_and_biases_(transformers.HubertModel(hf_config(False, "hubert")))
    ref.save_pretrained(tmp_path)
    ours = load_pretrained(tmp_path).eval()
    assert not ours.config.relative_position
    x, lengths = torch.randn(2, 8000), torch.tensor([8000, 5000])
    got, frames = ours(x, lengths)
    assert_same_valid_frames(got, hf_outputs(ref, x, lengths, ours.config.normalize_waveform),
                             frames)


# HF name -> unilm name, written independently of the library's own map.
HF_TO_UNILM = [
    (r"feature_extractor\.conv_layers\.(\d+)\.conv\.", r"feature_extractor.conv_layers.\1.0."),
    (r"feature_extractor\.conv_layers\.0\.layer_norm\.", "GROUP_OR_LAYER_0"),
    (r"feature_extractor\.conv_layers\.(\d+)\.layer_norm\.",
     r"feature_extractor.conv_layers.\1.2.1."),
    (r"feature_projection\.layer_norm\.", "layer_norm."),
    (r"feature_projection\.projection\.", "post_extract_proj."),
    (r"encoder\.pos_conv_embed\.conv\.parametrizations\.weight\.original0",
     "encoder.pos_conv.0.weight_g"),
    (r"encoder\.pos_conv_embed\.conv\.parametrizations\.weight\.original1",
     "encoder.pos_conv.0.weight_v"),
    (r"encoder\.pos_conv_embed\.conv\.bias", "encoder.pos_conv.0.bias"),
    (r"encoder\.layers\.0\.attention\.rel_attn_embed\.",
     "encoder.layers.0.self_attn.relative_attention_bias."),
    (r"encoder\.layers\.(\d+)\.attention\.gru_rel_pos_linear\.",
     r"encoder.layers.\1.self_attn.grep_linear."),
    (r"encoder\.layers\.(\d+)\.attention\.gru_rel_pos_const",
     r"encoder.layers.\1.self_attn.grep_a"),
    (r"encoder\.layers\.(\d+)\.attention\.", r"encoder.layers.\1.self_attn."),
    (r"encoder\.layers\.(\d+)\.layer_norm\.", r"encoder.layers.\1.self_attn_layer_norm."),
    (r"encoder\.layers\.(\d+)\.feed_forward\.intermediate_dense\.", r"encoder.layers.\1.fc1."),
    (r"encoder\.layers\.(\d+)\.feed_forward\.output_dense\.", r"encoder.layers.\1.fc2."),
    (r"masked_spec_embed", "mask_emb"),
]


@pytest.mark.parametrize("large", [False, True], ids=["base-like", "large-like"])
def test_matches_unilm_checkpoint(large, tmp_path):
    torch.manual_seed(0)
    ref = perturb_norms_and_biases_(transformers.WavLMModel(hf_config(large)))
    model_sd = {}
    for key, value in ref.state_dict().items():
        for pattern, repl in HF_TO_UNILM:
            if re.match(pattern, key):
                if repl == "GROUP_OR_LAYER_0":
                    repl = ("feature_extractor.conv_layers.0.2.1." if large
                            else "feature_extractor.conv_layers.0.2.")
                key = re.sub(pattern, repl, key, count=1)
                break
        model_sd[key] = value.clone()
    c = ref.config
    cfg = {"extractor_mode": "layer_norm" if large else "default",
           "encoder_layers": c.num_hidden_layers,
           "encoder_embed_dim": c.hidden_size, "encoder_ffn_embed_dim": c.intermediate_size,
           "encoder_attention_heads": c.num_attention_heads, "layer_norm_first": large,
           "conv_feature_layers": "[(32, 10, 5)] + [(32, 3, 2)] * 4 + [(32, 2, 2)] * 2",
           "conv_bias": large, "conv_pos": 16, "conv_pos_groups": 4,
           "relative_position_embedding": True, "num_buckets": 320,
           "max_distance": 800, "gru_rel_pos": True, "normalize": large}
    torch.save({"cfg": cfg, "model": model_sd}, tmp_path / "WavLM-tiny.pt")
    ours = load_pretrained(tmp_path / "WavLM-tiny.pt").eval()
    x, lengths = torch.randn(2, 8000), torch.tensor([8000, 6000])
    got, frames = ours(x, lengths)
    assert_same_valid_frames(got, hf_outputs(ref, x, lengths, ours.config.normalize_waveform),
                             frames)


def test_open_gates_change_nothing(tmp_path):
    torch.manual_seed(0)
    ref = perturb_norms_and_biases_(transformers.WavLMModel(hf_config(True)))
    ref.save_pretrained(tmp_path)
    ours = load_pretrained(tmp_path, prune_units=W.PRUNE_UNITS).eval()
    assert len(ours.gates()) == 7 + 4 * 3
    with torch.no_grad():
        for p in ours.gate_parameters():
            p.fill_(20.0)
    x, lengths = torch.randn(2, 8000), torch.tensor([8000, 7000])
    got, frames = ours(x, lengths)
    assert_same_valid_frames(got, hf_outputs(ref, x, lengths, ours.config.normalize_waveform),
                             frames)


def test_conv_layer_parser_refuses_code():
    assert (parse_conv_layers("[(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512,2,2)] * 2")
            == W.STANDARD_CONV_LAYERS)
    with pytest.raises(ValueError, match="unsupported"):
        parse_conv_layers("__import__('os').system('true')")


def test_bad_checkpoints_fail_loudly(tmp_path):
    torch.manual_seed(0)
    ref = torchaudio_wavlm(W.WavLMConfig.tiny())
    sd = ref.state_dict()
    torch.save(sd, tmp_path / "good.pth")
    data = (tmp_path / "good.pth").read_bytes()
    (tmp_path / "truncated.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cannot read checkpoint"):
        load_pretrained(tmp_path / "truncated.pth")
    torch.save({"foo": torch.zeros(3)}, tmp_path / "foreign.pth")
    with pytest.raises(ValueError, match="unrecognised checkpoint layout"):
        load_pretrained(tmp_path / "foreign.pth")
    partial = {k: v for k, v in sd.items() if "layers.2.feed_forward" not in k}
    torch.save(partial, tmp_path / "partial.pth")
    with pytest.raises(ValueError, match=r"missing keys \(4\).*layers\.2\.feed_forward"):
        load_pretrained(tmp_path / "partial.pth")
    extra = dict(sd, **{"encoder.transformer.layers.0.attention.something_new": torch.zeros(1)})
    torch.save(extra, tmp_path / "extra.pth")
    with pytest.raises(ValueError, match="something_new"):
        load_pretrained(tmp_path / "extra.pth")
    # Wrong shape: a unilm file whose config claims a bigger FFN than its weights hold.
    hf = transformers.WavLMModel(hf_config(False))
    hf.save_pretrained(tmp_path / "hf")
    cfg_text = (tmp_path / "hf" / "config.json").read_text().replace('"intermediate_size": 128',
                                                                      '"intermediate_size": 256')
    (tmp_path / "hf" / "config.json").write_text(cfg_text)
    with pytest.raises(ValueError, match="shape mismatches"):
        load_pretrained(tmp_path / "hf")
    with pytest.raises(FileNotFoundError, match="neither a file"):
        load_pretrained(tmp_path / "nope.pt")


def test_waveform_normalisation_follows_the_checkpoint(tmp_path):
    """Large checkpoints expect each utterance at zero mean and unit variance: the flag comes
    from unilm's cfg "normalize", HF's preprocessor_config.json (or, without one, the
    extractor type), and the extractor type for torchaudio; padding does not change it."""
    torch.manual_seed(0)
    ref = perturb_norms_and_biases_(transformers.WavLMModel(hf_config(True)))
    ref.save_pretrained(tmp_path)
    assert load_pretrained(tmp_path).config.normalize_waveform            # Large-style: on
    (tmp_path / "preprocessor_config.json").write_text('{"do_normalize": false}')
    plain = load_pretrained(tmp_path).eval()
    assert not plain.config.normalize_waveform                             # the file says no
    x, lengths = 3.0 * torch.randn(2, 8000) + 0.5, torch.tensor([8000, 5000])
    got, frames = plain(x, lengths)
    assert_same_valid_frames(got, hf_outputs(ref, x, lengths), frames)
    torch.save(torchaudio_wavlm(W.WavLMConfig.tiny()).state_dict(), tmp_path / "base.pth")
    assert not load_pretrained(tmp_path / "base.pth").config.normalize_waveform
    # Per utterance: the second one padded in a batch gives what it gives alone (a Large-style
    # model, whose extractor has no statistics over time that padding would change).
    normed = W.MaskedWavLM(W.WavLMConfig.tiny(extractor_mode="layer_norm", layer_norm_first=True,
                                              normalize_waveform=True)).eval()
    batch, frames = normed(x, lengths)
    alone, _ = normed(x[1:, :5000])
    for a, b in zip(batch, alone):
        assert max_diff(a[1, :frames[1]], b[0]) < TOL
    assert max_diff(normed(x[:1])[0][-1], normed(10 * x[:1] - 3)[0][-1]) < TOL   # scale-free
