"""The project is self-contained: no file cites the data or model reference notes that live outside the repository
(by name, or by their bare section-sign numbers); the facts are in docs/ and the citations point there."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# Built from pieces so this file does not match itself.
CITATION = re.compile("|".join([r"data" + r"[-_ ]spec", r"model" + r"[-_ ]spec"]), re.I)
# A bare section-sign number is one of those notes' sections, unless the line says it is the TG-DP paper's.
SECTION = re.compile("\u00a7" + r"\s*[A-Z]?\d")
PAPER = re.compile(r"paper", re.I)


def _tracked_text_files() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True, text=True)
        names = out.stdout.split() if out.returncode == 0 else []
    except OSError:
        names = []
    if not names:  # an unpacked sdist: no git
        names = [str(p.relative_to(REPO)) for p in REPO.rglob("*") if p.is_file() and ".venv" not in p.parts]
    keep = {".py", ".md", ".yaml", ".yml", ".toml", ".txt", ".sh", ".sbatch", ".cfg", ".json", ""}
    return [REPO / n for n in names if Path(n).suffix in keep and (REPO / n).is_file()]


def test_no_citation_of_documents_outside_the_repository() -> None:
    hits = []
    for path in _tracked_text_files():
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        for n, line in enumerate(text.splitlines(), 1):
            if CITATION.search(line) or (SECTION.search(line) and not PAPER.search(line)):
                hits.append(f"{path.relative_to(REPO)}:{n}: {line.strip()[:100]}")
    assert hits == [], "cite docs/ instead:\n" + "\n".join(hits)
