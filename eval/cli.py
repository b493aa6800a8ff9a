"""`tgdp-eval`: embed → retrieval / probe → report. Each command parses options and calls one library function."""

from __future__ import annotations

import csv
import errno
import json
import logging
import os
from pathlib import Path
from typing import Literal, Optional

import typer

from tgdp.pipeline.cli import dumps_json, group_app, print_config

app = group_app(
    "tgdp-eval", "TG-DP evaluation: cached embeddings, zero-shot retrieval, probing, report tables and plots."
)


def _device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def _dataset_of(clip_ids: list[str]) -> str:
    prefixes = {c.split(":", 1)[0] for c in clip_ids if ":" in c}
    return prefixes.pop() if len(prefixes) == 1 else "mixed"


def _model_name(meta: dict, emb: Path) -> str:
    ckpt = meta.get("checkpoint")
    return Path(ckpt).stem if ckpt else emb.stem


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


def _emit_report(res: dict, out: Path | None, json_out: bool) -> bool:
    """Write `res` to `out` (JSON) when given; print it as JSON and return True with `--json` (no human text then)."""
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(res, indent=2), encoding="utf-8")
    if json_out:
        typer.echo(dumps_json(res))
    return json_out


@app.command()
def embed(
    checkpoint: Path = typer.Option(..., exists=True, dir_okay=False, help="tgdp checkpoint or released state dict"),
    store: str = typer.Option(..., help="STORE (dir or s3://, gs://, az:// URI) or one split of it"),
    out: Path = typer.Option(..., help="output embedding table (.arrow)"),
    split: Optional[str] = typer.Option(None, help="store split (default: the split --store is, else eval)"),
    batch_size: int = typer.Option(8, min=1, help="clips per forward batch (each clip = 16 frame/segment pairs)"),
    list_file: Optional[Path] = typer.Option(
        None, "--list", exists=True, help="only these clips (ids or CAV-MAE JSON)"
    ),
    preset: Optional[str] = typer.Option(None, help="model preset of a released state dict (default cavmae_sync_base)"),
    features: Literal["global", "pre_joint"] = typer.Option(
        "global", help="global (final-normed) | pre_joint (released probe input)"
    ),
    dtype: Literal["float16", "float32"] = typer.Option("float16", help="stored dtype"),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N"),
    num_workers: int = typer.Option(2, min=0, help="DataLoader workers decoding frames"),
) -> None:
    """Embed every clip (or the listed ones) of a store split with the unmasked encoder; write the table.

    Everything that can be checked is checked before any clip is embedded: the output path, the list, the preset,
    the checkpoint, the store's shards against index.json and the store's geometry against the model."""
    from tgdp.eval.embed import embed_store, load_encoder
    from tgdp.eval.retrieval import load_id_list, resolve_ids
    from tgdp.eval.table import write_embeddings
    from tgdp.store import Store
    from tgdp.train.data import check_geometry

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    _check_out_file(out)
    ids = load_id_list(list_file) if list_file else None
    dev = _device(device)
    model, info = load_encoder(checkpoint, preset, dev)
    st = Store.open(store, split, default_split="eval")
    if hasattr(st, "check"):  # every shard against index.json (presence, size, rows): fail now, not mid-embedding
        st.check()
    check_geometry(st, model.cfg)
    match = resolve_ids(ids, st.clip_ids, where="store") if ids is not None else None
    rows, missing = (match.indices.tolist(), match.missing) if match is not None else (None, [])
    table = embed_store(model, st, rows, batch_size, dev, num_workers, features, progress=True)  # type: ignore[arg-type]
    table.meta.update(
        info, store=str(st.location), split=st.split, list=str(list_file) if list_file else None, missing=missing
    )
    write_embeddings(out, table, dtype)
    typer.echo(
        f"wrote {out}: {len(table)} clips × {table.num_frames} frames × D={table.dim} ({dtype}); "
        f"{len(missing)} listed clips missing; {table.meta['clips_per_s']:.1f} clips/s"
    )


@app.command()
def retrieval(
    emb: Path = typer.Option(..., exists=True, dir_okay=False, help="embedding table from `embed`"),
    out: Path = typer.Option(..., help="output directory"),
    list_file: Optional[Path] = typer.Option(None, "--list", exists=True, help="retrieval list (ids or CAV-MAE JSON)"),
    strategy: Literal["diagonal_mean", "single", "all_pairs"] = typer.Option("diagonal_mean", help="similarity"),
    frame: Optional[int] = typer.Option(None, help="frame of the `single` strategy (default T//2)"),
    ties: Literal["pessimistic", "optimistic"] = typer.Option("pessimistic", help="rank of exactly tied similarities"),
    chunk_size: int = typer.Option(2048, min=1, help="query rows per similarity block"),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N"),
    name: Optional[str] = typer.Option(None, help="model name in tables (default: checkpoint file stem)"),
    dataset: Optional[str] = typer.Option(None, help="dataset name in tables (default: from the clip ids)"),
    plot_clips: int = typer.Option(64, min=2, help="clips in the similarity-matrix plot"),
) -> None:
    """Zero-shot retrieval in both directions; writes retrieval.json/.md, ranks.npz, recall.png, similarity.png."""
    import numpy as np

    from tgdp.eval.report import plot_recall_curves, plot_similarity, retrieval_table
    from tgdp.eval.retrieval import DIRECTION_LABELS, run_retrieval, similarity_matrix
    from tgdp.eval.table import read_embeddings

    table = read_embeddings(emb)
    res = run_retrieval(
        table,
        list_file,
        strategy,  # type: ignore[arg-type]
        frame,
        ties,  # type: ignore[arg-type]
        chunk_size,
        _device(device),
        model=name or _model_name(table.meta, emb),
        dataset=dataset or _dataset_of(table.clip_ids),
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
    sub = table.subset([table.clip_ids.index(c) for c in res.clip_ids[:plot_clips]])
    plot_similarity(similarity_matrix(sub.emb_a, sub.emb_v, strategy, frame), out / "similarity.png")  # type: ignore[arg-type]
    for direction, m in res.metrics.items():
        typer.echo(f"{DIRECTION_LABELS[direction]}: " + "  ".join(f"{k} {v:.2f}" for k, v in m.items()))
    if res.missing:
        typer.echo(f"{len(res.missing)} of {res.n_list} listed clips missing (see retrieval.json)")


def _read_classes(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".csv":
        rows = list(csv.DictReader(text.splitlines()))
        if not rows or "mid" not in rows[0]:
            raise typer.BadParameter(f"{path}: expected a CSV with a 'mid' column (index,mid,display_name)")
        return [r["mid"] for r in rows]
    return [ln.strip() for ln in text.splitlines() if ln.strip()]


@app.command()
def probe(
    train_emb: Path = typer.Option(..., exists=True, dir_okay=False, help="embedding table of the probe's train clips"),
    test_emb: Path = typer.Option(..., exists=True, dir_okay=False, help="embedding table of the probe's test clips"),
    task: Literal["multilabel", "multiclass"] = typer.Option(..., help="BCE + mAP | CE + top-1"),
    out: Path = typer.Option(..., help="output directory"),
    modality: Literal["av", "a", "v"] = typer.Option("av", help="probe input tokens"),
    linear: bool = typer.Option(False, "--linear", help="mean + BatchNorm + Linear instead of the attention probe"),
    config: Optional[Path] = typer.Option(None, exists=True, help="ProbeConfig YAML"),
    overrides: list[str] = typer.Option(
        [], "--set", help="ProbeConfig override key=value (repeatable), e.g. epochs=50; keys: `tgdp-eval config`"
    ),
    classes: Optional[Path] = typer.Option(None, exists=True, help="class list (labels CSV with 'mid', or text)"),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N"),
    name: Optional[str] = typer.Option(None, help="model name in tables (default: checkpoint file stem)"),
    dataset: Optional[str] = typer.Option(None, help="dataset name in tables (default: from the clip ids)"),
) -> None:
    """Train a probe on cached train embeddings, evaluate on test embeddings; writes probe.json and probe.md."""
    from tgdp.config import load_config
    from tgdp.eval.probe import ProbeConfig, train_probe
    from tgdp.eval.report import probe_table
    from tgdp.eval.table import read_embeddings

    sets = [f"task={task}", f"modality={modality}", f"linear={str(linear).lower()}", f"device={_device(device)}"]
    cfg = load_config(ProbeConfig, config, [*sets, *overrides])
    train, test = read_embeddings(train_emb), read_embeddings(test_emb)
    res = train_probe(train, test, cfg, _read_classes(classes) if classes else None)
    res.model = name or _model_name(train.meta, train_emb)
    res.dataset = dataset or _dataset_of(train.clip_ids)
    out.mkdir(parents=True, exist_ok=True)
    d = {**res.to_dict(), "train_embeddings": str(train_emb), "test_embeddings": str(test_emb)}
    (out / "probe.json").write_text(json.dumps(d, indent=2), encoding="utf-8")
    (out / "probe.md").write_text(probe_table([d])[0] + "\n", encoding="utf-8")
    typer.echo(f"{res.metric_name} {res.metric:.2f} ({res.n_train} train / {res.n_test} test clips)")


@app.command("config")
def config_cmd(
    key: Optional[str] = typer.Argument(None, help="only this key, e.g. epochs"),
    config: Optional[Path] = typer.Option(None, exists=True, help="ProbeConfig YAML"),
    overrides: list[str] = typer.Option([], "--set", help="ProbeConfig override key=value (repeatable), e.g. lr=1e-3"),
    show: bool = typer.Option(False, "--show", help="print the resolved config as YAML that --config loads back"),
    as_json: bool = typer.Option(False, "--json", help="print the keys as JSON"),
) -> None:
    """List every ProbeConfig key (`probe --set`) with its type, resolved value, default and help."""
    from tgdp.config import load_config
    from tgdp.eval.probe import ProbeConfig

    print_config(load_config(ProbeConfig, config, overrides), key, show, as_json)


@app.command()
def health(
    checkpoint: Path = typer.Option(..., exists=True, dir_okay=False, help="tgdp training checkpoint"),
    store: str = typer.Option(..., help="STORE (dir or s3://, gs://, az:// URI) or one split of it"),
    split: Optional[str] = typer.Option(None, help="store split (default: the split --store is, else eval)"),
    batch_size: int = typer.Option(64, min=2, help="clips per InfoNCE chunk (chance level = ln of this)"),
    frame: int = typer.Option(8, min=0, help="frame index of the pair taken from each clip"),
    out: Optional[Path] = typer.Option(None, help="also write the figures to this JSON file"),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N"),
    json_out: bool = typer.Option(False, "--json", help="print JSON instead of a table"),
) -> None:
    """Representation health of a checkpoint on a store split: held-out InfoNCE vs ln(B), collapse figures."""
    from tgdp.eval.embed import load_encoder
    from tgdp.eval.health import store_health
    from tgdp.eval.retrieval import DIRECTION_LABELS
    from tgdp.store import Store

    dev = _device(device)
    model, info = load_encoder(checkpoint, None, dev, with_teacher=True)
    st = Store.open(store, split, default_split="eval")
    res = store_health(model, st, None, frame, batch_size, dev, with_teacher=info["teacher_loaded"], grad_shares=True)
    res.update(checkpoint=str(checkpoint), model_preset=info["model_preset"], step=info["step"], split=st.split)
    if _emit_report(res, out, json_out):
        return
    heldout = "held-out" if st.split != "train" else "TRAINING-split (not held-out)"
    typer.echo(
        f"{checkpoint} ({info['model_preset']}, step {info['step']}) on {res['clips']} {st.split} clips, frame {frame}"
    )
    typer.echo(
        f"{heldout} InfoNCE {res['heldout_nce']:.3f}"
        f" vs chance ln({res['nce_batch']}) = {res['heldout_nce_chance']:.3f} "
        f"(ratio {res['nce_ratio']:.3f}, {DIRECTION_LABELS.get(res['contrastive'], res['contrastive'])})"
    )
    for m in ("a", "v"):
        ts = f", teacher-student cos {res[m + '_ts_cos']:.3f}" if f"{m}_ts_cos" in res else ""
        typer.echo(
            f"{'audio ' if m == 'a' else 'visual'}: std·√D {res[m + '_std_iso']:.3f}, pairwise cos "
            f"{res[m + '_cos']:.3f}, effective rank {res[m + '_erank']:.2f}{ts}"
        )
    if "gnorm_rec" in res:
        terms = ("rec", "contra", "dis")
        shares = ", ".join(f"{t} {res['gshare_' + t]:.3f} (‖∇‖ {res['gnorm_' + t]:.3g})" for t in terms)
        typer.echo(f"gradient shares on the shared encoder, first {res['nce_batch']} clips: {shares}")
    for w in res["collapse_warnings"]:
        typer.echo(f"WARNING: {w}")


@app.command()
def selection(
    checkpoint: Path = typer.Option(..., exists=True, dir_okay=False, help="tgdp training checkpoint"),
    store: Path = typer.Option(..., exists=True, file_okay=False, help="STORE dir with a truth sidecar"),
    split: str = typer.Option("eval", help="store split (held-out clips)"),
    frame: int = typer.Option(8, min=0, help="frame index of the pair taken from each clip"),
    source: str = typer.Option("teacher", help="teacher (the EMA teacher) | student (no EMA lag)"),
    direction: Optional[str] = typer.Option(None, help="patch_to_global | global_to_patch (default: the model's)"),
    out: Optional[Path] = typer.Option(None, help="also write the figures to this JSON file"),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N"),
    json_out: bool = typer.Option(False, "--json", help="print JSON instead of a table"),
) -> None:
    """Does the teacher keep the informative tokens? Precision of its top-k patches against a synthetic store's
    per-patch ground truth (`tgdp-data truth`), next to random selection at the same ratio."""
    from tgdp.eval.embed import load_encoder
    from tgdp.eval.selection import store_selection
    from tgdp.pipeline.truth import PatchTruth, TruthError
    from tgdp.store import Store

    dev = _device(device)
    model, info = load_encoder(checkpoint, None, dev, with_teacher=True)
    st = Store.open(store, split=split)
    truth = PatchTruth.find(store, split, st.clip_ids)
    if truth is None:
        raise TruthError(f"{store} has no ground truth for split {split!r}: write it with `tgdp-data truth`")
    if source == "teacher" and not info["teacher_loaded"]:
        raise TruthError(f"{checkpoint} holds no EMA teacher: use --source student")
    res = store_selection(model, st, truth, None, frame, 64, dev, source, direction)
    res.update(checkpoint=str(checkpoint), model_preset=info["model_preset"], step=info["step"], split=split)
    if _emit_report(res, out, json_out):
        return
    typer.echo(
        f"{checkpoint} (step {info['step']}) {source} {res['direction']}: {res['clips']} {split} clips, frame {frame}"
    )
    for name in ("v_obj", "v_decoy", "v_bg", "a_note", "a_dist", "a_quiet"):
        typer.echo(
            f"{name:8s} selected {res['sel_' + name]:.3f}  random {res['rand_' + name]:.3f}  lift "
            f"{res['lift_' + name]:.2f}  Δ {res['diff_' + name]:+.3f} [{res['diff_' + name + '_lo']:+.3f}, "
            f"{res['diff_' + name + '_hi']:+.3f}]  attention mass {res['att_' + name]:.3f}"
        )


@app.command()
def report(
    results: list[Path] = typer.Argument(..., exists=True, help="result JSON files or directories holding them"),
    out: Path = typer.Option(..., help="output directory for report.md / report.json"),
    study: Optional[Path] = typer.Option(
        None, exists=True, dir_okay=False, help="results.json of `make reproduce`: its seed noise (default: built in)"
    ),
) -> None:
    """Collect retrieval and probe results into tables like the paper's (Markdown + JSON), with chance levels, the
    seed noise and which model did better."""
    from tgdp.eval.report import load_results, seed_noise_from_study, write_report

    found = load_results(results)
    if not found:
        raise typer.BadParameter("no retrieval/probe result JSON found")
    try:
        noise = seed_noise_from_study(study) if study is not None else None
    except (ValueError, KeyError) as exc:
        raise typer.BadParameter(str(exc)) from exc
    md, js = write_report(found, out, noise)
    typer.echo(md.read_text(encoding="utf-8"))
    typer.echo(f"wrote {md} and {js}")


if __name__ == "__main__":
    app()
