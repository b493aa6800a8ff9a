"""Static checks of docker/: the images, the Ray cluster configs and the launch scripts must not drift from the project.

No Docker engine is needed: the Dockerfiles are parsed as text (and linted with hadolint when it is on PATH), the
shell scripts are syntax-checked with `bash -n` (and shellcheck when present), and the Ray configs are checked against
the schema that ships inside the installed Ray package.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.version import Version

tomllib = pytest.importorskip("tomllib", reason="needs Python >= 3.11 (tomllib)")

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
IMAGES = {"pipeline": "tgdp-data", "train": "tgdp-train"}
TORCH_STACK = ("torch", "torchvision", "torchaudio")
SCRIPTS = ("torchrun-multinode.sh", "slurm-train.sbatch")
RAY_CONFIGS = ("ray-cluster.yaml", "ray-cluster-aws.yaml")


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


def _requirements() -> dict[str, Requirement]:
    reqs = [Requirement(r) for r in _pyproject()["project"]["dependencies"]]
    return {r.name.lower(): r for r in reqs}


def _instructions(name: str) -> list[tuple[str, str]]:
    """Dockerfile → [(INSTRUCTION, arguments)] with line continuations joined and comments dropped."""
    text = (DOCKER / f"{name}.Dockerfile").read_text(encoding="utf-8")
    out: list[tuple[str, str]] = []
    buf = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if buf and stripped.startswith("#"):
            continue  # comment lines inside a continued RUN
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        buf += stripped
        keyword, _, args = buf.partition(" ")
        out.append((keyword.upper(), args.strip()))
        buf = ""
    assert not buf, f"{name}.Dockerfile ends inside a continued instruction"
    return out


def _runs(name: str) -> list[str]:
    return [args for kw, args in _instructions(name) if kw == "RUN"]


def _args(name: str) -> dict[str, str]:
    out = {}
    for kw, args in _instructions(name):
        if kw == "ARG" and "=" in args:
            key, value = args.split("=", 1)
            out[key] = value.strip('"')
    return out


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_torch_stack_pins_match_pyproject(name: str) -> None:
    reqs = _requirements()
    text = " ".join(_runs(name))
    for pkg in TORCH_STACK:
        spec = [s for s in reqs[pkg].specifier if s.operator == "=="]
        assert spec, f"pyproject must pin {pkg} with =="
        found = re.findall(rf"[\"' ]{pkg}==([0-9][^\"'\s]*)", text)
        assert found, f"{name}.Dockerfile does not pin {pkg}"
        assert set(found) == {spec[0].version}, f"{name}.Dockerfile pins {pkg}=={found}, pyproject has {spec[0]}"


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_ffmpeg_installed_from_apt(name: str) -> None:
    apt = [r for r in _runs(name) if "apt-get install" in r]
    assert any(re.search(r"\bffmpeg\b", r) for r in apt), f"{name}.Dockerfile does not apt-get install ffmpeg"
    assert all("rm -rf /var/lib/apt/lists" in r for r in apt), "apt lists must be removed in the same layer"


def test_pipeline_image_has_js_runtime_for_yt_dlp() -> None:
    runs = " ".join(_runs("pipeline"))
    match = re.search(r"yt-dlp\[([a-z,-]+)\]", runs)
    assert match, "pipeline image must install yt-dlp with extras"
    extras = set(match.group(1).split(","))
    assert "default" in extras, "yt-dlp[default] pulls yt-dlp-ejs"
    apt_runtime = re.search(r"apt-get install[^&]*\b(nodejs|deno)\b", runs)
    assert "deno" in extras or apt_runtime, "no JavaScript runtime for yt-dlp"
    assert "deno --version" in runs or "node --version" in runs, "the build must prove the JS runtime runs"


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_pinned_tool_versions_satisfy_pyproject(name: str) -> None:
    reqs = _requirements()
    args = _args(name)
    for arg, pkg in (("RAY_VERSION", "ray"), ("YT_DLP_VERSION", "yt-dlp")):
        if arg in args:
            assert reqs[pkg].specifier.contains(Version(args[arg])), f"{arg}={args[arg]} outside {reqs[pkg]}"


@pytest.mark.parametrize(("name", "script"), sorted(IMAGES.items()))
def test_entrypoint_is_an_existing_console_script(name: str, script: str) -> None:
    entry = [json.loads(args) for kw, args in _instructions(name) if kw == "ENTRYPOINT"]
    assert entry and entry[-1] == [script], f"{name}.Dockerfile ENTRYPOINT must be [{script!r}] (exec form)"
    target = _pyproject()["project"]["scripts"].get(script)
    assert target, f"{script} is not a console script in pyproject.toml"
    module, _, attr = target.partition(":")
    assert callable(getattr(importlib.import_module(module), attr)), f"{target} is not callable"
    assert f"{script} --help" in " ".join(_runs(name)), f"{name} image build must smoke-test {script}"


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_image_copies_every_package_and_runs_non_root(name: str) -> None:
    instr = _instructions(name)
    copied = set()
    for kw, args in instr:
        if kw == "COPY":
            parts = [p for p in args.split() if not p.startswith("--")]
            copied.update(p.rstrip("/") for p in parts[:-1])
    package_dirs = set(_pyproject()["tool"]["setuptools"]["package-dir"].values())
    assert package_dirs | {"pyproject.toml"} <= copied, f"{name} image misses {package_dirs - copied}"
    for src in copied:
        assert (REPO / src).exists(), f"{name}.Dockerfile copies {src}, which is not in the repository"
    # BuildKit uses <Dockerfile>.dockerignore: an allow-list that must admit every COPY source.
    ignore = (DOCKER / f"{name}.Dockerfile.dockerignore").read_text(encoding="utf-8").splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert "*" in ignore and copied <= allowed, f"dockerignore must allow {copied - allowed}"
    users = [args for kw, args in instr if kw == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), f"{name} image must end as a non-root USER"


@pytest.mark.parametrize("script", SCRIPTS)
def test_shell_scripts_parse(script: str) -> None:
    path = DOCKER / script
    proc = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    if shutil.which("shellcheck"):
        proc = subprocess.run(["shellcheck", str(path)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout


def test_torchrun_script_builds_the_launch_command() -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "DRY_RUN": "1",
        "NNODES": "2",
        "GPUS": "8",
        "MASTER": "node-0",
        "STORE": "/mnt/tgdp/store",
        "RUN_DIR": "/mnt/tgdp/runs/base run",
    }
    script = str(DOCKER / "torchrun-multinode.sh")
    proc = subprocess.run(["bash", script, "--set", "optim.lr=1e-4"], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    words = proc.stdout.split()
    assert words[0] == "torchrun"
    for flag in ("--nnodes=2", "--nproc-per-node=8", "--rdzv-backend=c10d", "--rdzv-endpoint=node-0:29500"):
        assert flag in words
    tail = words[words.index("-m") :]
    assert tail[:7] == ["-m", "tgdp.train.cli", "--config", "tgdp_base", "--store", "/mnt/tgdp/store", "--run-dir"]
    assert tail[-3:] == ["--resume", "--set", "optim.lr=1e-4"]
    assert "base\\ run" in proc.stdout  # paths are shell-quoted in the printed command
    proc = subprocess.run(["bash", script], env={**env, "RESUME": "0"}, capture_output=True, text=True)
    assert proc.returncode == 0 and "--resume" not in proc.stdout.split()
    del env["NNODES"]
    proc = subprocess.run(["bash", script], env=env, capture_output=True, text=True)
    assert proc.returncode != 0 and "NNODES" in proc.stderr


def test_torchrun_script_matches_train_cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The flags the launch script passes must exist on `tgdp.train.cli` (the module torchrun runs with -m)."""
    cli = importlib.import_module("tgdp.train.cli")
    assert "__main__" in Path(cli.__file__).read_text(encoding="utf-8"), "`python -m tgdp.train.cli` must run the app"
    monkeypatch.setenv("COLUMNS", "200")
    try:
        cli.app(["--help"], prog_name="tgdp-train", standalone_mode=False)
    except RuntimeError as exc:  # typer: an app without commands cannot build its CLI
        pytest.skip(f"tgdp-train has no command registered yet ({exc})")
    help_text = capsys.readouterr().out
    for flag in ("--config", "--store", "--run-dir", "--resume"):
        assert flag in help_text, f"tgdp-train has no {flag}; update docker/torchrun-multinode.sh"


def test_slurm_script_uses_the_torchrun_launcher() -> None:
    text = (DOCKER / "slurm-train.sbatch").read_text(encoding="utf-8")
    directives = re.findall(r"^#SBATCH (--[a-z-]+)", text, flags=re.M)
    assert {"--nodes", "--ntasks-per-node", "--gpus-per-node"} <= set(directives)
    assert "docker/torchrun-multinode.sh" in text and "tgdp-torchrun" in text
    assert "COPY docker/torchrun-multinode.sh /usr/local/bin/tgdp-torchrun" in (DOCKER / "train.Dockerfile").read_text(
        encoding="utf-8"
    )


@pytest.mark.parametrize("config", RAY_CONFIGS)
def test_ray_cluster_config(config: str) -> None:
    cfg = yaml.safe_load((DOCKER / config).read_text(encoding="utf-8"))
    docker = cfg["docker"]
    assert docker["image"].rsplit("/", 1)[-1].split(":")[0] == "tgdp-pipeline"
    options = " ".join(docker["run_options"])
    # The launcher runs `docker run ... IMAGE bash`; the image's tgdp-data ENTRYPOINT would swallow that.
    assert '--entrypoint=""' in options
    assert "-v /mnt/tgdp:/mnt/tgdp" in options, "shared storage must be mounted at the same path on every node"
    spec = importlib.util.find_spec("ray")  # locates the package without importing Ray
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("ray not installed")
    schema_path = Path(next(iter(spec.submodule_search_locations))) / "autoscaler" / "ray-schema.json"
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(cfg, json.loads(schema_path.read_text(encoding="utf-8")))


def test_hadolint_passes() -> None:
    exe = shutil.which("hadolint")
    if exe is None:
        pytest.skip("hadolint not on PATH")
    files = [str(DOCKER / f"{name}.Dockerfile") for name in sorted(IMAGES)]
    proc = subprocess.run([exe, *files], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
