"""Synthetic audio-visual corpus with ground truth: real media files encoded by ffmpeg, in AudioSet's CSV format.

Each of K classes couples a visual object (shape, colour, motion) with a sound (timbre, pitch pattern); every
sound onset starts the object's motion, so audio and video agree in content and in time. The semantic noise TG-DP
is about is added per clip and grows with `difficulty` ∈ [0, 1]: a silent stretch (no events, digital silence),
off-screen distractor sounds of other classes with no visible cause, and a cluttered scrolling background in which
the object covers a small part of the frame. Knob values are recorded per clip in the ground truth.

`profile="coupled"` (the reproduction benchmark, tgdp.experiments.reproduce) adds what instance-level retrieval and
teacher-guided token selection need. Colour and pitch stop naming the class: each clip draws a latent u ∈ [0, 1)
that sets both the object's hue (0.85·u of the hue circle) and the note pitch (220·2^(2u) Hz, two octaves), and a
note rate (0.45–1.4 s between onsets; every onset moves the object). The class is the shape + motion on screen and
the timbre + pitch pattern in the sound. Off-screen notes get random pitches; a silent on-screen decoy object
(another shape, random hue, its own motion times) appears in a `difficulty` share of clips; half the backgrounds
are static. Knob values (latent, rate, decoy, static background) are recorded in the ground truth.

Clips mimic YouTube videos: 12-16 s long, the labelled 10-s segment starting 1-4 s in (so a fetch that pads
[start-2, end+2] has real media around it), MP4 (H.264/AAC) or WebM (VP9/Opus), 12-30 fps, small frames.

Fault cases (ground truth `fault` → `expected_reason`): no_audio → no_audio_stream, no_video → no_video_stream,
truncated (faststart MP4 / WebM cut at ~half its bytes: probes, then decoding fails) → corrupt_decode,
garbage (random bytes) and empty (0 bytes) → unreadable, short (file ends inside the segment) → too_short;
silent (all-zero audio) and still (one repeated frame) are valid clips with `expect_silent` / `expect_still`.

Output (OUT/):
  videos/<ytid>.<mp4|webm>   the media
  synth_train_segments.csv          AudioSet-format segment list (3 `#` header lines), split as_bal_train
  synth_eval_segments.csv           same, split as_eval
  synth_class_labels_indices.csv    index,mid,display_name
(`SEGMENT_FILES`, `LABELS_FILE`: not the official AudioSet names, so `manifest` does not compare them with the
official files' hashes and row counts and warn about a "modified copy").
  ground_truth.csv           one row per clip (`GROUND_TRUTH_COLUMNS`)

Determinism: everything in the ground truth comes from `numpy.random.default_rng(seed)` and is written with fixed
formatting, so the same config gives the same bytes; media are encoded with bitexact flags and one thread.
"""

from __future__ import annotations

import colorsys
import csv
import functools
import io
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from tgdp.config import StrictConfig
from tgdp.core.atomic import atomic_path, atomic_write
from tgdp.pipeline.layout import clip_id_for
from tgdp.pipeline.manifest import format_audioset_csv
from tgdp.pipeline.parallel import map_threads

__all__ = [
    "EXPECTED_REASON",
    "FAULTS",
    "LABEL_BACKGROUND",
    "LABEL_DECOY",
    "LABEL_DISTRACTOR",
    "LABEL_NOTE",
    "LABEL_OBJECT",
    "LABEL_QUIET",
    "GROUND_TRUTH_COLUMNS",
    "LABELS_FILE",
    "SEGMENT_FILES",
    "ClassSpec",
    "ClipPlan",
    "SynthConfig",
    "SynthResult",
    "class_specs",
    "generate",
    "plan_corpus",
    "read_ground_truth",
    "render_audio",
    "render_frames",
    "render_labels",
    "sound_labels",
]

SEGMENT_FILES = {"as_bal_train": "synth_train_segments.csv", "as_eval": "synth_eval_segments.csv"}
LABELS_FILE = "synth_class_labels_indices.csv"
FAULTS = ("no_audio", "no_video", "truncated", "garbage", "empty", "short", "silent", "still")
EXPECTED_REASON = {
    "none": "none",
    "no_audio": "no_audio_stream",
    "no_video": "no_video_stream",
    "truncated": "corrupt_decode",
    "garbage": "unreadable",
    "empty": "unreadable",
    "short": "too_short",
    "silent": "none",
    "still": "none",
}
GROUND_TRUTH_COLUMNS = (
    "ytid",
    "clip_id",
    "split",
    "class_index",
    "label_mid",
    "class_name",
    "fault",
    "expected_reason",
    "expect_silent",
    "expect_still",
    "file",
    "container",
    "vcodec",
    "acodec",
    "width",
    "height",
    "fps",
    "sample_rate",
    "duration_s",
    "start_s",
    "end_s",
    "difficulty",
    "silence_start_s",
    "silence_end_s",
    "n_distractors",
    "clutter",
    "object_scale",
    "onsets_s",
    "profile",
    "latent",
    "note_gap_s",
    "decoy",
    "static_background",
)

SHAPES = ("circle", "square", "triangle", "diamond", "ring", "cross")
MOTIONS = ("jump", "shake", "slide", "pulse")
TIMBRES = ("sine", "square", "saw", "bell", "buzz")
PATTERNS = ("steady", "rise", "fall", "alternate", "trill")
_HUE_NAMES = ("red", "orange", "yellow", "green", "cyan", "blue", "purple", "magenta")
_YTID_ALPHABET = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"))
_EVENT_S = 0.35  # motion and note length
_SPLITS = {"train": "as_bal_train", "eval": "as_eval"}
_HUE_SPAN = 0.85  # the latent's hue range: below 1 so that u = 0 and u → 1 are not the same red
# `render_labels` / `sound_labels` values (the per-pixel and per-instant ground truth of tgdp.pipeline.truth)
LABEL_BACKGROUND, LABEL_OBJECT, LABEL_DECOY = 0, 1, 2
LABEL_QUIET, LABEL_NOTE, LABEL_DISTRACTOR = 0, 1, 2


class SynthConfig(StrictConfig):
    """Synthetic corpus; `difficulty` scales silent stretches, distractors, clutter and how small the object is."""

    num_clips: int = Field(200, ge=1, le=100_000, description="clips in the corpus")
    num_classes: int = Field(8, ge=2, le=64, description="sound/object classes")
    seed: int = Field(
        0, ge=0, description="random seed of the corpus (same seed, same files)"
    )  # numpy's default_rng refuses negative seeds
    eval_fraction: float = Field(0.2, ge=0.0, lt=1.0, description="fraction of clips in the eval split")
    fault_fraction: float = Field(
        0.15,
        ge=0.0,
        le=1.0,
        description="fraction of clips made faulty (no audio, corrupt, truncated, ...) for the validator to catch",
    )
    difficulty: float = Field(
        0.3, ge=0.0, le=1.0, description="0-1: silent stretches, distractors, clutter and how small the object is"
    )
    profile: Literal["default", "coupled"] = Field(
        "default",
        description="default = class-level audio-visual link; coupled = per-clip coupling (the study's signal)",
    )
    sizes: list[tuple[int, int]] = Field(
        [(160, 120), (128, 96), (192, 144)], description="frame sizes (width, height) drawn per clip"
    )
    fps: list[int] = Field([12, 15, 24, 25, 30], description="frame rates drawn per clip")
    sample_rates: list[int] = Field([16000, 22050], description="audio sample rates drawn per clip")
    webm_fraction: float = Field(
        0.3, ge=0.0, le=1.0, description="fraction of clips written as WebM (VP9/Opus) instead of MP4"
    )
    segment_s: float = Field(10.0, gt=0.0, description="labelled segment length in seconds")
    start_s: tuple[int, int] = Field(
        (1, 4), description="(lo, hi) range of the segment start in whole seconds"
    )  # whole seconds, like AudioSet's `.000` starts
    tail_s: tuple[float, float] = Field((1.0, 2.0), description="(lo, hi) seconds of video after the segment end")
    workers: int = Field(2, ge=1, le=64, description="parallel ffmpeg encoders")
    ffmpeg: str = Field("ffmpeg", description="ffmpeg executable")

    @model_validator(mode="after")
    def _check(self) -> SynthConfig:
        if any(w < 32 or h < 32 or w % 2 or h % 2 for w, h in self.sizes) or not self.sizes:
            raise ValueError("sizes must be even, at least 32x32, and not empty")
        if not self.fps or any(f < 1 or f > 60 for f in self.fps):
            raise ValueError("fps must be 1..60")
        if self.start_s[0] < 0 or self.start_s[1] < self.start_s[0]:
            raise ValueError("start_s must be (lo, hi) with 0 <= lo <= hi")
        return self


@dataclass(frozen=True)
class ClassSpec:
    index: int
    mid: str
    name: str
    shape: str
    motion: str
    rgb: tuple[int, int, int]
    timbre: str
    pattern: str
    base_hz: float


@dataclass(frozen=True)
class ClipPlan:
    """Everything needed to render one clip; times are in video seconds (0 = file start)."""

    ytid: str
    split: str
    cls: ClassSpec
    fault: str
    container: str
    width: int
    height: int
    fps: int
    sample_rate: int
    duration_s: float
    start_s: float
    end_s: float
    difficulty: float
    silence: tuple[float, float]
    onsets: tuple[float, ...]
    distractors: tuple[tuple[float, int, float], ...]  # (onset, class index, gain)
    clutter: float
    object_scale: float
    seed: int
    # profile "coupled" (None / defaults for "default"): the instance latent and what it sets
    latent: float | None = None
    note_gap_s: tuple[float, float] | None = None
    decoy: tuple[str, tuple[int, int, int], tuple[float, ...]] | None = None  # (shape, rgb, motion times)
    static_background: bool = False

    @property
    def rgb(self) -> tuple[int, int, int]:
        """The object's colour: the class colour, or the latent's hue (coupled)."""
        if self.latent is None:
            return self.cls.rgb
        return _hue_rgb(_HUE_SPAN * self.latent)

    @property
    def pitch_hz(self) -> float:
        """The note's base pitch: the class pitch, or the latent's (coupled)."""
        return self.cls.base_hz if self.latent is None else latent_pitch(self.latent)

    @property
    def file(self) -> str:
        return f"videos/{self.ytid}.{self.container}"

    @property
    def clip_id(self) -> str:
        return clip_id_for("audioset", self.ytid, self.start_s)


@dataclass
class SynthResult:
    out: Path
    ground_truth: Path
    num_clips: int
    split_counts: dict[str, int]
    fault_counts: dict[str, int]
    elapsed_s: float


def latent_pitch(u: float) -> float:
    """Pitch (Hz) of latent u ∈ [0, 1): 220·2^(2u), two octaves, the same span as the default class pitches."""
    return 220.0 * 2.0 ** (2.0 * u)


def _hue_rgb(hue: float) -> tuple[int, int, int]:
    """The objects' colour of a hue ∈ [0, 1): saturation 0.9, value 0.95, as 0–255 integers."""
    return tuple(int(round(255 * v)) for v in colorsys.hsv_to_rgb(hue, 0.9, 0.95))


def class_specs(num_classes: int, profile: str = "default") -> list[ClassSpec]:
    """K classes with distinct colour (hue) and base pitch; shape/motion/timbre/pattern cycle with the index."""
    out = []
    for c in range(num_classes):
        hue = c / num_classes
        rgb = _hue_rgb(hue)
        shape, motion = SHAPES[c % len(SHAPES)], MOTIONS[c % len(MOTIONS)]
        timbre, pattern = TIMBRES[c % len(TIMBRES)], PATTERNS[(c // 2) % len(PATTERNS)]
        if profile == "coupled":
            # pitched timbres only (buzz is AM noise: its spectrum carries no pitch, so no latent); (timbre,
            # pattern) is unique for up to 20 classes, so the sound alone names the class
            timbre, pattern = TIMBRES[c % 4], PATTERNS[(c // 4) % len(PATTERNS)]
        base_hz = 220.0 * 2.0 ** (2.0 * c / num_classes)  # two octaves, one pitch per class
        colour = _HUE_NAMES[int(hue * len(_HUE_NAMES)) % len(_HUE_NAMES)]
        name = f"{colour} {shape} {motion}, {timbre} {pattern} {int(base_hz)} Hz"
        out.append(ClassSpec(c, f"/x/synth{c:02d}", name, shape, motion, rgb, timbre, pattern, base_hz))
    return out


# ------------------------------------------------------------------------------------------------------ planning


def _ytids(rng: np.random.Generator, n: int) -> list[str]:
    seen: set[str] = set()
    out: list[str] = []
    while len(out) < n:
        chars = _YTID_ALPHABET[rng.integers(0, len(_YTID_ALPHABET), 11)]
        if len(out) % 5 == 0:
            chars[0] = "-"  # AudioSet has many such ids; they must never be read as options
        ytid = "".join(chars)
        if ytid not in seen:
            seen.add(ytid)
            out.append(ytid)
    return out


def _event_times(
    rng: np.random.Generator, duration: float, silence: tuple[float, float], gap: tuple[float, float] = (0.6, 1.6)
) -> list[float]:
    times, t = [], float(rng.uniform(0.2, 0.8))
    while t < duration - _EVENT_S:
        if not (silence[0] - _EVENT_S < t < silence[1]):
            times.append(round(t, 3))
        t += float(rng.uniform(*gap))
    return times


def plan_corpus(cfg: SynthConfig) -> tuple[list[ClassSpec], list[ClipPlan]]:
    """Draw every clip's parameters from one seeded generator (the ground truth depends on nothing else).

    The draws are made in a fixed order (clip assignment, then clip by clip): changing that order changes the corpus.
    """
    rng = np.random.default_rng(cfg.seed)
    classes = class_specs(cfg.num_classes, cfg.profile)
    # the coupled profile's extra draws come from their own stream, so the default profile's plans stay bit-identical
    rng_c = np.random.default_rng([cfg.seed, 1]) if cfg.profile == "coupled" else None
    ytids, class_of, eval_idx, fault_of = _assign_clips(rng, cfg)
    plans = [
        _plan_clip(
            rng,
            rng_c,
            cfg,
            ytid=ytids[i],
            cls=classes[int(class_of[i])],
            split=_SPLITS["eval" if i in eval_idx else "train"],
            fault=fault_of.get(i, "none"),
        )
        for i in range(cfg.num_clips)
    ]
    return classes, plans


def _assign_clips(rng: np.random.Generator, cfg: SynthConfig) -> tuple[list[str], np.ndarray, set[int], dict[int, str]]:
    """Per clip index: its ytid, its class (balanced over the classes, shuffled), whether it is eval, its fault.

    Every fault kind gets at least one clip when `fault_fraction` > 0.
    """
    n = cfg.num_clips
    ytids = _ytids(rng, n)
    class_of = rng.permutation(np.arange(n) % cfg.num_classes)
    n_eval = int(round(cfg.eval_fraction * n))
    eval_idx = set(rng.choice(n, size=n_eval, replace=False).tolist()) if n_eval else set()
    n_faults = 0
    if cfg.fault_fraction > 0:
        n_faults = min(n, max(int(round(cfg.fault_fraction * n)), len(FAULTS)))
    fault_idx = rng.choice(n, size=n_faults, replace=False).tolist()
    fault_of = {i: FAULTS[k % len(FAULTS)] for k, i in enumerate(fault_idx)}
    return ytids, class_of, eval_idx, fault_of


def _plan_clip(
    rng: np.random.Generator,
    rng_c: np.random.Generator | None,
    cfg: SynthConfig,
    *,
    ytid: str,
    cls: ClassSpec,
    split: str,
    fault: str,
) -> ClipPlan:
    """One clip's parameters: its file format, timing, silent stretch, events and distractors, clutter, object
    scale and render seed from `rng`; the coupled profile's latent, note gap, decoy and background from `rng_c`."""
    d = cfg.difficulty
    width, height = cfg.sizes[int(rng.integers(len(cfg.sizes)))]
    fps = cfg.fps[int(rng.integers(len(cfg.fps)))]
    container = "webm" if rng.random() < cfg.webm_fraction else "mp4"
    sr = 48000 if container == "webm" else cfg.sample_rates[int(rng.integers(len(cfg.sample_rates)))]
    start = float(rng.integers(cfg.start_s[0], cfg.start_s[1] + 1))
    end = start + cfg.segment_s
    duration = round(end + float(rng.uniform(*cfg.tail_s)), 2)
    if fault == "short":
        duration = round(start + float(rng.uniform(0.3, 0.6)) * cfg.segment_s, 2)
    silence_len = float(rng.uniform(0.0, 0.6 * d)) * cfg.segment_s
    s0 = start + float(rng.uniform(0.0, cfg.segment_s - silence_len))
    silence = (round(s0, 3), round(s0 + silence_len, 3)) if silence_len >= 0.5 else (0.0, 0.0)
    latent, gap, decoy, static = None, None, None, False
    if rng_c is not None:
        latent, gap, decoy, static = _draw_coupled(rng_c, cls, duration, d)
    onsets = tuple(_event_times(rng, duration, silence, gap or (0.6, 1.6)))
    return ClipPlan(
        ytid=ytid,
        split=split,
        cls=cls,
        fault=fault,
        container=container,
        width=width,
        height=height,
        fps=fps,
        sample_rate=sr,
        duration_s=duration,
        start_s=start,
        end_s=end,
        difficulty=d,
        silence=silence,
        onsets=onsets,
        distractors=_draw_distractors(rng, cfg, cls, duration, silence),
        clutter=round(d * float(rng.uniform(0.5, 1.0)), 3),
        object_scale=round(0.45 - 0.33 * d * float(rng.uniform(0.5, 1.0)), 3),
        seed=int(rng.integers(2**31)),
        latent=latent,
        note_gap_s=gap,
        decoy=decoy,
        static_background=static,
    )


def _draw_coupled(
    rng_c: np.random.Generator, cls: ClassSpec, duration: float, difficulty: float
) -> tuple[float, tuple[float, float], tuple[str, tuple[int, int, int], tuple[float, ...]] | None, bool]:
    """The coupled profile's instance draws: latent u, note gap (lo, hi) s around a drawn mean, decoy (another shape
    in a random hue moving at its own times; with probability `difficulty`, else None), static background."""
    latent = round(float(rng_c.uniform(0.0, 1.0)), 4)
    mean_gap = float(rng_c.uniform(0.45, 1.4))
    gap = (round(0.8 * mean_gap, 3), round(1.2 * mean_gap, 3))
    static = bool(rng_c.random() < 0.5)
    decoy = None
    if rng_c.random() < difficulty:
        shape = SHAPES[(SHAPES.index(cls.shape) + 1 + int(rng_c.integers(5))) % 6]
        rgb = _hue_rgb(_HUE_SPAN * float(rng_c.uniform(0.0, 1.0)))
        times = tuple(_event_times(rng_c, duration, (0.0, 0.0), (0.5, 1.5)))
        decoy = (shape, rgb, times)
    return latent, gap, decoy, static


def _draw_distractors(
    rng: np.random.Generator, cfg: SynthConfig, cls: ClassSpec, duration: float, silence: tuple[float, float]
) -> tuple[tuple[float, int, float], ...]:
    """Events of other classes, Poisson(4·difficulty) of them: (onset s, class index, gain); the ones that would
    sound inside the silent stretch are drawn and then left out."""
    others = [c for c in range(cfg.num_classes) if c != cls.index]
    distractors = []
    for _ in range(int(rng.poisson(4.0 * cfg.difficulty))):
        t = round(float(rng.uniform(0.0, duration - _EVENT_S)), 3)
        c = int(others[int(rng.integers(len(others)))])
        g = round(float(rng.uniform(0.3, 0.7)), 3)
        if not (silence[0] - _EVENT_S < t < silence[1]):
            distractors.append((t, c, g))
    return tuple(distractors)


# ----------------------------------------------------------------------------------------------------- rendering


def _shape_mask(shape: str, size: int) -> np.ndarray:
    """Boolean mask [size, size]."""
    r = (np.arange(size) + 0.5) / size * 2.0 - 1.0
    y, x = np.meshgrid(r, r, indexing="ij")
    if shape == "circle":
        return x**2 + y**2 <= 1.0
    if shape == "ring":
        rr = x**2 + y**2
        return (rr <= 1.0) & (rr >= 0.35)
    if shape == "square":
        return (np.abs(x) <= 0.85) & (np.abs(y) <= 0.85)
    if shape == "diamond":
        return np.abs(x) + np.abs(y) <= 1.0
    if shape == "triangle":
        return (y <= 0.9) & (np.abs(x) <= (y + 0.9) / 1.8 * 0.95)
    return (np.abs(x) <= 0.3) | (np.abs(y) <= 0.3)  # cross


def _phases(onsets: tuple[float, ...], t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per time t: phase ∈ [0, 1] inside an event (-1 outside) and the index of the last event started."""
    on = np.asarray(onsets, dtype=np.float64)
    idx = np.searchsorted(on, t, side="right") - 1
    phase = np.full(t.shape, -1.0)
    inside = idx >= 0
    rel = np.where(inside, t - on[np.clip(idx, 0, None)] if len(on) else 0.0, np.inf)
    active = inside & (rel < _EVENT_S)
    phase[active] = rel[active] / _EVENT_S
    return phase, idx


@dataclass
class _Scene:
    """What `render_frames` draws from the clip's render seed, in the order it draws it (module doc: determinism)."""

    texture: np.ndarray | None  # [H, tex_w, 3] scrolling background (None when only labels are wanted)
    speed: float  # background scroll, px/frame
    masks: list[np.ndarray]  # the object's mask per pulse scale
    amp: float  # motion amplitude, px
    cx: float
    cy: float
    decoy: tuple[np.ndarray, np.ndarray, float, float, tuple[float, ...]] | None  # mask, rgb, cx, cy, motion times
    phase: np.ndarray  # [n] object event phase per video frame (-1 outside an event)
    idx: np.ndarray  # [n] index of the last object event started
    d_phase: np.ndarray  # [n] decoy event phase


_SCALES = (1.0, 1.15, 1.3, 1.45, 1.6)


def _scene(plan: ClipPlan, paint: bool = True) -> _Scene:
    """The clip's background, object and decoy placement; `paint=False` makes the same draws without painting."""
    rng = np.random.default_rng(plan.seed)
    h, w = plan.height, plan.width
    n = max(1, int(round(plan.duration_s * plan.fps)))
    speed = 0.0 if plan.static_background else 0.5 + 3.0 * plan.clutter  # px/frame
    tex_w = w + int(speed * n) + 2
    grad = np.linspace(60, 110, h, dtype=np.float32)[:, None, None]
    base = rng.uniform(0.7, 1.0, size=3).astype(np.float32)
    texture = np.broadcast_to(grad * base, (h, tex_w, 3)).astype(np.uint8).copy() if paint else None
    n_blobs = int(plan.clutter * 0.02 * tex_w * h / 20)
    for _ in range(n_blobs):
        bw, bh = int(rng.integers(3, max(4, w // 6))), int(rng.integers(3, max(4, h // 6)))
        x0, y0 = int(rng.integers(0, tex_w - bw)), int(rng.integers(0, h - bh))
        sat = 0.3 + 0.6 * plan.difficulty  # harder: clutter as colourful as the object
        rgb = np.array(colorsys.hsv_to_rgb(float(rng.random()), sat, float(rng.uniform(0.4, 0.9)))) * 255
        if texture is not None:
            texture[y0 : y0 + bh, x0 : x0 + bw] = rgb.astype(np.uint8)

    size = max(6, int(plan.object_scale * min(h, w)))
    masks = [_shape_mask(plan.cls.shape, max(4, int(size * s))) for s in _SCALES]
    amp = max(3.0, 0.5 * size)
    cx = float(rng.uniform(size + amp, w - size - amp)) if w > 2 * (size + amp) else w / 2
    cy = float(rng.uniform(size + amp, h - size - amp)) if h > 2 * (size + amp) else h / 2
    decoy = None
    if plan.decoy is not None:  # a silent on-screen object: same size, jumps at its own times, on the other side
        d_shape, d_rgb, d_times = plan.decoy
        dcx = w - cx if abs(w - 2 * cx) > size else (cx + w / 2) % w
        decoy = (_shape_mask(d_shape, size), np.array(d_rgb, dtype=np.uint8), dcx, h - cy, d_times)
    t = np.arange(n) / plan.fps
    phase, idx = _phases(plan.onsets, t)
    d_phase = _phases(decoy[4], t)[0] if decoy is not None and decoy[4] else np.full(n, -1.0)
    return _Scene(texture, speed, masks, amp, cx, cy, decoy, phase, idx, d_phase)


def _object_at(plan: ClipPlan, sc: _Scene, i: int) -> tuple[np.ndarray, float, float]:
    """The object's (mask, centre x, centre y) in video frame i."""
    still = plan.fault == "still"
    p = max(sc.phase[i], 0.0) if not still else 0.0
    dx = dy = 0.0
    k = 0
    amp, motion = sc.amp, plan.cls.motion
    if motion == "jump":
        dy = -amp * np.sin(np.pi * p)
    elif motion == "shake":
        dx = amp * np.sin(4 * np.pi * p) * (1 - p)
    elif motion == "slide":
        # each event moves the object to the other side, where it stays until the next event
        started = int(sc.idx[i]) + 1
        after = amp if started % 2 else -amp
        dx = -after + 2 * after * p if sc.phase[i] >= 0 else after
    elif motion == "pulse":
        k = int(round(np.sin(np.pi * p) * (len(_SCALES) - 1)))
    return sc.masks[k], sc.cx + dx, sc.cy + dy


def _decoy_at(sc: _Scene, i: int) -> tuple[np.ndarray, np.ndarray, float, float] | None:
    """The decoy's (mask, rgb, centre x, centre y) in video frame i, or None."""
    if sc.decoy is None:
        return None
    d_mask, d_rgb, dcx, dcy, _ = sc.decoy
    return d_mask, d_rgb, dcx, dcy - sc.amp * np.sin(np.pi * max(sc.d_phase[i], 0.0))


def render_frames(plan: ClipPlan) -> np.ndarray:
    """Video frames uint8 [N, H, W, 3] at plan.fps for the whole file duration."""
    sc = _scene(plan)
    assert sc.texture is not None
    h, w, n = plan.height, plan.width, len(sc.phase)
    colour = np.array(plan.rgb, dtype=np.uint8)
    frames = np.empty((n, h, w, 3), dtype=np.uint8)
    still = plan.fault == "still"
    for i in range(n):
        if still and i > 0:
            frames[i] = frames[0]
            continue
        off = int(sc.speed * i)
        frames[i] = sc.texture[:, off : off + w]
        if (d := _decoy_at(sc, i)) is not None:
            _paste(frames[i], d[0], d[1], d[2], d[3])
        mask, x, y = _object_at(plan, sc, i)
        _paste(frames[i], mask, colour, x, y)
    return frames


def render_labels(plan: ClipPlan, frame_indices: np.ndarray | list[int]) -> np.ndarray:
    """What each pixel of the given video frames shows, uint8 [len(frame_indices), H, W]: `LABEL_BACKGROUND`,
    `LABEL_OBJECT` (the sounding object) or `LABEL_DECOY` (the silent decoy), painted as `render_frames` paints."""
    sc = _scene(plan, paint=False)
    n = len(sc.phase)
    out = np.full((len(frame_indices), plan.height, plan.width, 1), LABEL_BACKGROUND, dtype=np.uint8)
    for j, i in enumerate(frame_indices):
        i = 0 if plan.fault == "still" else min(max(int(i), 0), n - 1)
        if (d := _decoy_at(sc, i)) is not None:
            _paste(out[j], d[0], np.array([LABEL_DECOY], np.uint8), d[2], d[3])
        mask, x, y = _object_at(plan, sc, i)
        _paste(out[j], mask, np.array([LABEL_OBJECT], np.uint8), x, y)
    return out[..., 0]


def sound_labels(plan: ClipPlan, times_s: np.ndarray) -> np.ndarray:
    """What sounds at each time (file seconds), uint8 [len(times_s)]: `LABEL_NOTE` (one of the on-screen object's
    notes), `LABEL_DISTRACTOR` (only an off-screen note) or `LABEL_QUIET` (neither: the noise floor or silence).
    A note counts for `_EVENT_S` s from its onset, the length `render_audio` gives it."""
    t = np.asarray(times_s, dtype=np.float64)
    out = np.full(t.shape, LABEL_QUIET, dtype=np.uint8)
    if plan.fault == "silent" or plan.fault == "no_audio":
        return out
    out[_phases(tuple(d[0] for d in sorted(plan.distractors)), t)[0] >= 0] = LABEL_DISTRACTOR
    out[_phases(plan.onsets, t)[0] >= 0] = LABEL_NOTE
    out[(t >= plan.silence[0]) & (t < plan.silence[1])] = LABEL_QUIET
    return out


def _paste(frame: np.ndarray, mask: np.ndarray, colour: np.ndarray, cx: float, cy: float) -> None:
    """Paint `colour` where the square `mask` lands centred at (cx, cy) on frame [H, W, 3], clipped to the frame."""
    h, w = frame.shape[:2]
    ms = mask.shape[0]
    y0, x0 = int(cy) - ms // 2, int(cx) - ms // 2
    ya, xa = max(0, y0), max(0, x0)
    yb, xb = min(h, y0 + ms), min(w, x0 + ms)
    if ya < yb and xa < xb:
        region = frame[ya:yb, xa:xb]
        region[mask[ya - y0 : yb - y0, xa - x0 : xb - x0]] = colour


def _note(cls: ClassSpec, event_k: int, sr: int, rng: np.random.Generator, base_hz: float | None = None) -> np.ndarray:
    """One note float32 [round(_EVENT_S * sr)]: class timbre, pitch pattern, sharp attack (pitch base_hz or the
    class's)."""
    n = int(round(_EVENT_S * sr))
    t = np.arange(n) / sr
    f0 = (base_hz or cls.base_hz) * (1.26 if cls.pattern == "alternate" and event_k % 2 else 1.0)
    if cls.pattern == "rise":
        f = f0 * (1.0 + 0.5 * t / _EVENT_S)
    elif cls.pattern == "fall":
        f = f0 * (1.5 - 0.5 * t / _EVENT_S)
    elif cls.pattern == "trill":
        f = f0 * (1.0 + 0.06 * np.sin(2 * np.pi * 12 * t))
    else:
        f = np.full(n, f0)
    ph = 2 * np.pi * np.cumsum(f) / sr
    if cls.timbre == "sine":
        x = np.sin(ph)
    elif cls.timbre == "square":
        x = sum(np.sin(k * ph) / k for k in (1, 3, 5, 7))
    elif cls.timbre == "saw":
        x = sum(np.sin(k * ph) / k for k in range(1, 7))
    elif cls.timbre == "bell":
        x = np.sin(ph + 2.0 * np.sin(1.4 * ph))
    else:  # buzz: noise amplitude-modulated at the pitch
        x = rng.standard_normal(n) * (0.5 + 0.5 * np.sin(ph))
    env = np.minimum(t / 0.005, 1.0) * np.exp(-t / 0.12)
    return (x * env).astype(np.float32)


def render_audio(plan: ClipPlan, classes: list[ClassSpec]) -> np.ndarray:
    """Mono int16 PCM [round(duration * sr)]: class notes at the onsets, distractors, a noise floor, silences."""
    sr = plan.sample_rate
    n = int(round(plan.duration_s * sr))
    if plan.fault == "silent":
        return np.zeros(n, dtype=np.int16)
    rng = np.random.default_rng(plan.seed + 1)
    x = (rng.standard_normal(n) * 10 ** (-55 / 20)).astype(np.float32)
    events = [(t, plan.cls, k, 1.0, plan.pitch_hz) for k, t in enumerate(plan.onsets)]
    # coupled: an off-screen note's pitch is random, so pitch matches only the on-screen object's hue
    off_hz = [None] * len(plan.distractors)
    if plan.latent is not None:
        off_hz = [latent_pitch(u) for u in np.random.default_rng(plan.seed + 3).uniform(0, 1, len(plan.distractors))]
    events += [(t, classes[c], k, g, f) for k, ((t, c, g), f) in enumerate(zip(plan.distractors, off_hz, strict=True))]
    for t0, cls, k, gain, f0 in events:
        note = _note(cls, k, sr, rng, f0) * gain
        i0 = int(round(t0 * sr))
        seg = x[i0 : i0 + len(note)]
        seg += note[: len(seg)]
    a, b = int(plan.silence[0] * sr), int(plan.silence[1] * sr)
    x[a:b] = 0.0
    peak = float(np.max(np.abs(x))) or 1.0
    return np.round(x * (0.7 / peak) * 32767).astype(np.int16)


# ------------------------------------------------------------------------------------------------------ encoding

_BITEXACT = ["-fflags", "+bitexact", "-flags:v", "+bitexact", "-flags:a", "+bitexact"]


def _encode(plan: ClipPlan, classes: list[ClassSpec], dest: Path, ffmpeg: str, tmpdir: Path) -> None:
    video = plan.fault != "no_video"
    audio = plan.fault != "no_audio"
    cmd = [ffmpeg, "-hide_banner", "-loglevel", "error", "-y", "-threads", "1"]
    stdin = None
    if video:
        frames = render_frames(plan)
        stdin = frames.tobytes()
        size = f"{plan.width}x{plan.height}"
        cmd += ["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", size, "-framerate", str(plan.fps), "-i", "pipe:0"]
    if audio:
        pcm = tmpdir / f"{plan.seed}.s16"
        render_audio(plan, classes).tofile(pcm)
        cmd += ["-f", "s16le", "-ar", str(plan.sample_rate), "-ac", "1", "-i", str(pcm)]
    if video and audio:
        cmd += ["-map", "0:v", "-map", "1:a"]
    if video:
        gop = str(2 * plan.fps)
        if plan.container == "mp4":
            cmd += ["-c:v", "libx264", "-preset", "ultrafast", "-crf", "26", "-g", gop]
        else:
            cmd += ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "200k", "-g", gop]
            cmd += ["-row-mt", "0", "-tile-columns", "0"]
        cmd += ["-pix_fmt", "yuv420p"]
    if audio:
        cmd += ["-c:a", "aac", "-b:a", "48k"] if plan.container == "mp4" else ["-c:a", "libopus", "-b:a", "32k"]
    cmd += [*_BITEXACT, "-threads", "1"]
    if plan.container == "mp4":
        cmd += ["-movflags", "+faststart"]  # moov first: a truncated copy still probes (corrupt_decode, not unreadable)
    # dest is absolute, so a ytid starting with '-' can't be taken for an option
    cmd += ["-f", plan.container, str(dest)]
    proc = subprocess.run(cmd, input=stdin, capture_output=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"ffmpeg failed for {plan.ytid}: {proc.stderr.decode(errors='replace')[-800:]}")


def _write_clip(plan: ClipPlan, classes: list[ClassSpec], out: Path, ffmpeg: str, tmpdir: Path) -> None:
    rng = np.random.default_rng(plan.seed + 2)
    with atomic_path((out / plan.file).resolve()) as tmp:
        if plan.fault == "empty":
            tmp.write_bytes(b"")
        elif plan.fault == "garbage":
            tmp.write_bytes(rng.integers(0, 256, int(rng.integers(20_000, 60_000)), dtype=np.uint8).tobytes())
        else:
            _encode(plan, classes, tmp, ffmpeg, tmpdir)
            if plan.fault == "truncated":
                data = tmp.read_bytes()
                tmp.write_bytes(data[: int(len(data) * float(rng.uniform(0.4, 0.6)))])


# -------------------------------------------------------------------------------------------------------- output


def _gt_row(plan: ClipPlan) -> list[str]:
    v = plan.fault != "no_video"
    a = plan.fault != "no_audio"
    return [
        plan.ytid,
        plan.clip_id,
        plan.split,
        str(plan.cls.index),
        plan.cls.mid,
        plan.cls.name,
        plan.fault,
        EXPECTED_REASON[plan.fault],
        str(plan.fault == "silent").lower(),
        str(plan.fault == "still").lower(),
        plan.file,
        plan.container,
        ("h264" if plan.container == "mp4" else "vp9") if v else "",
        ("aac" if plan.container == "mp4" else "opus") if a else "",
        str(plan.width),
        str(plan.height),
        str(plan.fps),
        str(plan.sample_rate),
        f"{plan.duration_s:.3f}",
        f"{plan.start_s:.3f}",
        f"{plan.end_s:.3f}",
        f"{plan.difficulty:.3f}",
        f"{plan.silence[0]:.3f}",
        f"{plan.silence[1]:.3f}",
        str(len(plan.distractors)),
        f"{plan.clutter:.3f}",
        f"{plan.object_scale:.3f}",
        ";".join(f"{t:.3f}" for t in plan.onsets),
        "default" if plan.latent is None else "coupled",
        "" if plan.latent is None else f"{plan.latent:.4f}",
        "" if plan.note_gap_s is None else f"{sum(plan.note_gap_s) / 2:.3f}",
        "" if plan.decoy is None else plan.decoy[0],
        str(plan.static_background).lower(),
    ]


def _csv_text(header: list[str] | tuple[str, ...], rows: list[list[str]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def _prepare_out(out: Path) -> None:
    if out.exists() and any(out.iterdir()):
        if not (out / "ground_truth.csv").is_file():
            raise FileExistsError(f"{out} is not empty and holds no synth corpus; refusing to write into it")
        shutil.rmtree(out / "videos", ignore_errors=True)  # an earlier corpus: replace it whole
    (out / "videos").mkdir(parents=True, exist_ok=True)


def generate(cfg: SynthConfig, out: Path, write_media: bool = True) -> SynthResult:
    """Write the corpus to `out` (see module doc) using `cfg.workers` parallel ffmpeg encodes.

    `write_media=False` writes only the CSVs and the ground truth (the plan), e.g. to inspect a large config.
    """
    if write_media and shutil.which(cfg.ffmpeg) is None and not Path(cfg.ffmpeg).is_file():
        raise FileNotFoundError(f"ffmpeg not found ({cfg.ffmpeg!r}); install ffmpeg or set ffmpeg=PATH")
    t0 = time.perf_counter()
    out = Path(out)
    classes, plans = plan_corpus(cfg)
    _prepare_out(out)
    if write_media:
        with tempfile.TemporaryDirectory(prefix="tgdp-synth-") as tmp:
            write = functools.partial(_write_clip, classes=classes, out=out, ffmpeg=cfg.ffmpeg, tmpdir=Path(tmp))
            map_threads(write, plans, cfg.workers)

    created = (datetime(2017, 3, 5, 10, 54, 31) + timedelta(seconds=cfg.seed % 86400)).ctime()
    for split, name in SEGMENT_FILES.items():
        rows = [(p.ytid, p.start_s, p.end_s, [p.cls.mid]) for p in plans if p.split == split]
        atomic_write(out / name, format_audioset_csv(rows, created))
    labels = [[str(c.index), c.mid, c.name] for c in classes]
    atomic_write(out / LABELS_FILE, _csv_text(["index", "mid", "display_name"], labels))
    gt = out / "ground_truth.csv"
    atomic_write(gt, _csv_text(GROUND_TRUTH_COLUMNS, [_gt_row(p) for p in plans]))
    return SynthResult(
        out=out,
        ground_truth=gt,
        num_clips=len(plans),
        split_counts=dict(sorted(Counter(p.split for p in plans).items())),
        fault_counts=dict(sorted(Counter(p.fault for p in plans).items())),
        elapsed_s=time.perf_counter() - t0,
    )


def read_ground_truth(out: Path) -> list[dict[str, str]]:
    """The ground-truth table of a synth corpus as a list of dicts (all values strings)."""
    with open(Path(out) / "ground_truth.csv", encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))
