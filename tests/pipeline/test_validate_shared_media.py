"""Optional: the validator over a sample of the real files in ../shared/media (skipped when absent)."""

from __future__ import annotations

import csv

import pytest

from tgdp.pipeline.features import FeatureParams
from tgdp.pipeline.validate import ValidateConfig, ValidateTask, validate_clip

pytestmark = pytest.mark.shared

# A short, varied sample per folder (H.264/MPEG-4/VP8/VP9, FLV, WebM, MOV PCM, non-monotonic DTS, LFS pointer).
SAMPLE = {
    "av/deepavsr_lrs2__00001.mp4",
    "av/moviepy__fire2.mp4",
    "av/androidx__sowt-with-video.mov",
    "av/mdn__stream-of-water.webm",
    "av/androidx__sample.flv",  # pts ~1 ms apart: the rawvideo output once failed it as corrupt_decode
    "silent_audio/liveportrait__d18.mp4",
    "silent_audio/mdn__stream-of-water-audioless.webm",
    "no_audio/androidx__bear-vp9.webm",
    "no_audio/liveportrait__d0.mp4",
    "broken/androidx__invalid-bitstream.webm",
    "broken/androidx__sample_missing_stsd.mp4",
    "broken/liveportrait__d1_lfs_pointer.mp4",
    "broken/opencvdoc__box.mp4",
}


def test_shared_media_sample_lands_in_the_documented_buckets(shared_dir):
    media = shared_dir / "media"
    if not (media / "MANIFEST.tsv").is_file():
        pytest.skip("shared/media is not present")
    with open(media / "MANIFEST.tsv", encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh, delimiter="\t") if r["file"] in SAMPLE]
    cfg = ValidateConfig()
    for row in rows:
        try:
            duration = float(row["duration_s"])
        except ValueError:
            duration = 10.0
        # Whole videos imported as clips: window [0, min(duration, 10)).
        task = ValidateTask(
            clip_id=row["file"],
            path=str(media / row["file"]),
            start_s=0.0,
            end_s=min(duration, 10.0),
            section_start_s=0.0,
            source="import",
        )
        ev = validate_clip(task, cfg, FeatureParams())
        kind = row["category"]
        if kind == "av":
            assert ev["valid"], (row["file"], ev["reason"], ev["reason_detail"])
        elif kind == "silent_audio":
            assert ev["valid"] and ev["is_silent"], (row["file"], ev["reason"], ev["silent_frac"])
        elif kind == "no_audio":
            assert ev["reason"] == "no_audio_stream", (row["file"], ev["reason"])
        else:
            assert ev["reason"] in ("corrupt_decode", "unreadable") and ev["reason_detail"], (row["file"], ev)
