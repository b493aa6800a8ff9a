"""Zero-shot audio↔visual retrieval over cached per-frame global tokens (docs/EVAL.md).

Similarity (`strategy`):
- `diagonal_mean` (released default): sim(i, j) = (1/T) Σ_t cos(a_{i,t}, v_{j,t}). With every token L2-normalised
  this is one dot product of the flattened [T·D] rows divided by T, so a block of query rows is one matmul.
- `single`: cos(a_{i,t0}, v_{j,t0}) for one fixed frame t0.
- `all_pairs`: the mean over all T×T pairs; the sum is bilinear, so it equals the dot product of the per-clip means
  of the normalised tokens (one [N, D] matmul).

Ranking is tie-safe: rank = 1 + #{candidates with strictly greater similarity} (`ties="optimistic"`), plus
#{other candidates with exactly equal similarity} for `ties="pessimistic"` (the default: a collapsed model whose
embeddings are all equal gets rank N, not rank 1). One rank per query, unlike the released `np.where(sx - d == 0)`,
which emits one "rank" per tied candidate and so changes both the numerator and the denominator of R@K.

Memory: the candidates are held once as float32 [N, T·D]; queries are processed in blocks of `chunk_size` rows, so
the similarity working set is O(chunk_size · N).
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from tgdp.eval.metrics import median_rank, recall_at_k
from tgdp.eval.table import EmbeddingTable, video_id_from_clip_id

__all__ = [
    "DIRECTIONS",
    "ListMatch",
    "MissingClipsWarning",
    "RetrievalResult",
    "Strategy",
    "TieMode",
    "load_id_list",
    "prepare_embeddings",
    "resolve_ids",
    "retrieval_metrics",
    "retrieval_ranks",
    "retrieval_ranks_both",
    "run_retrieval",
    "similarity_matrix",
]

_log = logging.getLogger(__name__)

Strategy = Literal["diagonal_mean", "single", "all_pairs"]
TieMode = Literal["pessimistic", "optimistic"]
# direction name → (query modality, candidate modality); released "video" = V→A, "audio" = A→V
DIRECTIONS: dict[str, tuple[str, str]] = {"v2a": ("v", "a"), "a2v": ("a", "v")}
# how people read a direction (the paper's tables, every human output); the keys stay the JSON names
DIRECTION_LABELS = {"v2a": "V→A", "a2v": "A→V"}
STRATEGIES = ("diagonal_mean", "single", "all_pairs")
KS = (1, 5, 10)


class MissingClipsWarning(UserWarning):
    """Some clips of a retrieval list are not in the embedding table."""


def _read_only_tensor(x: np.ndarray) -> torch.Tensor:
    """A tensor view of an array that may be read-only (a memory-mapped embedding table) without a copy; torch
    warns that it cannot protect such memory, but the view is only read (converted into a new float32 tensor)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(np.ascontiguousarray(x))


def _check(strategy: str, emb: np.ndarray | torch.Tensor, frame: int | None) -> None:
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    if emb.ndim != 3:
        raise ValueError(f"embeddings must be [N, T, D], got shape {tuple(emb.shape)}")
    if strategy == "single" and frame is not None and not 0 <= frame < emb.shape[1]:
        raise ValueError(f"frame {frame} out of range for T={emb.shape[1]}")


def prepare_embeddings(
    emb: np.ndarray | torch.Tensor,
    strategy: Strategy = "diagonal_mean",
    frame: int | None = None,
    device: str | torch.device = "cpu",
    chunk_size: int = 2048,
) -> torch.Tensor:
    """[N, T, D] tokens → float32 [N, K] rows whose dot products are the chosen similarity.

    Normalises in blocks of `chunk_size` clips so a float16 table never needs a full float32 temporary beside the
    output. K = T·D (diagonal_mean, scaled by 1/sqrt(T) on both sides), D (single, all_pairs).
    """
    _check(strategy, emb, frame)
    n, t, d = emb.shape
    k = t * d if strategy == "diagonal_mean" else d
    out = torch.empty((n, k), dtype=torch.float32, device=device)
    scale = 1.0 / float(np.sqrt(t))
    t0 = t // 2 if frame is None else frame
    for s in range(0, n, chunk_size):
        x = emb[s : s + chunk_size]
        x = _read_only_tensor(x) if isinstance(x, np.ndarray) else x
        if strategy == "single":
            x = x[:, t0]
        dst = out[s : s + x.shape[0]]
        if strategy == "diagonal_mean":
            # convert straight into the output rows and normalise in place: no float32 temporaries
            dst = dst.view(-1, t, d)
            dst.copy_(x)
            dst.mul_(scale / torch.linalg.vector_norm(dst, dim=-1, keepdim=True).clamp_min_(1e-12))
        else:
            x = F.normalize(x.to(device=device, dtype=torch.float32), dim=-1)
            dst.copy_(x.mean(dim=1) if strategy == "all_pairs" else x)
    return out


def similarity_matrix(
    emb_a: np.ndarray,
    emb_v: np.ndarray,
    strategy: Strategy = "diagonal_mean",
    frame: int | None = None,
) -> np.ndarray:
    """Full sim[i, j] = sim(a_i, v_j), float32 [N, M]; for plots and small sets (retrieval uses the chunked path)."""
    a = prepare_embeddings(emb_a, strategy, frame)
    v = prepare_embeddings(emb_v, strategy, frame)
    return (a @ v.T).numpy()


def _rank_blocks(
    query: np.ndarray | torch.Tensor,
    cand: np.ndarray | torch.Tensor,
    strategy: str,
    frame: int | None,
    ties: str,
    chunk_size: int,
    device: str | torch.device,
    tie_tol: float,
    rows: slice | None,
    columns: bool,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Row ranks (query i among all candidates) and, if `columns`, column ranks (candidate j as a query among all
    queries) from one pass over sim = query · candᵀ, block by block."""
    if ties not in ("pessimistic", "optimistic"):
        raise ValueError(f"ties must be 'pessimistic' or 'optimistic', got {ties!r}")
    if query.shape != cand.shape:
        raise ValueError(f"query {tuple(query.shape)} and candidates {tuple(cand.shape)} must have the same shape")
    if chunk_size < 1:
        raise ValueError("chunk_size must be ≥ 1")
    if tie_tol < 0:
        raise ValueError("tie_tol must be ≥ 0")
    _check(strategy, query, frame)
    n = query.shape[0]
    lo, hi, step = (rows or slice(None)).indices(n)
    if step != 1:
        raise ValueError("rows must be a contiguous slice")
    if columns and (lo, hi) != (0, n):
        raise ValueError("column ranks need every query row")
    c = prepare_embeddings(cand, strategy, frame, device, chunk_size)
    pessimistic = ties == "pessimistic"
    # true-pair similarities computed once (batched dot products) so both directions compare against the same
    # value; the true pair itself is excluded by index, never by comparison, and `tie_tol` absorbs the rounding
    # difference between this dot product and the same pair's value inside a matmul
    own_all = torch.empty(n, dtype=torch.float32, device=c.device)
    single_block = hi - lo <= chunk_size
    for s in range(lo, hi, chunk_size):
        q = prepare_embeddings(query[s : min(s + chunk_size, hi)], strategy, frame, device, chunk_size)
        own_all[s : s + q.shape[0]] = torch.bmm(q.unsqueeze(1), c[s : s + q.shape[0]].unsqueeze(2)).flatten()
    own32 = own_all
    row_ranks = torch.empty(hi - lo, dtype=torch.int64)
    col_count = torch.zeros(n, dtype=torch.int64, device=c.device) if columns else None
    for s in range(lo, hi, chunk_size):
        # queries are prepared again block by block rather than held whole: preparing is O(N·K), cheap
        if not single_block:
            q = prepare_embeddings(query[s : min(s + chunk_size, hi)], strategy, frame, device, chunk_size)
        e = s + q.shape[0]
        sim = q @ c.T
        local = torch.arange(e - s, device=sim.device)
        sim[local, local + s] = float("nan")  # NaN compares false: the own entry counts in neither direction
        if pessimistic:
            row_above = sim >= (own32[s:e] - tie_tol).unsqueeze(1)
        else:
            row_above = sim > (own32[s:e] + tie_tol).unsqueeze(1)
        row_ranks[s - lo : e - lo] = (row_above.sum(dim=1) + 1).cpu()
        del row_above
        if col_count is not None:
            col_above = sim >= (own32 - tie_tol) if pessimistic else sim > (own32 + tie_tol)
            col_count += col_above.sum(dim=0)
        del sim
    col_ranks = (col_count + 1).cpu().numpy() if col_count is not None else None
    return row_ranks.numpy(), col_ranks


def retrieval_ranks(
    query: np.ndarray | torch.Tensor,
    cand: np.ndarray | torch.Tensor,
    strategy: Strategy = "diagonal_mean",
    frame: int | None = None,
    ties: TieMode = "pessimistic",
    chunk_size: int = 2048,
    device: str | torch.device = "cpu",
    rows: slice | None = None,
    tie_tol: float = 1e-5,
) -> np.ndarray:
    """1-based rank of candidate i for query i. query, cand: [N, T, D] (aligned rows). Returns [N] int64.

    rows: rank only the queries of this slice (e.g. to split a large list over processes or GPUs); the result then
    has one entry per selected query. Similarities within `tie_tol` of the true pair's count as ties."""
    return _rank_blocks(query, cand, strategy, frame, ties, chunk_size, device, tie_tol, rows, columns=False)[0]


def retrieval_ranks_both(
    emb_a: np.ndarray | torch.Tensor,
    emb_v: np.ndarray | torch.Tensor,
    strategy: Strategy = "diagonal_mean",
    frame: int | None = None,
    ties: TieMode = "pessimistic",
    chunk_size: int = 2048,
    device: str | torch.device = "cpu",
    tie_tol: float = 1e-5,
) -> dict[str, np.ndarray]:
    """{"a2v": [N], "v2a": [N]} ranks from one pass over sim(a_i, v_j): rows rank A→V, columns rank V→A (every
    strategy is symmetric in (a, v), so sim_va = sim_avᵀ and half the matmul work is saved)."""
    a2v, v2a = _rank_blocks(emb_a, emb_v, strategy, frame, ties, chunk_size, device, tie_tol, None, columns=True)
    assert v2a is not None
    return {"a2v": a2v, "v2a": v2a}


def retrieval_metrics(ranks: np.ndarray, ks: Sequence[int] = KS) -> dict[str, float]:
    """{"R@1", "R@5", "R@10" (percent), "MedR", "MeanR"} of 1-based ranks."""
    out = {f"R@{k}": v for k, v in recall_at_k(ranks, ks).items()}
    out["MedR"] = median_rank(ranks)
    out["MeanR"] = float(np.mean(ranks))
    return out


# --- retrieval lists ------------------------------------------------------------------------------------------


def load_id_list(path: str | Path) -> list[str]:
    """Ids of a retrieval list: CAV-MAE JSON (`{"data": [{"video_id": ...}]}`), a JSON list of ids or of such
    dicts, or plain text with one clip id or video id per line (blank lines and `#` comments skipped)."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json" or text.lstrip().startswith(("{", "[")):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: invalid JSON: {exc}") from exc
        items = data.get("data") if isinstance(data, dict) else data
        if not isinstance(items, list):
            raise ValueError(f'{path}: expected {{"data": [...]}} or a JSON list')
        ids = []
        for k, item in enumerate(items):
            if isinstance(item, str):
                ids.append(item)
            elif isinstance(item, dict) and ("clip_id" in item or "video_id" in item):
                ids.append(str(item.get("clip_id") or item["video_id"]))
            else:
                raise ValueError(f"{path}: entry {k} has neither clip_id nor video_id: {item!r}")
        return ids
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


@dataclass
class ListMatch:
    """A retrieval list resolved against a table: row indices in list order, and what could not be used."""

    indices: np.ndarray
    missing: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    n_list: int = 0


def resolve_ids(
    ids: Sequence[str], clip_ids: Sequence[str], video_ids: Sequence[str] | None = None, where: str = "embeddings"
) -> ListMatch:
    """Map listed ids (clip ids, else CAV-MAE video ids) to rows of `clip_ids` (a store's or a table's), in list
    order; the one resolver of every id list. video_ids: the rows' video ids (default: derived from the clip ids,
    `video_id_from_clip_id`); the first row of a video id wins. Missing and repeated ids are recorded, and a
    `MissingClipsWarning` names how many are missing (they are never silently dropped)."""
    if video_ids is None:
        video_ids = [video_id_from_clip_id(c) for c in clip_ids]
    by_clip = {c: i for i, c in enumerate(clip_ids)}
    by_video: dict[str, int] = {}
    for i, v in enumerate(video_ids):
        by_video.setdefault(v, i)
    seen: set[int] = set()
    indices, missing, duplicates = [], [], []
    for item in ids:
        i = by_clip.get(item, by_video.get(item))
        if i is None:
            missing.append(item)
        elif i in seen:
            duplicates.append(item)
        else:
            seen.add(i)
            indices.append(i)
    if missing:
        msg = f"{len(missing)} of {len(ids)} listed clips are not in the {where} (e.g. {missing[:3]})"
        warnings.warn(msg, MissingClipsWarning, stacklevel=2)
        _log.warning(msg)
    if duplicates:
        _log.warning("%d listed clips are repeated; each is used once", len(duplicates))
    return ListMatch(np.asarray(indices, dtype=np.int64), missing, duplicates, len(ids))


# --- end to end -----------------------------------------------------------------------------------------------


@dataclass
class RetrievalResult:
    """Metrics per direction ("v2a", "a2v") plus the accounting of the list; ranks stay out of `to_dict`."""

    metrics: dict[str, dict[str, float]]
    ranks: dict[str, np.ndarray]
    clip_ids: list[str]
    strategy: str
    ties: str
    frame: int | None = None
    model: str = ""
    dataset: str = ""
    list_path: str | None = None
    n_list: int = 0
    missing: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "retrieval",
            "model": self.model,
            "dataset": self.dataset,
            "strategy": self.strategy,
            "frame": self.frame,
            "ties": self.ties,
            "list": self.list_path,
            "n_list": self.n_list,
            "n_used": len(self.clip_ids),
            "n_missing": len(self.missing),
            "missing": self.missing,
            "duplicates": self.duplicates,
            "metrics": self.metrics,
        }


def run_retrieval(
    table: EmbeddingTable,
    list_path: str | Path | None = None,
    strategy: Strategy = "diagonal_mean",
    frame: int | None = None,
    ties: TieMode = "pessimistic",
    chunk_size: int = 2048,
    device: str | torch.device = "cpu",
    model: str = "",
    dataset: str = "",
    tie_tol: float = 1e-5,
) -> RetrievalResult:
    """Retrieval in both directions over the whole table, or over the clips of `list_path` (in list order)."""
    if list_path is not None:
        match = resolve_ids(load_id_list(list_path), table.clip_ids, table.video_ids)
        if match.indices.size == 0:
            raise ValueError(f"none of the {match.n_list} clips of {list_path} is in the embeddings")
        sub = table.subset(match.indices)
    else:
        match = ListMatch(np.arange(len(table)), n_list=len(table))
        sub = table
    if len(sub) < 2:
        raise ValueError(f"retrieval needs at least 2 clips, got {len(sub)}")
    both = retrieval_ranks_both(sub.emb_a, sub.emb_v, strategy, frame, ties, chunk_size, device, tie_tol)
    ranks = {name: both[name] for name in DIRECTIONS}
    metrics = {name: retrieval_metrics(r) for name, r in ranks.items()}
    return RetrievalResult(
        metrics=metrics,
        ranks=ranks,
        clip_ids=list(sub.clip_ids),
        strategy=strategy,
        ties=ties,
        frame=(sub.num_frames // 2 if frame is None else frame) if strategy == "single" else None,
        model=model,
        dataset=dataset,
        list_path=str(list_path) if list_path is not None else None,
        n_list=match.n_list,
        missing=match.missing,
        duplicates=match.duplicates,
    )
