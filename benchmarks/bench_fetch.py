"""fetch throughput (clips/s) through real yt-dlp against the local media server, no rate limit.

~20 clips of 4 s (64x64, H.264/AAC) each fetched as a padded section with ffmpeg Range reads. Figures: the serial
in-process backend, and Ray with 1 and 2 sessions (actors, `in_flight=2`); Ray is started once beforehand, so the
figures include actor start-up (yt-dlp import per actor) but not Ray's own start. On the real site throughput is
bounded by the per-session rate limit (~300 clips/h), not by this.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.harness import Figure, repeat, write_section
from tgdp.pipeline.fetch import FetchConfig, fetch
from tgdp.pipeline.layout import manifest_path
from tgdp.pipeline.parallel import ray_session
from tgdp.pipeline.serve import MediaServer

__all__ = ["main"]

N_CLIPS = 20


def _corpus(work: Path) -> list[str]:
    ytids = [f"bench{i:03d}" for i in range(N_CLIPS)]
    master = work / "master.mp4"
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
         "testsrc2=size=64x64:rate=8:duration=4", "-f", "lavfi", "-i",
         "sine=frequency=440:sample_rate=16000:duration=4",
         "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(master)],
        check=True,
    )  # fmt: skip
    (work / "corpus" / "videos").mkdir(parents=True)
    for y in ytids:
        shutil.copyfile(master, work / "corpus" / "videos" / f"{y}.mp4")
    return ytids


def _root(work: Path, ytids: list[str]) -> Path:
    root = Path(tempfile.mkdtemp(dir=work, prefix="root-"))
    n = len(ytids)
    manifest_path(root).parent.mkdir(parents=True)
    table = pa.table(
        {
            "clip_id": [f"synth:{y}:1000" for y in ytids],
            "video_id": ytids,
            "dataset": ["synth"] * n,
            "split": ["synth"] * n,
            "ytid": ytids,
            "start_s": [1.0] * n,
            "end_s": [3.0] * n,
            "labels": [["/m/0"]] * n,
            "leak_eval_overlap": [False] * n,
            "source_file": ["bench"] * n,
            "source_line": pa.array(range(n), pa.int32()),
        }
    )
    pq.write_table(table, manifest_path(root))
    return root


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-fetch-") as tmp:
        work = Path(tmp)
        ytids = _corpus(work)
        with MediaServer(work / "corpus") as base:

            def run(**kw: object) -> float:
                root = _root(work, ytids)
                cfg = FetchConfig(url_template=base + "/v/{ytid}", rate_per_hour=0, retries=0, **kw)
                t0 = time.perf_counter()
                summary = fetch(root, cfg)
                dt = time.perf_counter() - t0
                assert summary.ok == len(ytids), summary.as_dict()
                return len(ytids) / dt

            figures = [
                Figure("fetch, serial backend, 1 session", repeat(lambda: run(backend="serial"), n=2), "clips/s")
            ]
            with ray_session(num_cpus=2):
                for sessions in (1, 2):
                    figures.append(
                        Figure(
                            f"fetch, Ray, {sessions} session(s) x 2 in flight",
                            repeat(lambda s=sessions: run(backend="ray", sessions=s, in_flight=2), n=2),
                            "clips/s",
                            target="bounded by ~300 clips/h/session on YouTube (docs/FETCH.md)",
                        )
                    )
    write_section(
        "fetch",
        figures,
        notes=f"{N_CLIPS} clips of 4 s, 64x64 H.264+AAC, section [start-2, end+2] via yt-dlp + ffmpeg Range reads from "
        "the local server (`tgdp.pipeline.serve`), no rate limit, 2 shared cores. Ray figures include actor start-up.",
    )


if __name__ == "__main__":
    main()
