# syntax=docker/dockerfile:1
# tgdp data-pipeline image: `tgdp-data` (manifest, fetch, validate, export, shard, ...) with ffmpeg, a JavaScript
# runtime for yt-dlp, and Ray, for one machine or for every node of a Ray cluster (docker/ray-cluster.yaml).
#
# Build from the repository root (the build context must be the root, not docker/):
#   docker build -f docker/pipeline.Dockerfile -t tgdp-pipeline:latest .
#   # smaller image with CPU-only torch wheels, where the pinned versions are published on that index:
#   docker build -f docker/pipeline.Dockerfile --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu \
#     -t tgdp-pipeline:cpu .
# Run (the pipeline ROOT is a bind mount; cookies, if any, are a read-only secret mount, never baked in):
#   docker run --rm --init -v /mnt/tgdp:/mnt/tgdp tgdp-pipeline:latest status /mnt/tgdp/root
#
# Install steps mirror the Makefile's `pip install -e '.[dev]'`: the same pyproject.toml, installed as a regular
# (non-editable) package without the dev extra. The torch stack is installed first, pinned to the same versions as
# pyproject.toml (tests/docker/test_docker_files.py fails when they drift), so that layer is cached across code edits.
# TORCH_INDEX_URL is empty by default = PyPI, whose Linux wheels bundle CUDA libraries (several GB); the pipeline
# never uses a GPU, so the CPU index is preferred when it carries these exact versions (a local label such as
# `2.14.1+cpu` satisfies pyproject's `torch==2.14.1`, so the later `pip install .` keeps it).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
FROM ${PYTHON_IMAGE}

ARG TORCH_INDEX_URL=""
# yt-dlp is bumped often during a long crawl (SABR, JS challenges): rebuild with --build-arg YT_DLP_VERSION=...
# and rerun the transient failures; every fetch attempt records the yt_dlp_version it ran with.
ARG YT_DLP_VERSION=2026.10.26
# Inside pyproject's `ray[data]>=2.40`; the test suite checks that it stays inside.
ARG RAY_VERSION=2.60.0

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    RAY_USAGE_STATS_ENABLED=0 \
    LC_ALL=C.UTF-8 \
    LANG=C.UTF-8

# ffmpeg/ffprobe: cutting, probing and decoding. rsync + openssh-client: the Ray cluster launcher syncs its
# bootstrap files into the container with `rsync -e 'docker exec -i'`. Distribution package versions are not
# pinned: the Debian release in the base tag fixes them and security updates should flow in on rebuild.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ffmpeg rsync openssh-client ca-certificates \
    && rm -rf /var/lib/apt/lists/*

# Login shells (`bash --login`, which the Ray cluster launcher uses for every command) reset PATH from /etc/profile:
# put the venv back in front there too.
# hadolint ignore=SC2016
RUN printf 'export PATH="%s/bin:$PATH"\n' "$VIRTUAL_ENV" > /etc/profile.d/tgdp-venv.sh

# Non-root user with a writable HOME (Ray writes ~/ray_bootstrap_config.yaml and its session dirs there). It owns the
# venv, as in Ray's own images, so a cluster's setup_commands can `pip install` extras (boto3 for the AWS launcher).
# USER is numeric so Kubernetes' runAsNonRoot can verify it; files written to bind mounts are owned by uid 1000.
RUN useradd --create-home --uid 1000 --user-group --shell /bin/bash tgdp \
    && install -d -o 1000 -g 1000 "$VIRTUAL_ENV" /opt/tgdp
USER 1000:1000

# Pinned torch stack (must equal pyproject.toml [project.dependencies]). pip builds the project later in an isolated
# environment with pyproject's [build-system] requirements, so the venv needs nothing beyond its bundled pip.
RUN python -m venv "$VIRTUAL_ENV" \
    && if [ -n "$TORCH_INDEX_URL" ]; then export PIP_INDEX_URL="$TORCH_INDEX_URL"; fi \
    && pip install "torch==2.14.1" "torchvision==0.29.1" "torchaudio==2.11.0"

WORKDIR /opt/tgdp
COPY --chown=1000:1000 pyproject.toml README.md ./
COPY --chown=1000:1000 core ./core
COPY --chown=1000:1000 config ./config
COPY --chown=1000:1000 pipeline ./pipeline
COPY --chown=1000:1000 store ./store
COPY --chown=1000:1000 model ./model
COPY --chown=1000:1000 train ./train
COPY --chown=1000:1000 eval ./eval
COPY --chown=1000:1000 manifests ./manifests
COPY --chown=1000:1000 experiments ./experiments

# The project; Ray pinned, because every node of a cluster and the `ray up` client must run the same Ray version, with
# the `default` extra for the dashboard, job submission and the autoscaler; yt-dlp with its `default` extra (pulls
# yt-dlp-ejs, the external JS challenge solver) and its `deno` extra (Deno from PyPI, yt-dlp's default JS runtime,
# on PATH as /opt/venv/bin/deno).
RUN pip install . "ray[default,data]==${RAY_VERSION}" "yt-dlp[default,deno]==${YT_DLP_VERSION}" \
    && tgdp-data --help >/dev/null \
    && ffmpeg -hide_banner -version >/dev/null \
    && ffprobe -hide_banner -version >/dev/null \
    && deno --version \
    && python -c "import yt_dlp, yt_dlp_ejs, ray, pyarrow; print('yt-dlp', yt_dlp.version.__version__, 'ray', ray.__version__)"

WORKDIR /home/tgdp

ENTRYPOINT ["tgdp-data"]
CMD ["--help"]
