"""Config machinery: strict keys, YAML bases, overrides, and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import Field

from tgdp.config import (
    ConfigError,
    StrictConfig,
    apply_overrides,
    dump_config,
    load_config,
    parse_override,
)


class Inner(StrictConfig):
    lr: float = Field(1e-3, gt=0)
    mask_ratio: float = Field(0.75, ge=0, lt=1)


class Outer(StrictConfig):
    name: str = "x"
    steps: int = 10
    inner: Inner = Inner()


def test_defaults_and_overrides() -> None:
    cfg = load_config(Outer, None, ["inner.lr=2e-4", "steps=5", "name=hello"])
    assert cfg.inner.lr == pytest.approx(2e-4) and cfg.steps == 5 and cfg.name == "hello"


def test_unknown_key_is_named() -> None:
    with pytest.raises(ConfigError, match="unknown key 'inner.lrr'"):
        load_config(Outer, None, ["inner.lrr=1"])


@pytest.mark.parametrize(
    ("override", "key"),
    [("inner.mask_ratio=1.0", "inner.mask_ratio"), ("inner.lr=-1", "inner.lr"), ("steps=abc", "steps")],
)
def test_out_of_range_and_wrong_type_are_named(override: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(Outer, None, [override])


def test_yaml_base_chain(tmp_path: Path) -> None:
    (tmp_path / "base.yaml").write_text("name: base\nsteps: 3\ninner:\n  lr: 0.5\n")
    (tmp_path / "child.yaml").write_text("base: base\ninner:\n  mask_ratio: 0.5\n")
    cfg = load_config(Outer, "child", [], preset_dir=tmp_path)
    assert (cfg.name, cfg.steps, cfg.inner.lr, cfg.inner.mask_ratio) == ("base", 3, 0.5, 0.5)
    cfg2 = load_config(Outer, tmp_path / "child.yaml", ["inner.lr=0.25"])
    assert cfg2.inner.lr == 0.25


def test_yaml_base_list_merges_in_order(tmp_path: Path) -> None:
    """`base: [a, b]`: b's keys win over a's, the file's own keys over both (the tiny TG-DP model preset)."""
    (tmp_path / "a.yaml").write_text("name: a\nsteps: 3\ninner:\n  lr: 0.5\n")
    (tmp_path / "b.yaml").write_text("steps: 4\ninner:\n  mask_ratio: 0.25\n")
    (tmp_path / "c.yaml").write_text("base: [a, b]\ninner:\n  lr: 0.125\n")
    cfg = load_config(Outer, "c", [], preset_dir=tmp_path)
    assert (cfg.name, cfg.steps, cfg.inner.lr, cfg.inner.mask_ratio) == ("a", 4, 0.125, 0.25)


def test_base_cycle_and_missing_preset(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("base: b\n")
    (tmp_path / "b.yaml").write_text("base: a\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(Outer, "a", [], preset_dir=tmp_path)
    with pytest.raises(ConfigError, match="presets: a, b"):
        load_config(Outer, "nope", [], preset_dir=tmp_path)


def test_yaml_is_safe(tmp_path: Path) -> None:
    (tmp_path / "evil.yaml").write_text("name: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(Exception, match="python/object"):
        load_config(Outer, tmp_path / "evil.yaml")


def test_parse_override_values() -> None:
    assert parse_override("a.b=[1, 2]") == (["a", "b"], [1, 2])
    assert parse_override("flag=true") == (["flag"], True)
    with pytest.raises(ConfigError):
        parse_override("novalue")
    with pytest.raises(ConfigError):
        parse_override(".a=1")
    with pytest.raises(ConfigError, match="not a section"):
        apply_overrides({"steps": 1}, ["steps.x=1"])


def test_dump_roundtrip(tmp_path: Path) -> None:
    cfg = load_config(Outer, None, ["inner.lr=0.125"])
    path = tmp_path / "run" / "config.yaml"
    dump_config(cfg, path)
    assert load_config(Outer, path) == cfg
