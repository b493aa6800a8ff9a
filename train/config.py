"""Typed training config: `RunConfig` = model preset + ModelConfig overrides + data + optimiser + loop settings.

Design:
- Every section derives `StrictConfig` (unknown keys are errors). In a file or `--set`, `model` holds `ModelConfig`
  field overrides on top of `model_preset`; the RunConfig resolves them once, when it is built, into a typed
  `tgdp.model.ModelConfig`, so an unknown model key or an out-of-range value (e.g. a mask ratio >= 1) names
  `model.<key>`, and a dumped RunConfig carries the full model section (it re-loads to the same model).
- `batch_size` is the GLOBAL batch per optimiser step (the recipe's "batch 512"); each rank's micro-batch is
  `batch_size // (world_size * accum)`, which must divide exactly. A preset therefore means the same run on any
  number of GPUs, and a 2-process run sees exactly the clips of a 1-process run.
- `train.steps` wins over `train.epochs` when both are set (a tiny run is `--set train.steps=50` on any preset).
- `RunConfig.resolve(num_clips, world_size)` computes the derived values (micro-batch, steps per epoch, total steps,
  warmup steps) once; the loop only reads `ResolvedRun`.
- A run dir records every config it ran under: `config.yaml` is the one it started with (`save_run_config`), and
  each resume under a changed config adds an entry to `config-history.json` (`record_config_change`).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, Field, ValidationInfo, field_validator, model_validator

from tgdp.config import ConfigError, StrictConfig, dump_config, load_config
from tgdp.core.atomic import atomic_path
from tgdp.core.disk import DISK_FULL_ERRNOS, free_space
from tgdp.model.config import ModelConfig
from tgdp.model.presets import PRESETS, resolve_model_config
from tgdp.store.config import StoreConfig

__all__ = [
    "PRESET_DIR",
    "DataConfig",
    "LoopConfig",
    "OptimConfig",
    "ResolvedRun",
    "CONFIG_HISTORY",
    "RunConfig",
    "config_changes",
    "list_presets",
    "load_run_config",
    "record_config_change",
    "save_run_config",
    "write_error",
]

PRESET_DIR = Path(__file__).resolve().parent / "presets"
CONFIG_HISTORY = "config-history.json"  # in a run dir, beside config.yaml


class DataConfig(StrictConfig):
    """Sampling and augmentation (docs/TRAINING.md, Data). Augmentations are off by default, as in the recipe."""

    split: str = Field("train", description="store split directory read for training")
    eval_frame: int = Field(
        8, ge=0, description="single evaluation frame clips must have (CAV-MAE Sync uses 8; TG-DP hard-codes 5)"
    )
    resize_frames: bool = Field(True, description="resize stored frames to the model's img_size when the sizes differ")
    random_resized_crop: bool = Field(
        False, description="RandomResizedCrop(scale 0.08-1, ratio 0.9-1.1) + horizontal flip"
    )
    freqm: int = Field(0, ge=0, description="SpecAugment frequency-mask width (torchaudio FrequencyMasking); 0 = off")
    timem: int = Field(0, ge=0, description="SpecAugment time-mask width (torchaudio TimeMasking); 0 = off")
    time_shifting: float = Field(0.0, ge=0.0, le=1.0, description="circular roll by randint(-s, s), s = int(x * T_seg)")
    mixup: float = Field(0.0, ge=0.0, le=1.0, description="probability of a beta(10, 10) mixup with another clip")
    shuffle: bool = Field(True, description="epoch-seeded permutation of the clip order (False: store order)")
    shuffle_mode: Literal["auto", "global", "block"] = Field(
        "auto",
        description="global: a uniform permutation of all clips; block: shards in a random order, clips shuffled "
        "within blocks of data.block_shards shards (each shard read once per epoch per node); auto: block iff the "
        "store is remote",
    )
    block_shards: int = Field(
        4, ge=1, description="block shuffle: clips are shuffled within blocks of this many shards"
    )


class OptimConfig(StrictConfig):
    """Optimiser and per-step schedule (docs/TRAINING.md): Adam, linear warmup then cosine to min_lr_ratio * lr."""

    name: Literal["adam", "adamw"] = Field("adam", description="optimiser: adam or adamw")
    lr: float = Field(2e-4, gt=0.0, description="peak learning rate")
    betas: tuple[float, float] = Field((0.95, 0.999), description="Adam betas")
    eps: float = Field(1e-8, gt=0.0, description="Adam epsilon")
    weight_decay: float = Field(5e-7, ge=0.0, description="weight decay")
    warmup_frac: float = Field(
        0.1, ge=0.0, lt=1.0, description="fraction of total optimiser steps spent in linear warmup"
    )
    min_lr_ratio: float = Field(0.1, ge=0.0, le=1.0, description="cosine floor as a fraction of lr")
    grad_clip: float | None = Field(None, gt=0.0, description="max global grad norm; None = no clipping (the recipe)")
    fused: bool = Field(False, description="torch's fused (single-kernel) Adam/AdamW: fewer launches per step on CUDA")
    # False = the released recipe: weight decay on every trainable tensor. True = no decay on the token-like
    # parameters the model names in `no_weight_decay()` (global/register/mask tokens, modality embeddings).
    exclude_no_decay: bool = Field(
        False, description="no weight decay on the tokens the model names in no_weight_decay() (False = the recipe)"
    )

    @field_validator("betas")
    @classmethod
    def _betas_in_range(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not all(0.0 <= b < 1.0 for b in v):
            raise ValueError(f"betas must lie in [0, 1), got {v}")
        return v


class LoopConfig(StrictConfig):
    """Loop length, batch, precision and bookkeeping."""

    steps: int | None = Field(None, gt=0, description="optimiser steps; wins over `epochs` when set")
    epochs: float | None = Field(None, gt=0.0, description="epochs over the store (used when steps is null)")
    batch_size: int = Field(8, gt=0, description="GLOBAL clips per optimiser step (all ranks, all micro-steps)")
    accum: int = Field(1, gt=0, description="micro-steps per optimiser step")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="autocast precision; auto = bf16 on CUDA, fp32 on CPU"
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto (cuda when available) | cpu | cuda")
    seed: int = Field(0, ge=0, description="random seed (model init, sampling, masking)")
    log_every: int = Field(10, gt=0, description="optimiser steps between metric logs")
    ckpt_every: int = Field(
        1000,
        gt=0,
        description="optimiser steps between checkpoints (one is also written at the end and on a non-finite loss)",
    )
    keep_last: int = Field(3, gt=0, description="checkpoints kept (older ones are deleted)")
    num_workers: int = Field(2, ge=0, description="DataLoader worker processes")
    prefetch_factor: int = Field(4, gt=0, description="batches prefetched per DataLoader worker")
    find_unused_parameters: bool = Field(
        False, description="DDP find_unused_parameters; only needed if some student parameter gets no gradient"
    )
    compile: bool = Field(False, description="torch.compile the model")
    progress: bool = Field(True, description="tqdm progress bar on rank 0")
    tensorboard: bool = Field(True, description="write TensorBoard event files to the run dir")
    grad_shares: bool = Field(
        True,
        description="at logged steps: each loss term's gradient norm on the shared encoder and its share (extra "
        "backward passes on those steps only; training is unchanged)",
    )

    @model_validator(mode="after")
    def _length_given(self) -> LoopConfig:
        if self.steps is None and self.epochs is None:
            raise ValueError("set train.steps or train.epochs")
        return self


class RunConfig(StrictConfig):
    """One training run. `model` is given as ModelConfig field overrides on top of `model_preset` and holds the
    resolved `ModelConfig` (module docstring)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())

    model_preset: str = Field(
        "tiny_tgdp",
        description=f"model preset ({', '.join(PRESETS)}: model/preset_files/); model.* overrides it",
    )
    model: ModelConfig = Field(default_factory=dict, validate_default=True)
    data: DataConfig = Field(default_factory=DataConfig)
    store: StoreConfig = Field(
        default_factory=StoreConfig, description="a remote store's endpoint and the node's shard cache (store.*)"
    )
    optim: OptimConfig = Field(default_factory=OptimConfig)
    train: LoopConfig = Field(default_factory=lambda: LoopConfig(steps=100))

    @field_validator("model", mode="before")
    @classmethod
    def _resolve_model(cls, v: Any, info: ValidationInfo) -> Any:
        # ConfigError is a ValueError, so pydantic reports it under `model` with the message intact.
        if isinstance(v, ModelConfig) or "model_preset" not in info.data:
            return v  # already resolved, or model_preset itself failed (pydantic reports that)
        return resolve_model_config(info.data["model_preset"], v)

    def model_cfg(self) -> ModelConfig:
        """The resolved `tgdp.model.ModelConfig` (= `self.model`)."""
        return self.model

    def resolve(self, num_clips: int, world_size: int = 1) -> ResolvedRun:
        """Derived values for a store of `num_clips` clips on `world_size` ranks (errors name the keys)."""
        t = self.train
        per_step = world_size * t.accum
        if t.batch_size % per_step:
            raise ConfigError(f"train.batch_size={t.batch_size} is not divisible by world_size*train.accum={per_step}")
        micro = t.batch_size // per_step
        batches_per_epoch = (num_clips // world_size) // micro  # per rank; the tail is dropped so ranks stay equal
        steps_per_epoch = batches_per_epoch // t.accum
        if steps_per_epoch < 1:
            raise ConfigError(
                f"store has {num_clips} clips: too few for one step of train.batch_size={t.batch_size} "
                f"on {world_size} rank(s)"
            )
        total = t.steps if t.steps is not None else max(1, math.ceil(t.epochs * steps_per_epoch))
        warmup = int(self.optim.warmup_frac * total)
        return ResolvedRun(
            world_size=world_size,
            micro_batch=micro,
            batch_size=t.batch_size,
            accum=t.accum,
            batches_per_epoch=batches_per_epoch,
            steps_per_epoch=steps_per_epoch,
            total_steps=total,
            warmup_steps=warmup,
            num_clips=num_clips,
        )


@dataclass(frozen=True)
class ResolvedRun:
    """Values derived once from a RunConfig, the store size and the world size."""

    world_size: int
    micro_batch: int  # clips per rank per micro-step
    batch_size: int  # effective (global) clips per optimiser step
    accum: int
    batches_per_epoch: int  # micro-batches per rank per epoch
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    num_clips: int

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def list_presets() -> list[str]:
    """Names of the packaged presets."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def load_run_config(source: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Load a RunConfig from a preset name or YAML file (`base:` chains resolve against the packaged presets)."""
    return load_config(RunConfig, source, overrides, preset_dir=PRESET_DIR)


def write_error(path: Path, exc: OSError) -> OSError:
    """`exc` (a failed write of `path`) as an OSError naming the file and, for a full disk, the free space: the
    CLIs print it as one line (a write's OSError carries no file name of its own)."""
    detail = exc.strerror or str(exc)
    if exc.errno in DISK_FULL_ERRNOS:
        detail += f" ({free_space(Path(path).parent)})"
    return OSError(exc.errno, detail, str(path))


def save_run_config(cfg: RunConfig, path: Path, derived: ResolvedRun | None = None) -> str:
    """Write the config with its model section fully resolved (re-loadable with `--config path`)."""
    text = dump_config(cfg)
    if derived is not None:
        header = "".join(f"# derived {k}: {v}\n" for k, v in derived.as_dict().items())
        text = header + text
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_path(path) as tmp:  # a failed write removes tmp: the previous file stays as it was
            tmp.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise write_error(path, exc) from exc
    return text


def config_changes(old: dict[str, Any], new: dict[str, Any]) -> dict[str, list[Any]]:
    """Settings that differ between two dumped configs, as {"section.key": [old, new]} (sorted; a key missing on
    one side reads as None)."""
    changed: dict[str, list[Any]] = {}
    for section in sorted(set(old) | set(new)):
        a, b = old.get(section), new.get(section)
        if isinstance(a, dict) or isinstance(b, dict):
            a, b = a if isinstance(a, dict) else {}, b if isinstance(b, dict) else {}
            changed.update(
                {f"{section}.{k}": [a.get(k), b.get(k)] for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}
            )
        elif a != b:
            changed[section] = [a, b]
    return changed


def record_config_change(run_dir: Path, entry: dict[str, Any]) -> Path:
    """Append `entry` ({step, checkpoint, changed, config, derived}) to `run_dir/config-history.json` (a JSON list,
    replaced atomically; the time is added)."""
    path = Path(run_dir) / CONFIG_HISTORY
    history = json.loads(path.read_text(encoding="utf-8")) if path.exists() else []
    history.append({**entry, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    try:
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(history, indent=1) + "\n", encoding="utf-8")
    except OSError as exc:
        raise write_error(path, exc) from exc
    return path
