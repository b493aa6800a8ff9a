"""fetch throughput (clips/s) through real yt-dlp against the local media server, no rate limit.

~20 clips of 4 s (64x64, H.264/AAC) each fetched as a padded section with ffmpeg Range reads. Figures: the serial
in-process backend, and Ray with 1 and 2 sessions (actors, `in_flight=2`); Ray is started once beforehand, so the
figures include actor start-up (yt-dlp import per actor) but not Ray's own start. On the real site throughput is
bounded by the per-session rate limit (~300 clips/h), not by this.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from benchmarks.harness import Figure, bench_args, repeat, write_section
from tests.fixtures import make_clip, make_corpus, make_root
from tgdp.pipeline.fetch import FetchConfig, fetch
from tgdp.pipeline.parallel import ray_session
from tgdp.pipeline.serve import MediaServer

__all__ = ["main"]

N_CLIPS = 20


def _corpus(work: Path, n: int) -> list[str]:
    ytids = [f"bench{i:03d}" for i in range(n)]
    master = make_clip(work / "master.mp4", duration=4)
    make_corpus(work / "corpus", master, ytids)
    return ytids


def _root(work: Path, ytids: list[str]) -> Path:
    root = Path(tempfile.mkdtemp(dir=work, prefix="root-"))
    return make_root(root, [{"ytid": y, "start_s": 1.0} for y in ytids], dataset="synth", split="synth")


def main(argv: list[str] | None = None) -> None:
    args = bench_args(argv, __doc__)
    n_clips, reps, session_counts = (3, 1, (1,)) if args.tiny else (N_CLIPS, 2, (1, 2))
    with tempfile.TemporaryDirectory(prefix="bench-fetch-") as tmp:
        work = Path(tmp)
        ytids = _corpus(work, n_clips)
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
                Figure("fetch, serial backend, 1 session", repeat(lambda: run(backend="serial"), n=reps), "clips/s")
            ]
            with ray_session(num_cpus=2):
                for sessions in session_counts:
                    figures.append(
                        Figure(
                            f"fetch, Ray, {sessions} session(s) x 2 in flight",
                            repeat(lambda s=sessions: run(backend="ray", sessions=s, in_flight=2), n=reps),
                            "clips/s",
                            target="bounded by ~300 clips/h/session on YouTube (docs/FETCH.md)",
                        )
                    )
    write_section(
        "fetch",
        figures,
        notes=f"{n_clips} clips of 4 s, 64x64 H.264+AAC, section [start-2, end+2] via yt-dlp + ffmpeg Range reads from "
        "the local server (`tgdp.pipeline.serve`), no rate limit, 2 shared cores. Ray figures include actor start-up.",
    )


if __name__ == "__main__":
    main(sys.argv[1:])
