# syntax=docker/dockerfile:1
# tgdp training/evaluation image: `tgdp-train` (and `tgdp-eval`, `torchrun`) on NVIDIA GPUs.
#
# Build from the repository root:
#   docker build -f docker/train.Dockerfile -t tgdp-train:latest .
# One node, all its GPUs (the Arrow store and run dirs are bind mounts; DataLoader workers need a large /dev/shm):
#   docker run --rm --gpus all --ipc=host -v /mnt/tgdp:/mnt/tgdp tgdp-train:latest \
#     --config tgdp_base --store /mnt/tgdp/store --run-dir /mnt/tgdp/runs/tgdp_base
# Several nodes: docker/torchrun-multinode.sh (torchrun) or docker/slurm-train.sbatch (SLURM); inside this image
# use `--entrypoint torchrun` and `-m tgdp.train.cli` as the script.
#
# CUDA: the pinned wheel torch==2.14.1 on PyPI is built for CUDA 13.0 (`torch.version.cuda` == "13.0") and brings its
# own CUDA runtime, cuDNN and NCCL as pip packages (nvidia-*-cu13). The base image supplies the NVIDIA container
# settings (NVIDIA_VISIBLE_DEVICES, NVIDIA_DRIVER_CAPABILITIES) and the CUDA 13.0 forward-compatibility libraries;
# the host needs a driver that supports CUDA 13.0 (R580 or newer) and the NVIDIA container toolkit. Its own cuDNN is
# redundant with the wheel's: `--build-arg CUDA_IMAGE=nvidia/cuda:13.0.0-base-ubuntu24.04` gives a smaller image that
# works the same way.
# Python: Ubuntu 24.04 ships Python 3.12 only; the project supports >=3.10 and the pinned torch stack publishes
# cp312 wheels, so the distribution's interpreter is used (no third-party PPA).

ARG CUDA_IMAGE=nvidia/cuda:13.0.0-cudnn-runtime-ubuntu24.04
FROM ${CUDA_IMAGE}

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    RAY_USAGE_STATS_ENABLED=0 \
    LC_ALL=C.UTF-8 \
    LANG=C.UTF-8

# NCCL / torch.distributed defaults (override with `docker run -e` or in the launch scripts):
# - NCCL_DEBUG=WARN prints NCCL's own errors without the INFO flood; set INFO to debug a hang or a slow ring.
# - TORCH_NCCL_ASYNC_ERROR_HANDLING=1: a rank whose collective fails or times out aborts the process group, so the
#   job exits (and torchrun/SLURM can restart it from the last checkpoint) instead of hanging.
# - TORCH_NCCL_DUMP_ON_TIMEOUT=1: on a collective timeout, each rank dumps its flight-recorder trace, showing which
#   rank stopped calling collectives (usually a rank that raised, skipped a step or has a different batch count).
# Left unset on purpose, because they depend on the cluster: NCCL_SOCKET_IFNAME (the NIC that the nodes reach each
# other on, e.g. eth0 or ib0), NCCL_IB_DISABLE=1 (no InfiniBand/RoCE), NCCL_P2P_DISABLE=1 (broken PCIe P2P).
ENV NCCL_DEBUG=WARN \
    TORCH_NCCL_ASYNC_ERROR_HANDLING=1 \
    TORCH_NCCL_DUMP_ON_TIMEOUT=1

# python3-venv for the virtualenv; ffmpeg so `tgdp-data synth/validate/shard` and media checks also run here.
# Distribution package versions are not pinned: the Ubuntu release in the base tag fixes them.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv ffmpeg ca-certificates \
    && rm -rf /var/lib/apt/lists/*

# Login shells (`bash --login`, which the Ray cluster launcher uses for every command) reset PATH from /etc/profile:
# put the venv back in front there too.
# hadolint ignore=SC2016
RUN printf 'export PATH="%s/bin:$PATH"\n' "$VIRTUAL_ENV" > /etc/profile.d/tgdp-venv.sh

# Pinned torch stack (must equal pyproject.toml [project.dependencies]); PyPI's Linux wheels are the cu130 builds.
RUN python3 -m venv "$VIRTUAL_ENV" \
    && pip install "torch==2.14.1" "torchvision==0.29.1" "torchaudio==2.11.0"

WORKDIR /opt/tgdp
COPY pyproject.toml README.md ./
COPY core ./core
COPY config ./config
COPY pipeline ./pipeline
COPY store ./store
COPY model ./model
COPY train ./train
COPY eval ./eval
COPY manifests ./manifests
COPY experiments ./experiments
# The multi-node launcher, as `tgdp-torchrun` (keeps its executable bit from git).
COPY docker/torchrun-multinode.sh /usr/local/bin/tgdp-torchrun

# Same pyproject as the Makefile's `pip install -e '.[dev]'`, as a regular install without the dev extra.
RUN pip install . \
    && tgdp-train --help >/dev/null \
    && tgdp-eval --help >/dev/null \
    && bash -n /usr/local/bin/tgdp-torchrun \
    && ffmpeg -hide_banner -version >/dev/null \
    && python -c "import torch; assert torch.version.cuda and torch.version.cuda.startswith('13.'), torch.version.cuda"

# Non-root user, uid 1000 (Ubuntu 24.04 images ship a `ubuntu` user with that uid: it is removed first).
RUN if id ubuntu >/dev/null 2>&1; then userdel --remove ubuntu; fi \
    && useradd --create-home --uid 1000 --user-group --shell /bin/bash tgdp
USER 1000:1000
WORKDIR /home/tgdp

ENTRYPOINT ["tgdp-train"]
CMD ["--help"]
