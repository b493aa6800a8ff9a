"""`tgdp-eval`: embed → retrieval / probe → report. Each command parses options, loads its typed config
(`--config FILE`, `--set key=value`: `tgdp.eval.config`, the probe's `ProbeConfig`), calls one library function of
`tgdp.eval.commands` and prints the result. Options are the run-level choices only: paths, the store split, the
names in the tables, `--device`, `--json`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from tgdp.config.cli import print_config
from tgdp.core.cli import dumps_json, group_app

app = group_app(
    "tgdp-eval", "TG-DP evaluation: cached embeddings, zero-shot retrieval, probing, report tables and plots."
)


def _device(device: str) -> str:
    from tgdp.core.device import pick_device

    return str(pick_device(device))


COMMANDS = ("embed", "retrieval", "probe", "health", "selection")
CONFIG_OPTION = typer.Option(None, "--config", exists=True, dir_okay=False, help="the command's config YAML")


def _sets(command: str) -> typer.models.OptionInfo:
    return typer.Option(
        [], "--set", help=f"config key=value (repeatable); keys: `tgdp-eval config --command {command}`"
    )


def _config_class(command: str) -> type:
    if command == "probe":
        from tgdp.eval.probe import ProbeConfig

        return ProbeConfig
    from tgdp.eval import config as eval_config

    return {
        "embed": eval_config.EmbedConfig,
        "retrieval": eval_config.RetrievalConfig,
        "health": eval_config.HealthConfig,
        "selection": eval_config.SelectionConfig,
    }[command]


def _load(command: str, config: Path | None, sets: list[str]):
    from tgdp.config import load_config

    return load_config(_config_class(command), config, sets)


def _emit(res: dict, json_out: bool) -> bool:
    """Print `res` as JSON and return True with `--json` (no human text then)."""
    if json_out:
        typer.echo(dumps_json(res))
    return json_out


@app.command()
def embed(
    checkpoint: Path = typer.Option(..., exists=True, dir_okay=False, help="tgdp checkpoint or released state dict"),
    store: str = typer.Option(..., help="STORE (dir or s3://, gs://, az:// URI) or one split of it"),
    out: Path = typer.Option(..., help="output embedding table (.arrow)"),
    split: Optional[str] = typer.Option(None, help="store split (default: the split --store is, else eval)"),
    list_file: Optional[Path] = typer.Option(
        None, "--list", exists=True, help="only these clips (ids or CAV-MAE JSON)"
    ),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N"),
    config: Optional[Path] = CONFIG_OPTION,
    sets: list[str] = _sets("embed"),
) -> None:
    """Embed every clip (or the listed ones) of a store split with the unmasked encoder; write the table.

    Everything that can be checked is checked before any clip is embedded: the output path, the list, the preset,
    the checkpoint, the store's shards against index.json and the store's geometry against the model."""
    from tgdp.eval.commands import embed_store_to_file

    cfg = _load("embed", config, sets)
    table = embed_store_to_file(checkpoint, store, out, split, list_file, cfg, _device(device))
    typer.echo(
        f"wrote {out}: {len(table)} clips × {table.num_frames} frames × D={table.dim} ({cfg.dtype}); "
        f"{len(table.meta['missing'])} listed clips missing; {table.meta['clips_per_s']:.1f} clips/s"
    )


@app.command()
def retrieval(
    emb: Path = typer.Option(..., exists=True, dir_okay=False, help="embedding table from `embed`"),
    out: Path = typer.Option(..., help="output directory"),
    list_file: Optional[Path] = typer.Option(None, "--list", exists=True, help="retrieval list (ids or CAV-MAE JSON)"),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N"),
    name: Optional[str] = typer.Option(None, help="model name in tables (default: checkpoint file stem)"),
    dataset: Optional[str] = typer.Option(None, help="dataset name in tables (default: from the clip ids)"),
    config: Optional[Path] = CONFIG_OPTION,
    sets: list[str] = _sets("retrieval"),
) -> None:
    """Zero-shot retrieval in both directions; writes retrieval.json/.md, ranks.npz, recall.png, similarity.png."""
    from tgdp.eval.commands import retrieval_to_dir
    from tgdp.eval.retrieval import DIRECTION_LABELS

    res = retrieval_to_dir(emb, out, list_file, _load("retrieval", config, sets), _device(device), name, dataset)
    for direction, m in res.metrics.items():
        typer.echo(f"{DIRECTION_LABELS[direction]}: " + "  ".join(f"{k} {v:.2f}" for k, v in m.items()))
    if res.missing:
        typer.echo(f"{len(res.missing)} of {res.n_list} listed clips missing (see retrieval.json)")


@app.command()
def probe(
    train_emb: Path = typer.Option(..., exists=True, dir_okay=False, help="embedding table of the probe's train clips"),
    test_emb: Path = typer.Option(..., exists=True, dir_okay=False, help="embedding table of the probe's test clips"),
    out: Path = typer.Option(..., help="output directory"),
    classes: Optional[Path] = typer.Option(None, exists=True, help="class list (labels CSV with 'mid', or text)"),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N"),
    name: Optional[str] = typer.Option(None, help="model name in tables (default: checkpoint file stem)"),
    dataset: Optional[str] = typer.Option(None, help="dataset name in tables (default: from the clip ids)"),
    config: Optional[Path] = CONFIG_OPTION,
    sets: list[str] = typer.Option(
        [], "--set", help="ProbeConfig key=value (repeatable), e.g. task=multiclass; keys: `tgdp-eval config`"
    ),
) -> None:
    """Train a probe on cached train embeddings, evaluate on test embeddings; writes probe.json and probe.md.
    The task has no default here: `--set task=multilabel` (BCE + mAP) or `task=multiclass` (CE + top-1)."""
    from tgdp.config import ConfigError
    from tgdp.eval.commands import probe_to_dir

    cfg = _load("probe", config, [f"device={_device(device)}", *sets])
    if "task" not in cfg.model_fields_set:
        raise ConfigError("probe: name the task with --set task=multilabel|multiclass (or task: in --config)")
    res = probe_to_dir(train_emb, test_emb, out, cfg, classes, name, dataset)
    typer.echo(f"{res.metric_name} {res.metric:.2f} ({res.n_train} train / {res.n_test} test clips)")


@app.command("config")
def config_cmd(
    key: Optional[str] = typer.Argument(None, help="only this key, e.g. epochs"),
    command: str = typer.Option("probe", help=f"whose config: {' | '.join(COMMANDS)}"),
    config: Optional[Path] = CONFIG_OPTION,
    sets: list[str] = typer.Option([], "--set", help="config override key=value (repeatable), e.g. lr=1e-3"),
    show: bool = typer.Option(False, "--show", help="print the resolved config as YAML that --config loads back"),
    as_json: bool = typer.Option(False, "--json", help="print the keys as JSON"),
) -> None:
    """List every config key of a command (`--set`; default: the probe's) with its type, resolved value, default
    and help."""
    if command not in COMMANDS:
        raise typer.BadParameter(f"--command must be one of {', '.join(COMMANDS)}, got {command!r}")
    print_config(_load(command, config, sets), key, show, as_json)


@app.command()
def health(
    checkpoint: Path = typer.Option(..., exists=True, dir_okay=False, help="tgdp training checkpoint"),
    store: str = typer.Option(..., help="STORE (dir or s3://, gs://, az:// URI) or one split of it"),
    split: Optional[str] = typer.Option(None, help="store split (default: the split --store is, else eval)"),
    out: Optional[Path] = typer.Option(None, help="also write the figures to this JSON file"),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N"),
    json_out: bool = typer.Option(False, "--json", help="print JSON instead of a table"),
    config: Optional[Path] = CONFIG_OPTION,
    sets: list[str] = _sets("health"),
) -> None:
    """Representation health of a checkpoint on a store split: held-out InfoNCE vs ln(B), collapse figures."""
    from tgdp.eval.commands import health_figures
    from tgdp.eval.retrieval import DIRECTION_LABELS

    cfg = _load("health", config, sets)
    res = health_figures(checkpoint, store, split, cfg, _device(device), out)
    if _emit(res, json_out):
        return
    split = res["split"]
    heldout = "held-out" if split != "train" else "TRAINING-split (not held-out)"
    typer.echo(
        f"{checkpoint} ({res['model_preset']}, step {res['step']}) on {res['clips']} {split} clips, frame {cfg.frame}"
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
    out: Optional[Path] = typer.Option(None, help="also write the figures to this JSON file"),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N"),
    json_out: bool = typer.Option(False, "--json", help="print JSON instead of a table"),
    config: Optional[Path] = CONFIG_OPTION,
    sets: list[str] = _sets("selection"),
) -> None:
    """Does the teacher keep the informative tokens? Precision of its top-k patches against a synthetic store's
    per-patch ground truth (`tgdp-data truth`), next to random selection at the same ratio."""
    from tgdp.eval.commands import selection_figures

    cfg = _load("selection", config, sets)
    res = selection_figures(checkpoint, store, split, cfg, _device(device), out)
    if _emit(res, json_out):
        return
    typer.echo(
        f"{checkpoint} (step {res['step']}) {cfg.source} {res['direction']}: {res['clips']} {split} clips, "
        f"frame {cfg.frame}"
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
    from tgdp.eval.commands import report_to_dir

    md, js = report_to_dir(results, out, study)
    typer.echo(md.read_text(encoding="utf-8"))
    typer.echo(f"wrote {md} and {js}")


if __name__ == "__main__":
    app()
