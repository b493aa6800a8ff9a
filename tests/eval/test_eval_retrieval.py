"""Retrieval: ranks and recall against a naive per-row sorting reference, ties, chunking, lists with missing clips."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from tgdp.eval.metrics import median_rank, recall_at_k, recall_curve
from tgdp.eval.retrieval import (
    MissingClipsWarning,
    load_id_list,
    resolve_ids,
    retrieval_ranks,
    retrieval_ranks_both,
    run_retrieval,
    similarity_matrix,
)
from tgdp.eval.table import EmbeddingTable


def _naive_sim(q: np.ndarray, c: np.ndarray, strategy: str, frame: int = 0) -> np.ndarray:
    """sim[i, j] by explicit loops over frames (and frame pairs) in float64."""
    q = q.astype(np.float64)
    c = c.astype(np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    c = c / np.linalg.norm(c, axis=-1, keepdims=True)
    n, t, _ = q.shape
    sim = np.zeros((n, c.shape[0]))
    for i in range(n):
        for j in range(c.shape[0]):
            if strategy == "diagonal_mean":
                sim[i, j] = np.mean([q[i, s] @ c[j, s] for s in range(t)])
            elif strategy == "single":
                sim[i, j] = q[i, frame] @ c[j, frame]
            else:
                sim[i, j] = np.mean([q[i, s] @ c[j, u] for s in range(t) for u in range(t)])
    return sim


def _naive_ranks(sim: np.ndarray, ties: str) -> np.ndarray:
    """Sort each row (descending) and find the position of the diagonal value: first (optimistic) or last
    (pessimistic) occurrence among equal values."""
    ranks = []
    for i, row in enumerate(sim):
        srt = np.sort(row)[::-1]
        pos = np.nonzero(srt == row[i])[0]
        ranks.append((pos[0] if ties == "optimistic" else pos[-1]) + 1)
    return np.array(ranks)


def _naive_recall(ranks: np.ndarray, k: int) -> float:
    return 100.0 * sum(1 for r in ranks if r <= k) / len(ranks)


@pytest.mark.parametrize("strategy", ["diagonal_mean", "single", "all_pairs"])
def test_ranks_match_naive_reference(strategy: str) -> None:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((40, 4, 8)).astype(np.float32)
    v = (a + 1.5 * rng.standard_normal(a.shape)).astype(np.float32)
    for ties in ("optimistic", "pessimistic"):
        got_a2v = retrieval_ranks(a, v, strategy, frame=2, ties=ties, chunk_size=7)
        got_v2a = retrieval_ranks(v, a, strategy, frame=2, ties=ties, chunk_size=7)
        sim = _naive_sim(a, v, strategy, frame=2)
        np.testing.assert_array_equal(got_a2v, _naive_ranks(sim, ties))
        np.testing.assert_array_equal(got_v2a, _naive_ranks(sim.T, ties))
        both = retrieval_ranks_both(a, v, strategy, frame=2, ties=ties, chunk_size=6)
        np.testing.assert_array_equal(both["a2v"], got_a2v)
        np.testing.assert_array_equal(both["v2a"], got_v2a)
    for k in (1, 5, 10):
        assert recall_at_k(got_a2v, [k])[k] == pytest.approx(_naive_recall(got_a2v, k))
    assert median_rank(got_a2v) == pytest.approx(float(np.median(_naive_ranks(sim, "pessimistic"))))
    assert 1 <= got_a2v.min() and got_a2v.max() <= 40


def test_exact_ties_from_duplicate_embeddings() -> None:
    rng = np.random.default_rng(1)
    a = rng.standard_normal((30, 16, 12)).astype(np.float16)
    v = rng.standard_normal((30, 16, 12)).astype(np.float16)
    # clips 3, 11, 20 share one video embedding, and 5 == 6 in both modalities: exact ties in the similarity
    v[11] = v[3]
    v[20] = v[3]
    a[6], v[6] = a[5], v[5]
    for ties in ("optimistic", "pessimistic"):
        got = retrieval_ranks(a, v, ties=ties, chunk_size=4)
        sim = _naive_sim(a, v, "diagonal_mean")
        np.testing.assert_array_equal(got, _naive_ranks(sim, ties))
        both = retrieval_ranks_both(a, v, ties=ties, chunk_size=7)
        np.testing.assert_array_equal(both["a2v"], got)
        np.testing.assert_array_equal(both["v2a"], _naive_ranks(sim.T, ties))
    opt = retrieval_ranks(a, v, ties="optimistic")
    pes = retrieval_ranks(a, v, ties="pessimistic")
    # a query whose true video has two exact copies elsewhere is pushed down by exactly 2
    assert pes[3] - opt[3] == 2 and pes[11] - opt[11] == 2 and pes[5] - opt[5] == 1
    assert np.all(pes[[0, 1, 2, 4]] == opt[[0, 1, 2, 4]])


def test_collapsed_embeddings_are_not_rewarded() -> None:
    a = np.ones((20, 16, 8), np.float32)
    ranks = retrieval_ranks(a, a.copy(), ties="pessimistic")
    assert np.all(ranks == 20)
    assert np.all(retrieval_ranks(a, a.copy(), ties="optimistic") == 1)


def test_chunked_equals_unchunked() -> None:
    rng = np.random.default_rng(2)
    a = rng.standard_normal((257, 16, 32)).astype(np.float16)
    v = (a + rng.standard_normal(a.shape)).astype(np.float16)
    v[100] = v[7]
    full = retrieval_ranks_both(a, v, chunk_size=10_000)
    for chunk in (1, 13, 64, 256):
        got = retrieval_ranks_both(a, v, chunk_size=chunk)
        np.testing.assert_array_equal(got["a2v"], full["a2v"])
        np.testing.assert_array_equal(got["v2a"], full["v2a"])
    np.testing.assert_array_equal(retrieval_ranks(v, a, chunk_size=13), full["v2a"])


def test_tie_tolerance() -> None:
    a = np.zeros((3, 1, 2), np.float32)
    a[:, 0, 0] = 1.0
    v = a.copy()
    v[1, 0] = [np.cos(1e-3), np.sin(1e-3)]  # sim(a_0, v_1) = 1 - 5e-7: within the default tolerance of sim = 1
    v[2, 0] = [np.cos(0.1), np.sin(0.1)]
    assert retrieval_ranks(a, v, ties="pessimistic")[0] == 2
    assert retrieval_ranks(a, v, ties="pessimistic", tie_tol=0.0)[0] == 1
    assert retrieval_ranks(a, v, ties="optimistic")[0] == 1


def test_similarity_matrix_and_recall_curve() -> None:
    rng = np.random.default_rng(3)
    a = rng.standard_normal((12, 16, 8)).astype(np.float32)
    v = rng.standard_normal((12, 16, 8)).astype(np.float32)
    sim = similarity_matrix(a, v)
    np.testing.assert_allclose(sim, _naive_sim(a, v, "diagonal_mean"), atol=1e-5)
    ranks = np.array([1, 3, 3, 12])
    curve = recall_curve(ranks, max_k=12)
    assert curve.shape == (12,)
    np.testing.assert_allclose(curve[[0, 1, 2, 10, 11]], [25, 25, 75, 75, 100])


def _table(n: int = 10) -> EmbeddingTable:
    rng = np.random.default_rng(4)
    ids = [f"vggsound:yt{i:03d}:{(i * 10) * 1000}" for i in range(n)]
    a = rng.standard_normal((n, 16, 8)).astype(np.float16)
    return EmbeddingTable(ids, a, a + np.float16(0.1), labels=[[f"vgg_{i % 3}"] for i in range(n)])


def test_video_ids_follow_cavmae_format() -> None:
    t = _table(3)
    assert t.video_ids == ["yt000_000000", "yt001_000010", "yt002_000020"]


def test_list_with_missing_clips_reports_them(tmp_path) -> None:
    t = _table()
    listed = {
        "data": [
            {"video_id": "yt002_000020"},
            {"video_id": "nope_000001"},
            {"video_id": "yt005_000050"},
            {"video_id": "gone_000002"},
            {"video_id": "yt002_000020"},
        ]
    }
    path = tmp_path / "list.json"
    path.write_text(json.dumps(listed))
    assert load_id_list(path)[1] == "nope_000001"
    with pytest.warns(MissingClipsWarning, match="2 of 5"):
        res = run_retrieval(t, path)
    d = res.to_dict()
    assert d["missing"] == ["nope_000001", "gone_000002"] and d["n_missing"] == 2
    assert d["duplicates"] == ["yt002_000020"] and d["n_used"] == 2 and d["n_list"] == 5
    assert res.clip_ids == ["vggsound:yt002:20000", "vggsound:yt005:50000"]
    assert set(d["metrics"]) == {"v2a", "a2v"}


def test_plain_text_list_of_clip_ids(tmp_path) -> None:
    t = _table()
    path = tmp_path / "ids.txt"
    path.write_text("# comment\nvggsound:yt001:10000\n\nyt003_000030\nvggsound:yt009:90000\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = resolve_ids(load_id_list(path), t.clip_ids, t.video_ids)
    assert m.indices.tolist() == [1, 3, 9] and m.missing == []
    res = run_retrieval(t, path)
    assert res.metrics["a2v"]["R@1"] == pytest.approx(100.0)


def test_empty_match_is_an_error(tmp_path) -> None:
    path = tmp_path / "ids.txt"
    path.write_text("a\nb\n")
    with pytest.warns(MissingClipsWarning), pytest.raises(ValueError, match="none of the 2"):
        run_retrieval(_table(), path)


def test_bad_strategy_is_an_error() -> None:
    a = np.zeros((3, 16, 4), np.float32)
    with pytest.raises(ValueError, match="unknown strategy"):
        retrieval_ranks(a, a, strategy="max")


def test_vggsound_retrieval_list_maps_to_store_clip_ids(shared_dir) -> None:
    from tgdp.pipeline.layout import clip_id_for

    path = shared_dir / "data" / "vggsound" / "vgg_test_5_per_class_for_retrieval_cleaned.json"
    if not path.is_file():
        pytest.skip("VGGSound retrieval list not in shared/")
    ids = load_id_list(path)
    assert len(ids) == 1545 and len(set(ids)) == 1545
    clip_ids = [clip_id_for("vggsound", vid[:-7], float(int(vid[-6:]))) for vid in ids[:200]]
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((200, 16, 4)).astype(np.float16)
    table = EmbeddingTable(clip_ids, emb, emb)
    with pytest.warns(MissingClipsWarning, match="1345 of 1545"):
        m = resolve_ids(ids, table.clip_ids, table.video_ids)
    assert m.indices.tolist() == list(range(200))


def test_row_slices_compose_to_the_full_ranking() -> None:
    rng = np.random.default_rng(5)
    a = rng.standard_normal((50, 16, 8)).astype(np.float32)
    v = (a + rng.standard_normal(a.shape)).astype(np.float32)
    full = retrieval_ranks(a, v, chunk_size=8)
    parts = [retrieval_ranks(a, v, chunk_size=8, rows=slice(s, s + 17)) for s in range(0, 50, 17)]
    np.testing.assert_array_equal(np.concatenate(parts), full)
