"""The reproduction study's synthetic store: synth (profile `coupled`) → manifest → fetch events → validate → shard.

The corpus (`Corpus`) was fixed before any result was looked at (REPRODUCTION.md). Each step is skipped when its
output exists, so a study resumes on the store it built.
"""

from __future__ import annotations

import csv
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from tgdp.pipeline.features import FeatureParams
from tgdp.pipeline.importer import register_files
from tgdp.pipeline.layout import manifest_path
from tgdp.pipeline.manifest import ManifestConfig, build_manifest
from tgdp.pipeline.shard import ShardConfig, run_shard
from tgdp.pipeline.synth import LABELS_FILE, SEGMENT_FILES, SynthConfig, generate
from tgdp.pipeline.truth import truth_path, write_truth
from tgdp.pipeline.validate import ValidateConfig, run_validate
from tgdp.store import Store

__all__ = ["SHARD_TINY", "Corpus", "build_synth_store", "synth_config"]


@dataclass(frozen=True)
class Corpus:
    """The synthetic benchmark (fixed before any result was looked at; see REPRODUCTION.md)."""

    num_clips: int = 720
    num_classes: int = 12
    difficulty: float = 0.3  # at 0.6 the Sync baseline did not leave ln(B) in 500 steps (REPRODUCTION.md, budget)
    seed: int = 2024
    eval_fraction: float = 0.25
    segment_s: float = 2.56  # 256 fbank frames = the tiny store's target_length
    profile: str = "coupled"  # tgdp.pipeline.synth: an instance latent shared by hue and pitch, decoys


SHARD_TINY = {"frame_size": 96, "num_mel_bins": 64, "target_length": 256}


def build_synth_store(out: Path, corpus: Corpus, workers: int = 2) -> Path:
    """synth → manifest → fetch events → validate → shard → per-patch truth (`tgdp.pipeline.truth`), each step skipped
    when already done. Returns STORE."""
    out.mkdir(parents=True, exist_ok=True)
    spec = out / "corpus.json"
    if spec.exists() and json.loads(spec.read_text()) != asdict(corpus):
        raise FileExistsError(f"{out} holds a corpus built with other settings ({spec}); use a fresh --out")
    spec.write_text(json.dumps(asdict(corpus), indent=1))
    cdir, root, store = out / "corpus", out / "root", out / "store"
    cfg = synth_config(corpus, workers)
    if not all((store / split / "index.json").exists() for split in ("train", "eval")):
        _build(cfg, cdir, root, store)
    for split in ("train", "eval"):  # per-patch ground truth: training logs the teacher's selection precision
        if not truth_path(store, split).exists():
            write_truth(Store.open(store, split=split), split, cfg, store)
    return store


def _build(cfg: SynthConfig, cdir: Path, root: Path, store: Path) -> None:
    """synth → manifest → fetch events → validate → shard (each skipped when done)."""
    if not (cdir / "ground_truth.csv").exists() or not (cdir / LABELS_FILE).exists():
        shutil.rmtree(cdir, ignore_errors=True)
        generate(cfg, cdir)
    if not manifest_path(root).exists():
        csvs = [str(cdir / name) for name in SEGMENT_FILES.values()]
        labels = str(cdir / LABELS_FILE)
        build_manifest(root, ManifestConfig(dataset="audioset", csv=csvs, labels=labels))
    _register_synth(root, cdir)
    params = FeatureParams(**SHARD_TINY)
    run_validate(root, ValidateConfig(), features=params, backend="serial")
    run_shard(root, store, ShardConfig(), features=params, backend="serial")


def synth_config(corpus: Corpus, workers: int = 2) -> SynthConfig:
    """The `SynthConfig` of the corpus (also what recomputes its ground truth)."""
    return SynthConfig(
        num_clips=corpus.num_clips,
        num_classes=corpus.num_classes,
        seed=corpus.seed,
        eval_fraction=corpus.eval_fraction,
        fault_fraction=0.0,  # faults are the pipeline tests' business; here every clip should train
        difficulty=corpus.difficulty,
        profile=corpus.profile,
        sizes=[(128, 96), (160, 120)],
        fps=[12, 15, 24, 25],
        segment_s=corpus.segment_s,
        start_s=(1, 2),
        tail_s=(0.5, 1.0),
        webm_fraction=0.0,
        workers=workers,
    )


def _register_synth(root: Path, cdir: Path) -> None:
    """Record each synth video as fetched. A synth file is the whole video (the segment starts 1–2 s in), so its
    event says `section_start_s=0`; `import_clips` would record the segment start there, the rule for trimmed
    `<ytid>.mp4` files, and shift the window."""
    with open(cdir / "ground_truth.csv", newline="") as fh:
        files = {row["clip_id"]: cdir / row["file"] for row in csv.DictReader(fh)}
    register_files(root, files, section_mode="whole_file", section_start_s=0.0, source="synth", copy=True)
