"""The `config` view every CLI shares (`tgdp-data config`, `tgdp-eval config`, `tgdp-train --show-config`): a
resolved config's keys as a table, `--json`, or commented YAML. Named cli.py because it prints through typer."""

from __future__ import annotations

import json
from typing import Any

import typer

from tgdp.config import ConfigError, commented_yaml, config_keys
from tgdp.core.cli import dumps_json, wide_console

__all__ = ["print_config"]


def print_config(cfg: Any, section: str | None = None, show: bool = False, as_json: bool = False) -> None:
    """Print a resolved config's keys (type, value, default, help) as a table, `--json` or (`show`) commented YAML;
    `section` keeps the keys under it (`validate`, `optim`, or one key)."""
    keys = config_keys(cfg)
    if section:
        keys = [k for k in keys if k.key == section or k.key.startswith(section + ".")]
        if not keys:
            sections = sorted({k.key.split(".")[0] for k in config_keys(cfg)})
            raise ConfigError(f"no config section or key {section!r}; sections: {', '.join(sections)}")
    if show:
        typer.echo(commented_yaml(cfg).rstrip("\n"))
    elif as_json:
        typer.echo(dumps_json([k.as_dict() for k in keys]))
    else:
        from rich.table import Table

        table = Table(title=f"{type(cfg).__name__}: {len(keys)} keys (--set key=value)", title_justify="left")
        table.add_column("key", no_wrap=True, style="bold")
        table.add_column("type", overflow="fold")
        table.add_column("value (default)", overflow="fold")
        table.add_column("help")
        for k in keys:
            value = json.dumps(k.value)
            if k.required or k.value != k.default:
                value = f"[yellow]{value}[/] ({'required' if k.required else 'default ' + json.dumps(k.default)})"
            table.add_row(k.key, k.type, value, k.help)
        wide_console().print(table, highlight=False)
