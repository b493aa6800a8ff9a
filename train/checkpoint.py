"""Training checkpoints: atomic writes, last-K retention, fallback past a torn file, `weights_only=True` loads.

A checkpoint is a dict of tensors and plain Python values:
`model` (student state dict), `teacher` (EMA teacher state dict or None), `optimizer`, `scaler`, `step`,
`data_state` ({epoch, batch}), `config` (the RunConfig with a fully resolved `model` section, as a plain dict),
`derived` (ResolvedRun values), `git_rev`. Files are `run_dir/checkpoints/step_XXXXXXXX.pt`, written to a temporary
`.tmp-<pid>-step_XXXXXXXX.pt`, fsynced and `os.replace`d (`tgdp.core.atomic`), so a crash mid-write never leaves a
half file under the final name; a file corrupted later (disk, copy) is detected on load and the previous one is used
with a warning. A write that fails (a full disk) removes its temporary file and leaves the existing checkpoints as
they were; a full disk is a one-line `CheckpointError` naming the file and the free space
(`tgdp.train.config.write_error` does the same for the run dir's other files).
"""

from __future__ import annotations

import logging
import re
import subprocess
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tgdp.core.atomic import TMP_PREFIX, atomic_path
from tgdp.core.disk import disk_full, free_space
from tgdp.model.checkpoint import CheckpointError

__all__ = [
    "CheckpointError",
    "checkpoint_dir",
    "git_revision",
    "list_checkpoints",
    "load_checkpoint",
    "load_latest",
    "model_parts",
    "remove_stale_temporaries",
    "save_checkpoint",
]

log = logging.getLogger(__name__)

REQUIRED_KEYS = ("model", "optimizer", "step", "data_state", "config")
_NAME = re.compile(r"^step_(\d{8,})\.pt$")


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def git_revision() -> str:
    """`git rev-parse HEAD` of the source checkout (+ "-dirty" with local changes), or "unknown"."""
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return rev + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def model_parts(model: nn.Module) -> tuple[nn.Module, nn.Module | None]:
    """(student, teacher) of a TgdpModel; a model without a `student` attribute is its own student."""
    student = getattr(model, "student", None)
    teacher = getattr(model, "teacher", None)
    return (student if isinstance(student, nn.Module) else model), (teacher if isinstance(teacher, nn.Module) else None)


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoint files of a run, oldest first."""
    d = checkpoint_dir(run_dir)
    if not d.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in d.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def remove_stale_temporaries(run_dir: Path) -> list[Path]:
    """Delete the temporary files a killed writer left in a run dir (`checkpoints/.tmp-<pid>-step_*.pt`,
    `.tmp-<pid>-config.yaml`, `.tmp-<pid>-config-history.json`: `tgdp.core.atomic`); call it before this run writes
    (one writer per run dir). Returns what was removed."""
    run_dir = Path(run_dir)
    stale = [*checkpoint_dir(run_dir).glob(f"{TMP_PREFIX}*-step_*.pt"), *run_dir.glob(f"{TMP_PREFIX}*-config*")]
    for path in stale:
        path.unlink(missing_ok=True)
        log.warning("removed %s, left by a writer that was killed", path)
    return stale


def save_checkpoint(run_dir: Path, state: dict[str, Any], keep_last: int) -> Path:
    """Write `state` atomically as step_<step>.pt and delete all but the newest `keep_last` checkpoints."""
    d = checkpoint_dir(run_dir)
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"step_{int(state['step']):08d}.pt"
    try:
        # Through a Python file: a failed write then raises OSError(ENOSPC), not only torch's errno-less RuntimeError.
        # atomic_path removes the temporary file on any failure and fsyncs + renames it on success.
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            torch.save(state, fh)
    except BaseException as exc:
        full = disk_full(exc)
        if full is None:
            raise
        kept = list_checkpoints(run_dir)
        raise CheckpointError(
            f"{path}: cannot write the checkpoint: {full.strerror} ({free_space(d)}); its temporary file is "
            f"removed and the existing checkpoints are kept (newest: {kept[-1].name if kept else 'none'}): "
            "free space, then rerun the same command with --resume"
        ) from exc
    for old in list_checkpoints(run_dir)[:-keep_last]:
        old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load one checkpoint with `weights_only=True`; raises CheckpointError when unreadable or incomplete."""
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torn zip, truncated pickle, bad magic: all mean "unusable"
        raise CheckpointError(f"{path}: unreadable ({type(exc).__name__}: {exc})") from exc
    if not isinstance(ckpt, dict) or any(k not in ckpt for k in REQUIRED_KEYS):
        missing = [k for k in REQUIRED_KEYS if not isinstance(ckpt, dict) or k not in ckpt]
        raise CheckpointError(f"{path}: not a training checkpoint (missing {missing})")
    return ckpt


def load_latest(run_dir: Path, map_location: str | torch.device = "cpu") -> tuple[Path, dict[str, Any]] | None:
    """Newest loadable checkpoint of a run (warning about each newer one skipped), or None when there are none."""
    candidates = list_checkpoints(run_dir)
    if not candidates:
        return None
    errors = []
    for path in reversed(candidates):
        try:
            return path, load_checkpoint(path, map_location)
        except CheckpointError as exc:
            log.warning("skipping checkpoint %s; falling back to the previous one", exc)
            errors.append(str(exc))
    raise CheckpointError("no readable checkpoint in " + str(checkpoint_dir(run_dir)) + ": " + "; ".join(errors))
