# Image of the GPU training jobs (variable `image` of prefect-work-pool-gpu.json). Build from the
# repository root:  docker build -f infra/k8s/images/train.Dockerfile -t REGISTRY/sidn/sidn-train:0.1.0 .
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu22.04
RUN apt-get update && apt-get install -y --no-install-recommends python3.11 python3.11-venv git \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/sidn
RUN python3.11 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH DO_NOT_TRACK=true MLFLOW_DISABLE_TELEMETRY=true DVC_NO_ANALYTICS=1 \
    GX_ANALYTICS_ENABLED=false PREFECT_SERVER_ANALYTICS_ENABLED=false
COPY pyproject.toml constraints.txt README.md ./
COPY sidn ./sidn
COPY pipelines ./pipelines
# CUDA build of torch (the Makefile pins the CPU build for the CPU machines): pass the PyTorch wheel
# index of your CUDA version as --build-arg TORCH_INDEX_URL=...
ARG TORCH_INDEX_URL
RUN pip install --no-cache-dir torch==2.13.0 ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} \
    && pip install --no-cache-dir -c constraints.txt '.[stack]'
RUN useradd -m -u 1000 sidn
USER 1000
