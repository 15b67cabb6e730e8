# syntax=docker/dockerfile:1
# Two images from one file, each as a CPU (default) or GPU build:
#   docker build --target gateway      -t gateway:cpu .
#   docker build --target model-server -t gateway-model-server:cpu .
#   docker build --target gateway      --build-arg VARIANT=gpu -t gateway:gpu .
#   docker build --target model-server --build-arg VARIANT=gpu -t gateway-model-server:gpu .
# VARIANT=gpu swaps onnxruntime for onnxruntime-gpu (the classifier's CUDA provider) and keeps
# the CUDA build of torch; the CUDA libraries come as Python wheels, the driver from the host
# (NVIDIA container toolkit; GPUs are granted per container by compose or Kubernetes, never
# by the image), so both variants share the slim Python base.
# TORCH_INDEX_URL: an extra package index for torch (e.g. a CPU-only wheel index, for a much
# smaller CPU model-server image); empty means the default index.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- build: a virtual environment with the dependencies, then the package removed ------------
FROM ${PYTHON_IMAGE} AS build-base
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY gateway ./gateway

FROM build-base AS build-gateway
ARG VARIANT=cpu
RUN pip install -c constraints.txt ".[tokenizer]" \
 && if [ "$VARIANT" = "gpu" ]; then \
      pip uninstall -y onnxruntime && pip install -c constraints.txt "onnxruntime-gpu>=1.17"; \
    fi \
 && pip uninstall -y gateway

FROM build-base AS build-model-server
ARG VARIANT=cpu
ARG TORCH_INDEX_URL=
# constraints.txt pins the CPU build of torch for CI; images pick their own torch build.
RUN grep -v '^torch==' constraints.txt > /tmp/constraints.txt \
 && pip install -c /tmp/constraints.txt ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"} \
      ".[torch,tokenizer]" \
 && pip uninstall -y gateway

# --- runtime: slim, non-root, the source on PYTHONPATH (its model artifacts included) --------
FROM ${PYTHON_IMAGE} AS runtime
ARG VARIANT=cpu
ENV PATH=/opt/venv/bin:$PATH PYTHONPATH=/app PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    GATEWAY_REQUEST_LOG_SPILL_DIR=/var/lib/gateway/spill
RUN groupadd --system --gid 10001 gateway \
 && useradd --system --uid 10001 --gid gateway --home-dir /app --shell /usr/sbin/nologin gateway \
 && mkdir -p /var/lib/gateway/spill && chown -R gateway:gateway /var/lib/gateway
WORKDIR /app
COPY --chown=root:root gateway ./gateway
VOLUME ["/var/lib/gateway/spill"]

FROM runtime AS model-server
ARG VARIANT=cpu
ENV GATEWAY_MODEL_DEVICE=auto HEALTH_PORT=8001
COPY --from=build-model-server /opt/venv /opt/venv
USER 10001:10001
EXPOSE 8001
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ['HEALTH_PORT'] + '/healthz', timeout=2)"]
ENTRYPOINT ["python", "-m", "gateway.cli"]
CMD ["model-server", "--host", "0.0.0.0", "--port", "8001"]

# The default target (last): the gateway.
FROM runtime AS gateway
ARG VARIANT=cpu
ENV GATEWAY_CLASSIFIER_DEVICE=auto HEALTH_PORT=8000
COPY --from=build-gateway /opt/venv /opt/venv
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ['HEALTH_PORT'] + '/healthz', timeout=2)"]
ENTRYPOINT ["python", "-m", "gateway.cli"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000", "--workers", "2"]
