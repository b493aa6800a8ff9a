"""Probing on cached embeddings: the paper's attention probe (docs/EVAL.md) and a MAE-style linear probe.

Input per clip: the 16 per-frame tokens — `[g_v, g_a]` concatenated (2D) for `modality="av"`, or only g_a / g_v.
- Attention probe: a learnable CLS + `depth` timm Blocks (no positional embedding) + LayerNorm + Linear on the CLS.
- Linear probe: mean over the 16 tokens → BatchNorm1d(affine=False) → Linear.

The encoder is frozen by construction (its outputs are cached), and `assert_trainable` still checks that the set of
trainable parameters in the graph is exactly the probe's, and that every probe parameter is trainable and in the
optimizer: the released CAV-MAE Sync code froze its probe blocks at random init through a name mismatch (docs/EVAL.md).

Loss/metric: BCE-with-logits + mAP (percent, classes with ≥ 1 test positive) for `multilabel` (AS20K style);
cross-entropy + top-1 accuracy (percent) for `multiclass` (VGGSound style). Adam + linear warm-up + cosine.
The reported figure is the last epoch's (no selection on the test set).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from timm.layers import trunc_normal_
from timm.models.vision_transformer import Block
from torch import nn

from tgdp.config import ConfigError, StrictConfig
from tgdp.eval.metrics import mean_average_precision, top1_accuracy
from tgdp.eval.table import EmbeddingTable

__all__ = [
    "AttentionProbe",
    "LinearProbe",
    "ProbeConfig",
    "ProbeResult",
    "assert_trainable",
    "build_probe",
    "chance_level",
    "encode_labels",
    "probe_features",
    "probe_heads",
    "train_probe",
]


class ProbeConfig(StrictConfig):
    """Probe hyper-parameters; defaults follow the CAV-MAE Sync probing script (batch 48, 25 epochs, Adam
    betas 0.95/0.999, wd 5e-7, 10 % warm-up, cosine to 0.1·lr)."""

    task: Literal["multilabel", "multiclass"] = Field(
        "multilabel", description="multilabel (BCE, mAP) or multiclass (CE, top-1)"
    )
    modality: Literal["av", "a", "v"] = Field("av", description="probe input tokens: av, a or v")
    linear: bool = Field(False, description="mean + BatchNorm + Linear instead of the attention probe")
    depth: int = Field(2, ge=1, description="attention-probe blocks")
    num_heads: int | None = Field(
        None, ge=1, description="probe attention heads; None = derived from the probe width (`probe_heads`)"
    )
    mlp_ratio: float = Field(4.0, gt=0, description="probe MLP hidden width as a multiple of the width")
    epochs: int = Field(25, ge=1, description="training epochs")
    batch_size: int = Field(48, ge=1, description="clips per batch")
    lr: float = Field(1e-4, gt=0, description="peak learning rate")
    weight_decay: float = Field(5e-7, ge=0, description="weight decay")
    betas: tuple[float, float] = Field((0.95, 0.999), description="Adam betas")
    warmup_frac: float = Field(0.1, ge=0, lt=1, description="fraction of steps in linear warm-up")
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="cosine floor as a fraction of lr")
    label_smooth: float = Field(0.0, ge=0, lt=1, description="label smoothing")
    seed: int = Field(0, description="random seed")
    device: str = Field("cpu", description="cpu | cuda | cuda:N (the probe --device flag)")


MAX_HEADS = 12  # the paper's probe: 12 heads on the base model's 768 (a, v) or 1536 (av) wide tokens


def probe_heads(dim: int, num_heads: int | None = None) -> int:
    """Attention heads for a probe of width `dim`: `num_heads` when it divides `dim`, else (None) the largest count
    <= 12 that does (12 for the base model, 8 for the tiny presets' 64/128). ConfigError names the setting to use."""
    if num_heads is None:
        return max(h for h in range(1, MAX_HEADS + 1) if dim % h == 0)
    if dim % num_heads:
        ok = [h for h in range(1, min(dim, 2 * MAX_HEADS) + 1) if dim % h == 0]
        raise ConfigError(
            f"probe num_heads={num_heads} does not divide the probe width {dim}: use --set num_heads="
            f"{probe_heads(dim)} (or any of {', '.join(map(str, ok))}), or leave num_heads unset to derive it"
        )
    return num_heads


class AttentionProbe(nn.Module):
    """x [B, T, D] → logits [B, C] through a CLS token and `depth` transformer blocks."""

    def __init__(
        self, dim: int, num_classes: int, depth: int = 2, num_heads: int | None = None, mlp_ratio: float = 4.0
    ):
        super().__init__()
        num_heads = probe_heads(dim, num_heads)
        self.num_heads = num_heads
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.blocks = nn.ModuleList(Block(dim, num_heads, mlp_ratio, qkv_bias=True) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)
        trunc_normal_(self.cls_token, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.norm(x[:, 0]))


class LinearProbe(nn.Module):
    """x [B, T, D] → mean over T → BatchNorm(affine=False) → Linear → logits [B, C] (MAE linear probing)."""

    def __init__(self, dim: int, num_classes: int):
        super().__init__()
        self.bn = nn.BatchNorm1d(dim, affine=False, eps=1e-6)
        self.head = nn.Linear(dim, num_classes)
        trunc_normal_(self.head.weight, std=0.01)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.bn(x.mean(dim=1)))


def build_probe(cfg: ProbeConfig, dim: int, num_classes: int) -> nn.Module:
    if cfg.linear:
        return LinearProbe(dim, num_classes)
    return AttentionProbe(dim, num_classes, cfg.depth, cfg.num_heads, cfg.mlp_ratio)


def assert_trainable(graph: nn.Module, probe: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> None:
    """Raise AssertionError unless the trainable parameters of `graph` are exactly the probe's parameters, all of
    them trainable, and (if given) exactly the optimizer's parameters."""
    probe_ids = {id(p) for p in probe.parameters()}
    problems = []
    extra = [n for n, p in graph.named_parameters() if p.requires_grad and id(p) not in probe_ids]
    if extra:
        problems.append(f"trainable outside the probe: {extra[:8]}")
    frozen = [n for n, p in probe.named_parameters() if not p.requires_grad]
    if frozen:
        problems.append(f"probe parameters frozen: {frozen[:8]}")
    in_graph = {id(p) for p in graph.parameters()}
    if not probe_ids <= in_graph:
        problems.append("the probe is not part of the graph")
    if optimizer is not None:
        opt_ids = {id(p) for g in optimizer.param_groups for p in g["params"]}
        if opt_ids != probe_ids:
            problems.append(
                f"optimizer holds {len(opt_ids - probe_ids)} non-probe and misses {len(probe_ids - opt_ids)} "
                "probe parameters"
            )
    if problems:
        raise AssertionError("trainable parameter set is not exactly the probe's: " + "; ".join(problems))


def probe_features(table: EmbeddingTable, modality: str) -> np.ndarray:
    """[N, T, D] (a, v) or [N, T, 2D] (av = [g_v, g_a]) float32 features."""
    if modality == "a":
        return np.asarray(table.emb_a, dtype=np.float32)
    if modality == "v":
        return np.asarray(table.emb_v, dtype=np.float32)
    if modality == "av":
        return np.concatenate([table.emb_v, table.emb_a], axis=-1).astype(np.float32)
    raise ValueError(f"modality must be av, a or v, got {modality!r}")


def encode_labels(labels: Sequence[Sequence[str]], classes: Sequence[str], task: str) -> tuple[np.ndarray, int]:
    """Multi-hot [N, C] float32 (multilabel) or class index [N] int64 (multiclass, −1 = unknown).

    Returns (targets, number of label occurrences outside `classes`). A multiclass clip must carry one label."""
    index = {c: k for k, c in enumerate(classes)}
    unknown = 0
    if task == "multilabel":
        out = np.zeros((len(labels), len(classes)), np.float32)
        for i, labs in enumerate(labels):
            for lab in labs:
                if lab in index:
                    out[i, index[lab]] = 1.0
                else:
                    unknown += 1
        return out, unknown
    bad = [i for i, labs in enumerate(labels) if len(labs) != 1]
    if bad:
        raise ValueError(
            f"multiclass probing needs exactly one label per clip; {len(bad)} clips do not (e.g. row {bad[0]})"
        )
    idx = np.array([index.get(labs[0], -1) for labs in labels], np.int64)
    return idx, int((idx < 0).sum())


@dataclass
class ProbeResult:
    """Final test metric (percent), per-epoch history, and the accounting of the data."""

    metric_name: str
    metric: float
    history: list[dict[str, float]]
    config: dict[str, Any]
    n_train: int
    n_test: int
    classes: list[str]
    n_trainable: int
    unknown_test_labels: int = 0
    chance: float | None = None  # `chance_level` of the test targets (percent)
    per_class_ap: list[float | None] = field(default_factory=list)
    model: str = ""
    dataset: str = ""
    num_heads: int | None = None  # the attention probe's (derived) head count; None for the linear probe

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "probe",
            "model": self.model,
            "dataset": self.dataset,
            "task": self.config["task"],
            "modality": self.config["modality"],
            "probe": "linear" if self.config["linear"] else "attention",
            "metric_name": self.metric_name,
            "metric": self.metric,
            "n_train": self.n_train,
            "n_test": self.n_test,
            "n_classes": len(self.classes),
            "chance": self.chance,
            "n_trainable": self.n_trainable,
            "num_heads": self.num_heads,
            "unknown_test_labels": self.unknown_test_labels,
            "history": self.history,
            "config": self.config,
            "classes": self.classes,
            "per_class_ap": self.per_class_ap,
        }


def _lr_lambda(cfg: ProbeConfig, total_steps: int):
    warmup = int(cfg.warmup_frac * total_steps)

    def fn(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return fn


@torch.no_grad()
def _predict(probe: nn.Module, x: torch.Tensor, batch_size: int, device: torch.device) -> np.ndarray:
    probe.eval()
    out = [probe(x[s : s + batch_size].to(device)).float().cpu() for s in range(0, x.shape[0], batch_size)]
    return torch.cat(out).numpy()


def chance_level(task: str, targets: np.ndarray) -> float:
    """What a probe that ignores its input scores on `targets` (percent): for multiclass ([N] class indices) the
    test share of the most frequent class (≥ 100/C: the best constant guess); for multilabel ([N, C] multi-hot) the
    mean positive rate over classes with a positive (the expected AP of a random ranking)."""
    if len(targets) == 0:
        return float("nan")
    if task == "multilabel":
        rate = targets.mean(axis=0)
        rate = rate[rate > 0]
        return 100.0 * float(rate.mean()) if rate.size else float("nan")
    known = targets[targets >= 0]
    return 100.0 * float(np.bincount(known).max()) / len(targets) if known.size else 0.0


def _score(cfg: ProbeConfig, logits: np.ndarray, targets: np.ndarray) -> tuple[float, np.ndarray | None]:
    if cfg.task == "multilabel":
        m, ap = mean_average_precision(logits, targets)
        return 100.0 * m, ap
    return top1_accuracy(logits, targets), None


def train_probe(
    train: EmbeddingTable,
    test: EmbeddingTable,
    cfg: ProbeConfig,
    classes: Sequence[str] | None = None,
) -> ProbeResult:
    """Train a probe on `train` embeddings and evaluate on `test` after every epoch (the last one is reported).

    classes: the label vocabulary (default: sorted union of the train and test labels)."""
    if train.num_frames != test.num_frames or train.dim != test.dim:
        raise ValueError(f"train [T={train.num_frames}, D={train.dim}] vs test [T={test.num_frames}, D={test.dim}]")
    if classes is None:
        classes = sorted({lab for labs in (*train.labels, *test.labels) for lab in labs})
    classes = list(classes)
    if not classes:
        raise ValueError("no labels: the embedding tables carry no labels and no class list was given")
    y_train, unknown_train = encode_labels(train.labels, classes, cfg.task)
    y_test, unknown_test = encode_labels(test.labels, classes, cfg.task)
    if unknown_train and cfg.task == "multiclass":
        raise ValueError(f"{unknown_train} training clips have a label outside the class list")

    torch.manual_seed(cfg.seed)
    device = torch.device(cfg.device)
    x_train = torch.from_numpy(probe_features(train, cfg.modality))
    x_test = torch.from_numpy(probe_features(test, cfg.modality))
    t_train = torch.from_numpy(y_train)
    probe = build_probe(cfg, x_train.shape[-1], len(classes)).to(device)
    optimizer = torch.optim.Adam(probe.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=cfg.betas)
    assert_trainable(probe, probe, optimizer)
    steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
    # BatchNorm in train mode cannot take a batch of one
    drop_last = cfg.linear and len(train) % cfg.batch_size == 1
    steps_per_epoch -= int(drop_last)
    sched = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(cfg, steps_per_epoch * cfg.epochs))
    gen = torch.Generator().manual_seed(cfg.seed)

    history = []
    for epoch in range(cfg.epochs):
        probe.train()
        perm = torch.randperm(len(train), generator=gen)
        total, seen = 0.0, 0
        for step in range(steps_per_epoch):
            idx = perm[step * cfg.batch_size : (step + 1) * cfg.batch_size]
            x, y = x_train[idx].to(device), t_train[idx].to(device)
            logits = probe(x)
            if cfg.task == "multilabel":
                y = y * (1 - cfg.label_smooth) + cfg.label_smooth / len(classes)
                loss = F.binary_cross_entropy_with_logits(logits, y)
            else:
                loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smooth)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"probe loss is {loss.item()} at epoch {epoch} step {step}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            sched.step()
            total += loss.item() * len(idx)
            seen += len(idx)
        metric, ap = _score(cfg, _predict(probe, x_test, 256, device), y_test)
        history.append({"epoch": epoch + 1, "train_loss": total / max(seen, 1), "test_metric": metric})

    return ProbeResult(
        metric_name="mAP" if cfg.task == "multilabel" else "top1",
        metric=history[-1]["test_metric"],
        history=history,
        config=cfg.model_dump(mode="json"),
        n_train=len(train),
        n_test=len(test),
        classes=classes,
        n_trainable=sum(p.numel() for p in probe.parameters()),
        unknown_test_labels=unknown_test,
        chance=chance_level(cfg.task, y_test),
        per_class_ap=[None if np.isnan(v) else float(v) for v in ap] if ap is not None else [],
        num_heads=getattr(probe, "num_heads", None),
    )
