"""Probe: trainable set is exactly the probe's (and the check fires otherwise); it learns separable tasks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from tgdp.config import ConfigError, validate_config
from tgdp.eval.probe import (
    AttentionProbe,
    LinearProbe,
    ProbeConfig,
    assert_trainable,
    encode_labels,
    probe_features,
    train_probe,
)
from tgdp.eval.table import EmbeddingTable


def _separable(n: int, n_classes: int, seed: int, multilabel: bool, d: int = 8, signal: str = "a") -> EmbeddingTable:
    """Class k adds a fixed direction to one modality's tokens; the other modality is noise."""
    rng = np.random.default_rng(seed)
    centers = np.random.default_rng(99).standard_normal((n_classes, d)) * 2.0
    emb_a = rng.standard_normal((n, 16, d)).astype(np.float32)
    emb_v = rng.standard_normal((n, 16, d)).astype(np.float32)
    target = emb_a if signal == "a" else emb_v
    labels = []
    for i in range(n):
        ks = [i % n_classes] + ([(i // n_classes) % n_classes] if multilabel and i % 2 else [])
        ks = sorted(set(ks))
        for k in ks:
            target[i] += centers[k]
        labels.append([f"c{k}" for k in ks])
    return EmbeddingTable([f"synth:s{seed}_{i}:0" for i in range(n)], emb_a, emb_v, labels=labels)


def _small_cfg(**kw) -> ProbeConfig:
    base = dict(depth=1, num_heads=2, epochs=15, batch_size=32, lr=3e-3, warmup_frac=0.1, device="cpu")
    return ProbeConfig(**{**base, **kw})


def test_attention_probe_trainable_set_is_exactly_the_probe() -> None:
    probe = AttentionProbe(16, 5, depth=2, num_heads=4)
    opt = torch.optim.Adam(probe.parameters())
    assert_trainable(probe, probe, opt)
    names = {n for n, p in probe.named_parameters() if p.requires_grad}
    assert "cls_token" in names and "blocks.0.attn.qkv.weight" in names and "blocks.1.mlp.fc2.bias" in names


def test_assertion_fires_on_extra_trainable_module() -> None:
    probe = AttentionProbe(16, 5, depth=1, num_heads=4)
    graph = nn.ModuleDict({"encoder": nn.Linear(16, 16), "probe": probe})
    with pytest.raises(AssertionError, match="outside the probe.*encoder.weight"):
        assert_trainable(graph, probe)
    graph["encoder"].requires_grad_(False)
    assert_trainable(graph, probe)


def test_assertion_fires_on_frozen_probe_blocks_like_the_released_code() -> None:
    probe = AttentionProbe(16, 5, depth=2, num_heads=4)
    # the released bug: only the final norm and head train, the blocks and the CLS stay at random init
    probe.blocks.requires_grad_(False)
    probe.cls_token.requires_grad_(False)
    with pytest.raises(AssertionError, match="probe parameters frozen"):
        assert_trainable(probe, probe)


def test_assertion_fires_when_optimizer_misses_probe_params() -> None:
    probe = AttentionProbe(16, 5, depth=1, num_heads=4)
    opt = torch.optim.Adam(probe.head.parameters())
    with pytest.raises(AssertionError, match="optimizer"):
        assert_trainable(probe, probe, opt)


def test_features_and_labels() -> None:
    t = _separable(6, 3, 0, multilabel=False)
    assert probe_features(t, "av").shape == (6, 16, 16)
    np.testing.assert_array_equal(probe_features(t, "av")[..., :8], t.emb_v)  # [g_v, g_a] order
    assert probe_features(t, "a").shape == (6, 16, 8)
    y, unknown = encode_labels([["a", "b"], ["z"]], ["a", "b"], "multilabel")
    assert y.tolist() == [[1, 1], [0, 0]] and unknown == 1
    idx, unknown = encode_labels([["b"], ["z"]], ["a", "b"], "multiclass")
    assert idx.tolist() == [1, -1] and unknown == 1
    with pytest.raises(ValueError, match="exactly one label"):
        encode_labels([["a", "b"]], ["a", "b"], "multiclass")


def test_config_is_strict() -> None:
    with pytest.raises(ConfigError, match="unknown key 'lrr'"):
        validate_config(ProbeConfig, {"lrr": 1e-3})


def test_attention_probe_learns_multiclass() -> None:
    train, test = _separable(192, 4, 0, False), _separable(64, 4, 1, False)
    res = train_probe(train, test, _small_cfg(task="multiclass"))
    assert res.metric_name == "top1" and res.metric >= 90.0
    assert res.history[-1]["train_loss"] < res.history[0]["train_loss"]


def test_attention_probe_learns_multilabel_and_video_only_fails_on_audio_signal() -> None:
    train, test = _separable(192, 4, 0, True), _separable(64, 4, 1, True)
    res = train_probe(train, test, _small_cfg(task="multilabel", modality="a"))
    assert res.metric_name == "mAP" and res.metric >= 90.0 and len(res.per_class_ap) == 4
    # the label signal is only in the audio tokens: a video-only probe is near chance
    res_v = train_probe(train, test, _small_cfg(task="multilabel", modality="v", epochs=5))
    assert res_v.metric < 70.0


def test_linear_probe_learns_multiclass() -> None:
    train, test = _separable(193, 4, 0, False, signal="v"), _separable(64, 4, 1, False, signal="v")
    res = train_probe(train, test, _small_cfg(task="multiclass", linear=True, modality="av", lr=1e-2))
    assert res.metric >= 90.0
    assert res.to_dict()["probe"] == "linear"
    assert isinstance(LinearProbe(8, 2).bn, nn.BatchNorm1d) and not list(LinearProbe(8, 2).bn.parameters())


def test_probe_heads_derived_from_the_width() -> None:
    """A tiny model's width (64 per modality, 128 for av) is not divisible by the base model's 12 heads."""
    assert ProbeConfig().num_heads is None
    train, test = _separable(32, 4, 0, False, d=64), _separable(16, 4, 1, False, d=64)
    res = train_probe(train, test, _small_cfg(task="multiclass", num_heads=None, epochs=1))
    assert res.to_dict()["num_heads"] == 8  # the largest count <= 12 dividing 128
    assert AttentionProbe(768, 3).blocks[0].attn.num_heads == 12  # the paper's probe on the base model


def test_probe_heads_that_do_not_divide_the_width_name_the_fix() -> None:
    train, test = _separable(32, 4, 0, False, d=64), _separable(16, 4, 1, False, d=64)
    with pytest.raises(ConfigError, match=r"num_heads=12 does not divide the probe width 128.*--set num_heads=8"):
        train_probe(train, test, _small_cfg(task="multiclass", num_heads=12, epochs=1))
