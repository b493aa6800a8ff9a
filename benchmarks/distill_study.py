"""Distillation / teacher settings study (issue "TG-DP that learns"): the measurements behind TG-DP's defaults.

Two parts, both printed as Markdown tables (pasted into docs/MODEL.md, "Choosing the distillation defaults"):
1. `grads`: at initialisation, the L2 norm of the gradient of each weighted loss term (λ_rec·L_rec, λ_dis·L_dis,
   λ_contra·L_contra) on the modality-specific blocks (blocks_a.*, blocks_v.*), for every candidate setting, on the
   tiny model (batch 16) and on ViT-B (batch 2), with random inputs. The ratio to the contrastive term says which
   objective steers the encoders; the paper calls contrastive learning "the primary objective" (§3.3).
2. `runs`: short training runs on a real store (`--store`, e.g. the demo's) for each candidate, then the training
   InfoNCE over the last 20% of logged steps, the held-out health figures (`tgdp.eval.health.store_health`) on the
   store's eval split, and the training-time health at the last log step.

Run: `.venv/bin/python -m benchmarks.distill_study grads` and
`.venv/bin/python -m benchmarks.distill_study runs --store runs/demo/store --steps 1500 --out runs/distill`.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

__all__ = ["CANDIDATES", "grad_norms", "main", "short_run"]

# name → (run preset, model overrides). "legacy" is exactly the setting before this study.
CANDIDATES: dict[str, tuple[str, tuple[str, ...]]] = {
    "sync": ("tiny_cavmae_sync", ()),
    "tgdp": ("tiny_tgdp", ()),
    "legacy": ("tiny_tgdp_legacy", ()),
    "dis_off": ("tiny_tgdp", ("model.lambda_dis=0.0",)),
    "eq6_raw_l1": ("tiny_tgdp", ("model.dis_reduction=sum", "model.dis_target=raw", "model.lambda_dis=1.0")),
    "l2_sum_l1": ("tiny_tgdp", ("model.dis_reduction=sum", "model.dis_target=l2norm", "model.lambda_dis=1.0")),
    "l2_sum_l0.1": ("tiny_tgdp", ("model.dis_reduction=sum", "model.dis_target=l2norm", "model.lambda_dis=0.1")),
    "l2_sum_l0.01": ("tiny_tgdp", ("model.dis_reduction=sum", "model.dis_target=l2norm", "model.lambda_dis=0.01")),
    "l2_sum_l0.001": ("tiny_tgdp", ("model.dis_reduction=sum", "model.dis_target=l2norm", "model.lambda_dis=0.001")),
    "l2_sum_l0.01_abs": (
        "tiny_tgdp",
        (
            "model.dis_reduction=sum",
            "model.dis_target=l2norm",
            "model.lambda_dis=0.01",
            "model.teacher_momentum_schedule=cosine",
        ),
    ),
}


def _model_cfg(preset: str, overrides: tuple[str, ...], base: str | None = None):
    from tgdp.train.config import load_run_config

    sets = list(overrides) + ([f"model_preset={base}"] if base else [])
    return load_run_config(preset, sets).model_cfg()


def grad_norms(cfg, batch: int, seed: int = 0) -> dict[str, float]:
    """‖∇_θ λ·L‖₂ over the modality blocks for each weighted term, at initialisation (random inputs)."""
    from tgdp.model import build_model

    torch.manual_seed(seed)
    model = build_model(cfg)
    g = torch.Generator().manual_seed(seed)
    audio = torch.randn(batch, cfg.audio_length, cfg.num_mel_bins, generator=g)
    frames = torch.randn(batch, 3, cfg.img_size, cfg.img_size, generator=g)
    params = [
        p for n, p in model.student.named_parameters() if p.requires_grad and n.startswith(("blocks_a.", "blocks_v."))
    ]
    weights = {"rec": cfg.lambda_rec, "dis": cfg.lambda_dis, "contra": cfg.lambda_contra}
    out: dict[str, float] = {}
    for term, key in (("rec", "rec_loss"), ("dis", "dis_loss"), ("contra", "contrastive_loss")):
        if weights[term] == 0:
            out[term] = 0.0
            continue
        # the loss dict holds detached terms: rerun with only this term weighted (same masks via the seed)
        loss = _term_with_grad(model, audio, frames, key, seed + 1)
        grads = torch.autograd.grad(weights[term] * loss, params, allow_unused=True)
        out[term] = float(torch.sqrt(sum((gr.float() ** 2).sum() for gr in grads if gr is not None)))
    return out


def _term_with_grad(model, audio, frames, key: str, seed: int) -> torch.Tensor:
    """One loss term with its graph: the model's loss with the other λs set to 0 (same masks via the seed)."""
    cfg = model.cfg
    only = {"rec_loss": "lambda_rec", "dis_loss": "lambda_dis", "contrastive_loss": "lambda_contra"}[key]
    saved = {k: getattr(cfg, k) for k in ("lambda_rec", "lambda_dis", "lambda_contra")}
    try:
        for k in saved:
            object.__setattr__(cfg, k, 1.0 if k == only else 0.0)
        torch.manual_seed(seed)
        return model(audio, frames)["loss"]
    finally:
        for k, v in saved.items():
            object.__setattr__(cfg, k, v)


def grads_table(names: list[str], vitb: bool, tiny_batch: int = 16) -> str:
    rows = [
        "| setting | model | batch | ‖∇ λ_rec·L_rec‖ | ‖∇ λ_dis·L_dis‖ | ‖∇ λ_contra·L_contra‖ | dis/contra "
        "| rec/contra |",
        "|---|---|---|---|---|---|---|---|",
    ]
    sizes = [("tiny", None, tiny_batch)] + ([("ViT-B", "tgdp_base", 2)] if vitb else [])
    for name in names:
        preset, overrides = CANDIDATES[name]
        for label, base, batch in sizes:
            if base is not None:
                base = {"tiny_cavmae_sync": "cavmae_sync_base", "tiny_tgdp_legacy": "tgdp_base_legacy"}.get(
                    preset, "tgdp_base"
                )
            cfg = _model_cfg(preset, overrides, base)
            t0 = time.perf_counter()
            n = grad_norms(cfg, batch)
            c = n["contra"] or float("nan")
            rows.append(
                f"| {name} | {label} | {batch} | {n['rec']:.3g} | {n['dis']:.3g} | {n['contra']:.3g} | "
                f"{n['dis'] / c:.3g} | {n['rec'] / c:.3g} |"
            )
            print(rows[-1], f"({time.perf_counter() - t0:.1f} s)", flush=True)
    return "\n".join(rows)


def short_run(name: str, store: Path, out: Path, steps: int, batch: int, seed: int) -> dict[str, float]:
    """Train candidate `name` for `steps` × `batch` on `store`; returns training and held-out health figures."""
    from tgdp.eval.embed import load_encoder
    from tgdp.eval.health import store_health
    from tgdp.store import Store
    from tgdp.train.config import load_run_config
    from tgdp.train.loop import fit

    preset, overrides = CANDIDATES[name]
    run_dir = out / f"{name}_s{seed}"
    sets = [
        *overrides,
        f"train.steps={steps}",
        f"train.batch_size={batch}",
        f"train.seed={seed}",
        f"train.log_every={max(steps // 50, 1)}",
        f"train.ckpt_every={steps}",
        "train.progress=false",
        "train.tensorboard=false",
    ]
    cfg = load_run_config(preset, sets)
    summary_file = run_dir / "study.json"
    if summary_file.exists():
        return json.loads(summary_file.read_text())
    t0 = time.perf_counter()
    res = fit(cfg, store, run_dir)
    hist = res.history
    tail = hist[int(len(hist) * 0.8) :] or hist[-1:]
    last = hist[-1]
    model, info = load_encoder(res.checkpoint, with_teacher=True)
    held = store_health(model, Store.open(store, split="eval"), batch_size=64, with_teacher=info["teacher_loaded"])
    fig = {
        "name": name,
        "seed": seed,
        "steps": steps,
        "train_nce_tail": sum(r["contrastive_loss"] for r in tail) / len(tail),
        "train_chance": math.log(batch),
        "train_a_cos": last.get("a_cos"),
        "train_v_cos": last.get("v_cos"),
        "heldout": {k: v for k, v in held.items() if not isinstance(v, list)},
        "wall_s": time.perf_counter() - t0,
    }
    summary_file.write_text(json.dumps(fig, indent=2))
    return fig


def runs_table(figs: list[dict]) -> str:
    rows = [
        "| setting | seed | train InfoNCE (last 20%) | ln B | held-out InfoNCE | ln N | a cos | v cos | a std·√D | "
        "v std·√D | a erank | v erank | a t–s cos |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for f in figs:
        h = f["heldout"]
        ts = h.get("a_ts_cos")
        rows.append(
            f"| {f['name']} | {f['seed']} | {f['train_nce_tail']:.3f} | {f['train_chance']:.3f} | "
            f"{h['heldout_nce']:.3f} | {h['heldout_nce_chance']:.3f} | {h['a_cos']:.3f} | {h['v_cos']:.3f} | "
            f"{h['a_std_iso']:.3f} | {h['v_std_iso']:.3f} | {h['a_erank']:.2f} | {h['v_erank']:.2f} | "
            f"{'–' if ts is None else f'{ts:.3f}'} |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("part", choices=["grads", "runs"])
    p.add_argument("--names", default=",".join(CANDIDATES))
    p.add_argument("--vitb", action="store_true", help="grads: also ViT-B at batch 2 (tens of seconds per setting)")
    p.add_argument("--store", type=Path)
    p.add_argument("--out", type=Path, default=Path("runs/distill"))
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seeds", default="0")
    p.add_argument("--tiny", action="store_true", help="two settings, batch 2 (and 2 steps for runs): a smoke check")
    a = p.parse_args(argv)
    if a.tiny:
        a.names = a.names if a.names != p.get_default("names") else "sync,tgdp"
        a.steps, a.batch, a.vitb = min(a.steps, 2), min(a.batch, 4), False
    names = [n for n in a.names.split(",") if n]
    torch.set_num_threads(max(torch.get_num_threads(), 1))
    if a.part == "grads":
        print(grads_table(names, a.vitb, tiny_batch=2 if a.tiny else 16))
        return 0
    if a.store is None:
        p.error("runs needs --store")
    figs = []
    for seed in (int(s) for s in a.seeds.split(",")):
        for name in names:
            f = short_run(name, a.store, a.out, a.steps, a.batch, seed)
            figs.append(f)
            print(runs_table([f]).splitlines()[-1], f"({f['wall_s']:.0f} s)", flush=True)
    table = runs_table(figs)
    (a.out / "table.md").write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
