"""tgdp.config: the config machinery every package shares (strict pydantic models, YAML presets with `base:`
inheritance, `--set key=value` overrides) and the package version. Imports nothing from the other tgdp packages,
so `tgdp.model` can use it without the pipeline (docs/ARCHITECTURE.md).

Design:
- `StrictConfig` forbids unknown keys (the error names the key and its location) and validates on assignment.
- A YAML file may name `base: <preset or path>`; the base is loaded first and the file's keys are merged on top,
  so an ablation preset is a few lines.
- Overrides are dotted paths (`optim.lr=1e-4`); values are parsed as YAML scalars (`true`, `1e-4`, `[1, 2]`),
  then the whole config is validated again, so a wrong type or an out-of-range value names its key.
- YAML is always read with `yaml.safe_load`.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

import tgdp

try:
    __version__ = version("tgdp")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

# `tgdp` is a PEP 420 namespace package (no tgdp/__init__.py), so nothing else can give it attributes: every
# subpackage imports this one, which sets `tgdp.__version__` on the namespace module.
tgdp.__version__ = __version__

__all__ = [
    "__version__",
    "ConfigError",
    "StrictConfig",
    "apply_overrides",
    "deep_merge",
    "dump_config",
    "load_config",
    "load_yaml_with_bases",
    "parse_override",
    "validate_config",
    "validation_messages",
]

C = TypeVar("C", bound=BaseModel)


class ConfigError(ValueError):
    """A config could not be loaded or validated; the message names the offending key."""


class StrictConfig(BaseModel):
    """Base for every config model: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


def deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Recursively merge `update` into a copy of `base` (mappings merge, everything else replaces)."""
    out = copy.deepcopy(dict(base))
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _resolve_source(source: str | Path, preset_dir: Path | None) -> Path:
    path = Path(source)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return path
    if preset_dir is not None:
        candidate = preset_dir / f"{source}.yaml"
        if candidate.is_file():
            return candidate
    available = sorted(p.stem for p in preset_dir.glob("*.yaml")) if preset_dir and preset_dir.is_dir() else []
    raise ConfigError(f"config {str(source)!r} is neither a YAML file nor a preset; presets: {', '.join(available)}")


def load_yaml_with_bases(source: str | Path, preset_dir: Path | None = None, _seen: tuple[Path, ...] = ()) -> dict:
    """Load a YAML config, following `base:` links (a preset name or a path) and merging on top of them."""
    path = _resolve_source(source, preset_dir).resolve()
    if path in _seen:
        raise ConfigError(f"config base cycle: {' -> '.join(str(p) for p in (*_seen, path))}")
    with path.open("r", encoding="utf-8") as fh:
        data = yaml.safe_load(fh) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    base = data.pop("base", None)
    if base is None:
        return data
    base_dir = preset_dir if preset_dir is not None else path.parent
    if not Path(str(base)).suffix:
        base_data = load_yaml_with_bases(base, base_dir, (*_seen, path))
    else:
        base_path = Path(base) if Path(base).is_absolute() else path.parent / base
        base_data = load_yaml_with_bases(base_path, base_dir, (*_seen, path))
    return deep_merge(base_data, data)


def parse_override(item: str) -> tuple[list[str], Any]:
    """Parse `a.b.c=value` into (["a", "b", "c"], value) with the value read as a YAML scalar or list."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like key=value")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {item!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {item!r}: cannot parse value: {exc}") from exc
    return key.split("."), value


def apply_overrides(data: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Return a copy of `data` with every `key=value` override applied (missing parents are created)."""
    out = copy.deepcopy(dict(data))
    for item in overrides:
        path, value = parse_override(item)
        node = out
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
            node = child
        node[path[-1]] = value
    return out


def validation_messages(exc: ValidationError, prefix: str = "") -> list[str]:
    """One readable line per pydantic error: `unknown key 'a.b'` or `a.b: <msg> (got <input>)`; keys get `prefix`."""
    lines = []
    for err in exc.errors():
        loc = prefix + (".".join(str(p) for p in err["loc"]) or "<root>")
        if err["type"] == "extra_forbidden":
            lines.append(f"unknown key {loc!r}")
        else:
            lines.append(f"{loc}: {err['msg']} (got {err.get('input')!r})")
    return lines


def _format_validation_error(cls: type[BaseModel], exc: ValidationError) -> str:
    return f"invalid {cls.__name__}: " + "; ".join(validation_messages(exc))


def validate_config(cls: type[C], data: Mapping[str, Any]) -> C:
    """Validate a plain mapping into `cls`, turning pydantic's error into a `ConfigError` naming each key."""
    try:
        return cls.model_validate(dict(data))
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(cls, exc)) from None


def load_config(
    cls: type[C],
    source: str | Path | None = None,
    overrides: Iterable[str] = (),
    preset_dir: Path | None = None,
) -> C:
    """Build a config: defaults ← YAML (`source`, a path or a preset name, with `base:` chains) ← overrides."""
    data: dict[str, Any] = load_yaml_with_bases(source, preset_dir) if source is not None else {}
    data = apply_overrides(data, overrides)
    return validate_config(cls, data)


def dump_config(cfg: BaseModel, path: Path | None = None) -> str:
    """Serialise a resolved config to YAML (and write it to `path` when given)."""
    text = yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    return text
