"""tgdp.config: the config machinery every package shares (strict pydantic models, YAML presets with `base:`
inheritance, `--set key=value` overrides) and the package version. Imports nothing of tgdp but `tgdp.core`,
so `tgdp.model` can use it without the pipeline (docs/ARCHITECTURE.md).

Design:
- `StrictConfig` forbids unknown keys (the error names the key and its location) and validates on assignment.
- A YAML file may name `base: <preset or path>` (or a list of them, merged in order); the base is loaded first and
  the file's keys are merged on top, so an ablation preset is a few lines.
- Overrides are dotted paths (`optim.lr=1e-4`); values are parsed as YAML scalars (`true`, `1e-4`, `[1, 2]`),
  then the whole config is validated again, so a wrong type or an out-of-range value names its key.
- YAML is always read with `yaml.safe_load`.
- Keys are discoverable: `config_keys` lists every key of a config with its type, value, default and one-line help
  (the pydantic `Field(description=...)`), which each CLI prints (`tgdp-data config`, `tgdp-eval config`,
  `tgdp-train --show-config`); an unknown key's error lists its section's keys with the closest match.
"""

from __future__ import annotations

import copy
import difflib
import re
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import to_jsonable_python

# The version lives in tgdp.core (the bottom of the import graph), which also sets `tgdp.__version__`; every
# subpackage imports it from here or from there.
from tgdp.core import __version__ as __version__
from tgdp.core.atomic import atomic_write
from tgdp.core.errors import TgdpError

__all__ = [
    "__version__",
    "ConfigError",
    "ConfigKey",
    "StrictConfig",
    "apply_overrides",
    "commented_yaml",
    "config_keys",
    "deep_merge",
    "dump_config",
    "load_config",
    "load_yaml_with_bases",
    "parse_override",
    "section_keys",
    "validate_config",
    "validation_messages",
]

C = TypeVar("C", bound=BaseModel)


class ConfigError(TgdpError, ValueError):
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
    """Load a YAML config, following `base:` links (a preset name or a path, or a list of them merged in order)
    and merging the file's keys on top of them."""
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
    merged: dict[str, Any] = {}
    for item in base if isinstance(base, list) else [base]:
        if not Path(str(item)).suffix:
            base_data = load_yaml_with_bases(item, base_dir, (*_seen, path))
        else:
            base_path = Path(item) if Path(item).is_absolute() else path.parent / item
            base_data = load_yaml_with_bases(base_path, base_dir, (*_seen, path))
        merged = deep_merge(merged, base_data)
    return deep_merge(merged, data)


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


# --- key discovery ---

_REQUIRED = object()  # the default of a field that has none


@dataclass(frozen=True)
class ConfigKey:
    """One settable key: dotted name, type (with its bounds), resolved value, default and one-line help."""

    key: str
    type: str
    value: Any
    default: Any
    help: str
    required: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"key": self.key, "type": self.type, "value": self.value, "default": self.default, "help": self.help}


def _section_class(annotation: Any) -> type[BaseModel] | None:
    """The config model a field holds (`X` or `X | None`), or None for a leaf."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        found = [a for a in typing.get_args(annotation) if isinstance(a, type) and issubclass(a, BaseModel)]
        return found[0] if len(found) == 1 else None
    return None


def _type_str(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Literal:
        return "|".join(str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_str(a) for a in args)
    if origin is not None:
        inner = ", ".join("..." if a is Ellipsis else _type_str(a) for a in args)
        return f"{getattr(origin, '__name__', str(origin))}[{inner}]"
    return "None" if tp is type(None) else getattr(tp, "__name__", str(tp))


def _field_type(field: FieldInfo) -> str:
    """`float >=0 <1`: the annotation and the bounds pydantic checks."""
    bounds = [
        f"{sym}{getattr(m, attr)}"
        for m in field.metadata
        for attr, sym in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))
        if getattr(m, attr, None) is not None
    ]
    return " ".join([_type_str(field.annotation), *bounds])


def _walk(cls: type[BaseModel], value: Any, default: Any, prefix: str) -> Iterable[ConfigKey]:
    for name, field in cls.model_fields.items():
        key = prefix + (field.alias or name)
        if field.exclude:
            continue
        cur = getattr(value, name) if isinstance(value, BaseModel) else None
        if isinstance(default, BaseModel):
            dflt = getattr(default, name)
        else:
            dflt = _REQUIRED if field.is_required() else field.get_default(call_default_factory=True)
        sub = _section_class(field.annotation)
        if sub is not None:  # a section: its keys, with the defaults of the section's own default when it has one
            yield from _walk(sub, cur, dflt if isinstance(dflt, BaseModel) else None, key + ".")
            continue
        required = dflt is _REQUIRED
        yield ConfigKey(
            key,
            _field_type(field),
            to_jsonable_python(cur),
            None if required else to_jsonable_python(dflt),
            " ".join((field.description or "").split()),
            required,
        )


def config_keys(cfg: BaseModel | type[BaseModel]) -> list[ConfigKey]:
    """Every key of a config (or a config class: values are then the defaults), in declaration order."""
    cls = cfg if isinstance(cfg, type) else type(cfg)
    value = cfg if isinstance(cfg, BaseModel) else None
    keys = list(_walk(cls, value, None, ""))
    if value is None:
        keys = [ConfigKey(k.key, k.type, k.default, k.default, k.help, k.required) for k in keys]
    return keys


def _flow(value: Any) -> str:
    """A value as one line of YAML (what `--set key=<this>` reads back)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10**9, sort_keys=False).rstrip("\n")
    return text.removesuffix("\n...").rstrip("\n")


def commented_yaml(cfg: BaseModel) -> str:
    """The resolved config as YAML that `--config` loads back, each key followed by `# type; default; help`.
    A section that is not set (None) is written `null` with its keys commented out."""
    dump = cfg.model_dump(mode="json", by_alias=True)
    lines: list[str] = []
    open_path: list[str] = []
    for k in config_keys(cfg):
        *path, leaf = k.key.split(".")
        node: Any = dump
        unset_at = None
        for depth, part in enumerate(path):
            node = node.get(part) if isinstance(node, dict) else None
            if node is None:
                unset_at = depth
                break
        common = 0
        while common < min(len(path), len(open_path)) and path[common] == open_path[common]:
            common += 1
        for depth in range(common, len(path)):
            head = f"{'  ' * depth}{path[depth]}:"
            if unset_at is not None and depth >= unset_at:
                head = f"{head} null  # not set" if depth == unset_at else f"{'  ' * depth}# {path[depth]}:"
            lines.append(head)
        open_path = path
        default = "required" if k.required else f"default {_flow(k.default)}"
        line = f"{leaf}: {_flow(k.default if unset_at is not None else k.value)}  # {k.type}; {default}; {k.help}"
        lines.append("  " * len(path) + ("# " + line if unset_at is not None else line))
    return "\n".join(lines) + "\n"


def section_keys(cls: type[BaseModel], path: Sequence[str]) -> tuple[str, list[str]] | None:
    """(dotted section name, its settable keys) for the section at `path` of `cls` (aliases as spelt), or None."""
    section: type[BaseModel] | None = cls
    for part in path:
        fields = {(f.alias or n): f for n, f in section.model_fields.items()}
        section = _section_class(fields[part].annotation) if part in fields else None
        if section is None:
            return None
    keys = [f.alias or n for n, f in section.model_fields.items()]
    return ".".join(path), [k for k in keys if not section.model_fields.get(k, FieldInfo()).exclude]


def _unknown_key_hint(cls: type[BaseModel] | None, loc: Sequence[Any], prefix: str) -> str:
    """`; did you mean 'fetch.max_attempts'? fetch keys: ...` for an unknown key at `loc` of `cls`."""
    found = section_keys(cls, [str(p) for p in loc[:-1]]) if cls is not None and loc else None
    if found is None:
        return ""
    name, keys = found
    section = (prefix + name).rstrip(".")
    elsewhere = _key_elsewhere(cls, str(loc[-1]))
    match = difflib.get_close_matches(str(loc[-1]), keys, n=1, cutoff=0.6)
    if elsewhere is not None:
        hint = f"; did you mean {prefix + elsewhere!r}?"
    else:
        hint = f"; did you mean {(section + '.' if section else '') + match[0]!r}?" if match else ""
    return f"{hint}; {section or cls.__name__} keys: {', '.join(keys)}"


def _key_elsewhere(cls: type[BaseModel], name: str) -> str | None:
    """The one key or section named `name` elsewhere in `cls` (`features.num_mel_bins` for a misplaced
    `shard.num_mel_bins`, `features` for `shard.features`); None when there is none or several."""
    found: set[str] = set()
    for k in config_keys(cls):
        parts = k.key.split(".")
        if name in parts:
            found.add(".".join(parts[: parts.index(name) + 1]))
    return found.pop() if len(found) == 1 else None


def validation_messages(exc: ValidationError, prefix: str = "", cls: type[BaseModel] | None = None) -> list[str]:
    """One readable line per pydantic error: `unknown key 'a.b'` (with its section's keys and the closest match
    when `cls` is given) or `a.b: <msg> (got <input>)`; keys get `prefix`."""
    lines = []
    for err in exc.errors():
        loc = prefix + (".".join(str(p) for p in err["loc"]) or "<root>")
        nested = err.get("ctx", {}).get("error")
        if err["type"] == "extra_forbidden":
            lines.append(f"unknown key {loc!r}{_unknown_key_hint(cls, err['loc'], prefix)}")
        elif isinstance(nested, ConfigError):  # a section resolved by its own loader (RunConfig.model) said it all
            lines.append(str(nested))
        else:
            got = re.sub(r"(://)[^/@\s'\"]+@", r"\1***@", repr(err.get("input")))  # no URI credentials echoed
            lines.append(f"{loc}: {err['msg']} (got {got})")
    return lines


def _format_validation_error(cls: type[BaseModel], exc: ValidationError) -> str:
    return f"invalid {cls.__name__}: " + "; ".join(validation_messages(exc, cls=cls))


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
        atomic_write(path, text)
    return text
