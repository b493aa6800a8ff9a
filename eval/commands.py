"""The library function behind each `tgdp-eval` command: check the inputs, do the work, write the result files,
return what the command prints. `tgdp.eval.cli` only parses options and prints (docs/EVAL.md lists the files).

- `embed_store_to_file` → the embedding table (.arrow); `retrieval_to_dir` → retrieval.json/.md, ranks.npz,
  recall.png, similarity.png; `probe_to_dir` → probe.json/.md; `health_figures` / `selection_figures` → their
  figures (and a JSON file when asked); `report_to_dir` → report.md/.json.
- `device` is a resolved torch device string (`cpu`, `cuda`, `cuda:N`): the CLI chooses it.
"""

from __future__ import annotations

import csv
import errno
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tgdp.config import ConfigError
from tgdp.eval.config import EmbedConfig, HealthConfig, RetrievalConfig, SelectionConfig
from tgdp.eval.probe import ProbeConfig, ProbeResult
from tgdp.eval.retrieval import RetrievalResult
from tgdp.eval.table import EmbeddingTable

__all__ = [
    "dataset_of",
    "embed_store_to_file",
    "health_figures",
    "model_name",
    "probe_to_dir",
    "read_classes",
    "report_to_dir",
    "retrieval_to_dir",
    "selection_figures",
]


def dataset_of(clip_ids: Sequence[str]) -> str:
    """The dataset prefix shared by every clip id (`audioset:...`), else "mixed"."""
    prefixes = {c.split(":", 1)[0] for c in clip_ids if ":" in c}
    return prefixes.pop() if len(prefixes) == 1 else "mixed"


def model_name(meta: dict[str, Any], emb: Path) -> str:
    """A table's model name: its checkpoint's file stem, else the table's own."""
    ckpt = meta.get("checkpoint")
    return Path(ckpt).stem if ckpt else Path(emb).stem


def _check_out_file(out: Path) -> None:
    """`out` must be a file path whose folder exists or can be made, and is writable (checked before the work)."""
    if out.is_dir():
        raise IsADirectoryError(errno.EISDIR, "--out is a directory", str(out))
    parent = out.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "--out's folder is not a directory", str(parent))
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PermissionError(errno.EACCES, "cannot write the table here", str(parent))


def _write_json(res: dict[str, Any], out: Path | None) -> None:
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(res, indent=2), encoding="utf-8")


def embed_store_to_file(
    checkpoint: Path,
    store: str,
    out: Path,
    split: str | None,
    list_file: Path | None,
    cfg: EmbedConfig,
    device: str,
) -> EmbeddingTable:
    """Embed every clip (or the listed ones) of a store split with the unmasked encoder and write the table to `out`.

    Everything that can be checked is checked before any clip is embedded: the output path, the list, the preset,
    the checkpoint, the store's shards against index.json and the store's geometry against the model.
    The table's meta names the listed clips that are missing (`missing`) and the speed (`clips_per_s`)."""
    from tgdp.eval.embed import embed_store, load_encoder
    from tgdp.eval.retrieval import load_id_list, resolve_ids
    from tgdp.eval.table import write_embeddings
    from tgdp.store import Store
    from tgdp.train.data import check_geometry

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    _check_out_file(out)
    ids = load_id_list(list_file) if list_file else None
    model, info = load_encoder(checkpoint, cfg.preset, device)
    st = Store.open(store, split, default_split="eval")
    if hasattr(st, "check"):  # every shard against index.json (presence, size, rows): fail now, not mid-embedding
        st.check()
    check_geometry(st, model.cfg)
    match = resolve_ids(ids, st.clip_ids, where="store") if ids is not None else None
    rows, missing = (match.indices.tolist(), match.missing) if match is not None else (None, [])
    table = embed_store(model, st, rows, cfg.batch_size, device, cfg.num_workers, cfg.features, progress=True)
    table.meta.update(
        info, store=str(st.location), split=st.split, list=str(list_file) if list_file else None, missing=missing
    )
    write_embeddings(out, table, cfg.dtype)
    return table


def retrieval_to_dir(
    emb: Path,
    out: Path,
    list_file: Path | None,
    cfg: RetrievalConfig,
    device: str,
    name: str | None = None,
    dataset: str | None = None,
) -> RetrievalResult:
    """Zero-shot retrieval in both directions on an embedding table; writes retrieval.json/.md, ranks.npz,
    recall.png and similarity.png (the first `cfg.plot_clips` clips) into `out`."""
    import numpy as np

    from tgdp.eval.report import plot_recall_curves, plot_similarity, retrieval_table
    from tgdp.eval.retrieval import run_retrieval, similarity_matrix
    from tgdp.eval.table import read_embeddings

    table = read_embeddings(emb)
    res = run_retrieval(
        table,
        list_file,
        cfg.strategy,
        cfg.frame,
        cfg.ties,
        cfg.chunk_size,
        device,
        model=name or model_name(table.meta, emb),
        dataset=dataset or dataset_of(table.clip_ids),
    )
    out.mkdir(parents=True, exist_ok=True)
    d = {
        **res.to_dict(),
        "embeddings": str(emb),
        "embedding_meta": {k: table.meta.get(k) for k in ("checkpoint", "model_preset", "features", "step")},
    }
    (out / "retrieval.json").write_text(json.dumps(d, indent=2), encoding="utf-8")
    (out / "retrieval.md").write_text(retrieval_table([d])[0] + "\n", encoding="utf-8")
    np.savez_compressed(out / "ranks.npz", clip_ids=np.array(res.clip_ids), **res.ranks)
    plot_recall_curves(res.ranks, out / "recall.png", title=f"{res.model} / {res.dataset}")
    sub = table.subset([table.clip_ids.index(c) for c in res.clip_ids[: cfg.plot_clips]])
    plot_similarity(similarity_matrix(sub.emb_a, sub.emb_v, cfg.strategy, cfg.frame), out / "similarity.png")
    return res


def read_classes(path: Path) -> list[str]:
    """A class list: a labels CSV (its 'mid' column, index,mid,display_name) or a text file (one class a line)."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".csv":
        rows = list(csv.DictReader(text.splitlines()))
        if not rows or "mid" not in rows[0]:
            raise ConfigError(f"{path}: expected a CSV with a 'mid' column (index,mid,display_name)")
        return [r["mid"] for r in rows]
    return [ln.strip() for ln in text.splitlines() if ln.strip()]


def probe_to_dir(
    train_emb: Path,
    test_emb: Path,
    out: Path,
    cfg: ProbeConfig,
    classes: Path | None = None,
    name: str | None = None,
    dataset: str | None = None,
) -> ProbeResult:
    """Train a probe on cached train embeddings, evaluate on test embeddings; writes probe.json and probe.md."""
    from tgdp.eval.probe import train_probe
    from tgdp.eval.report import probe_table
    from tgdp.eval.table import read_embeddings

    train, test = read_embeddings(train_emb), read_embeddings(test_emb)
    res = train_probe(train, test, cfg, read_classes(classes) if classes else None)
    res.model = name or model_name(train.meta, train_emb)
    res.dataset = dataset or dataset_of(train.clip_ids)
    out.mkdir(parents=True, exist_ok=True)
    d = {**res.to_dict(), "train_embeddings": str(train_emb), "test_embeddings": str(test_emb)}
    (out / "probe.json").write_text(json.dumps(d, indent=2), encoding="utf-8")
    (out / "probe.md").write_text(probe_table([d])[0] + "\n", encoding="utf-8")
    return res


def health_figures(
    checkpoint: Path, store: str, split: str | None, cfg: HealthConfig, device: str, out: Path | None = None
) -> dict[str, Any]:
    """Representation health of a checkpoint on a store split (`tgdp.eval.health.store_health`), with the
    checkpoint, its preset, step and split; also written to `out` (JSON) when given."""
    from tgdp.eval.embed import load_encoder
    from tgdp.eval.health import store_health
    from tgdp.store import Store

    model, info = load_encoder(checkpoint, None, device, with_teacher=True)
    st = Store.open(store, split, default_split="eval")
    res = store_health(
        model, st, None, cfg.frame, cfg.batch_size, device, with_teacher=info["teacher_loaded"], grad_shares=True
    )
    res.update(checkpoint=str(checkpoint), model_preset=info["model_preset"], step=info["step"], split=st.split)
    _write_json(res, out)
    return res


def selection_figures(
    checkpoint: Path, store: Path, split: str, cfg: SelectionConfig, device: str, out: Path | None = None
) -> dict[str, Any]:
    """Precision of the selected patches against the store's ground truth (`tgdp.eval.selection.store_selection`),
    with the checkpoint, its preset, step and split; also written to `out` (JSON) when given."""
    from tgdp.eval.embed import load_encoder
    from tgdp.eval.selection import store_selection
    from tgdp.pipeline.truth import PatchTruth, TruthError
    from tgdp.store import Store

    model, info = load_encoder(checkpoint, None, device, with_teacher=True)
    st = Store.open(store, split=split)
    truth = PatchTruth.find(store, split, st.clip_ids)
    if truth is None:
        raise TruthError(f"{store} has no ground truth for split {split!r}: write it with `tgdp-data truth`")
    if cfg.source == "teacher" and not info["teacher_loaded"]:
        raise TruthError(f"{checkpoint} holds no EMA teacher: use --set source=student")
    res = store_selection(model, st, truth, None, cfg.frame, 64, device, cfg.source, cfg.direction)
    res.update(checkpoint=str(checkpoint), model_preset=info["model_preset"], step=info["step"], split=split)
    _write_json(res, out)
    return res


def report_to_dir(results: Sequence[Path], out: Path, study: Path | None = None) -> tuple[Path, Path]:
    """Collect retrieval and probe result JSON files (or directories holding them) into report.md/.json in `out`,
    with the seed noise of a `make reproduce` results.json when given (else the built-in one)."""
    from tgdp.eval.report import load_results, seed_noise_from_study, write_report

    found = load_results(results)
    if not found:
        raise ConfigError("no retrieval/probe result JSON found")
    try:
        noise = seed_noise_from_study(study) if study is not None else None
    except (ValueError, KeyError) as exc:
        raise ConfigError(str(exc)) from exc
    return write_report(found, out, noise)
