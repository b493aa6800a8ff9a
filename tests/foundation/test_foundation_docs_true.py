"""The docs say what was measured and what exists: figures quoted in two places agree, the paper's runtime table is
quoted as the paper's, and the benchmark notes describe the presets as they are."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", REPO / "BENCHMARKS.md", REPO / "REPRODUCTION.md", *sorted((REPO / "docs").glob("*.md"))]


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


@pytest.mark.parametrize("needle", ["[AI-SUMMARY]", "AI summary", "unverified summary", "from a summary"])
def test_no_stray_tags_and_the_paper_is_quoted_as_the_paper(needle: str) -> None:
    files = [*DOCS, *sorted((REPO / "benchmarks").glob("*.py"))]
    found = [p.name for p in files if needle.lower() in _text(p).lower()]
    assert not found, (needle, found)


def test_the_real_media_sample_has_one_size_everywhere() -> None:
    pattern = re.compile(r"\b(\d+) (?:real-world clips|files of the shared media sample|real media files)")
    counts = {int(n) for p in DOCS for n in pattern.findall(_text(p))}
    assert len(counts) == 1, counts


def test_store_size_per_clip_is_one_figure() -> None:
    readme = re.findall(r"about (\d\.\d+) MB per clip in the store", _text(REPO / "README.md"))
    store = re.findall(r"~(\d\.\d+) MB per 10 s clip", _text(REPO / "docs" / "STORE.md"))
    assert readme and store and set(readme) == set(store), (readme, store)


def _bench_median(figure: str) -> float:
    for line in _text(REPO / "BENCHMARKS.md").splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells and cells[0] == figure:
            return float(cells[2])
    raise AssertionError(f"{figure!r} not in BENCHMARKS.md")


def test_readme_scale_row_quotes_benchmarks() -> None:
    row = next(ln for ln in _text(REPO / "README.md").splitlines() if ln.startswith("| `manifest` / `status`"))
    for figure in (
        "manifest AudioSet (2.08 M rows): wall",
        "status (fetch+validate events): wall",
        "export (fetch+validate events): wall",
        "status (+ shard events): wall",
        "export (+ shard events): wall",
    ):
        assert f"{_bench_median(figure):.1f} s" in row, (figure, row)


def test_model_benchmark_notes_describe_the_preset() -> None:
    from benchmarks.bench_model import model_notes
    from tgdp.model.presets import PRESETS

    tg = PRESETS["tgdp_base"]
    notes = " ".join(model_notes().split())
    assert f"λ_dis {tg.lambda_dis:g}," in notes
    assert ("symmetric InfoNCE" in notes) == tg.contrastive_symmetric
    assert f"contrastive ratio {tg.contrastive_mask_ratio:g}," in notes
