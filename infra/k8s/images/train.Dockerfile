# Image of the GPU training jobs (variable `image` of prefect-work-pool-gpu.json, and of
# jobs/seed-workspace.yaml). Build from the repository root (.dockerignore keeps data, runs,
# virtual environments, .infra/ and .dvc/config.local out of the build context):
#
#   docker build -f infra/k8s/images/train.Dockerfile \
#       --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 \
#       -t REGISTRY/sidn/sidn-train:0.1.0 .
#
# The repository is /opt/sidn, installed editable: pipelines.layout.REPO_ROOT is /opt/sidn, so
# params.yaml, dvc.yaml, dvc.lock, .dvc/config and prefect.yaml are read from there (a regular
# install would look for them in site-packages). data/ and runs/ are where the Jobs mount the
# PersistentVolumeClaim sidn-workspace (infra/k8s/storage.yaml); nothing of them is in the image.
# tests/integration/test_infra.py lists the files this Dockerfile puts into the image and checks them.
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu22.04
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update && apt-get install -y --no-install-recommends python3.11 python3.11-venv git ca-certificates \
    && rm -rf /var/lib/apt/lists/*
RUN useradd -m -u 1000 sidn && python3.11 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH DO_NOT_TRACK=true MLFLOW_DISABLE_TELEMETRY=true DVC_NO_ANALYTICS=1 \
    GX_ANALYTICS_ENABLED=false PREFECT_SERVER_ANALYTICS_ENABLED=false
WORKDIR /opt/sidn

# CUDA build of torch first, in its own layer (the Makefile pins the CPU build for the CPU
# machines): pass the PyTorch wheel index of your CUDA version as --build-arg TORCH_INDEX_URL=...
ARG TORCH_INDEX_URL
RUN pip install --no-cache-dir torch==2.13.0 ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}

# What the package build needs, the pipeline definitions (DVC and Prefect), then the code.
COPY pyproject.toml constraints.txt README.md ./
COPY dvc.yaml dvc.lock params.yaml prefect.yaml .dvcignore ./
COPY .dvc/config .dvc/config
COPY sidn ./sidn
COPY pipelines ./pipelines
# stack: Prefect, DVC, MLflow...; k8s: prefect-kubernetes (the worker type of the pool sidn-gpu)
RUN pip install --no-cache-dir -c constraints.txt -e '.[stack,k8s]' \
    && mkdir -p data runs reports \
    && chown -R sidn:sidn /opt/sidn

USER 1000
# DVC needs a git repository (a fresh one: the image carries no history, so MLflow runs record
# git_commit "unknown"); owned by the user the Jobs run as, or git refuses it.
RUN git init -q /opt/sidn
