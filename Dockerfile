# syntax=docker/dockerfile:1
#
# streamapp: one image, two programs.
#
#   worker (default):  faust -A streamapp worker -l info        web on :6066
#   predictor:         streamapp predictor --host 0.0.0.0 --port 8080
#
# Build from the repository root:  docker build -t streamapp:0.1.0 .
# Every dependency installs from a binary wheel (--only-binary), so neither
# stage needs a compiler; the runtime stage gets only the virtualenv.

# The base image, pinned by digest: the multi-arch index of
# python:3.11-slim-bookworm as published on 2026-08-25 (Python 3.11.16).
# Docker pulls by the digest; the tag beside it says what it is. To move it
# on, take the "Digest:" line of
#   docker buildx imagetools inspect python:3.11-slim-bookworm
# (deploy/README.md, "The image").
ARG PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:0bee7276f83efd4a1ee05bbbf4281d95ed28e079220a9457f25a93e3f1e3c31b

# -- builder: the project's wheel and its dependencies in /opt/venv ---------------
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
# .dockerignore keeps this to setup.cfg, pyproject.toml, README.md and streamapp/
COPY . .
# Pinned build tools, used as they are (--no-build-isolation), so that the
# wheel is built the same way every time
RUN pip install pip==26.3 setuptools==80.9.0 wheel==0.46.3 \
 && pip wheel --no-build-isolation --no-deps --wheel-dir /wheels . \
 && pip install --only-binary=:all: /wheels/streamapp-*.whl \
 && python -c "import cv2, faust, numpy, streamapp.settings"

# -- runtime: slim, non-root, no build tools ---------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH \
    APP_DATADIR=/var/lib/streamapp \
    WEB_PORT=6066 \
    FAUST_LOOP=uvloop

# uid/gid 10001: above any host user, matched by runAsUser in deploy/k8s
RUN groupadd --system --gid 10001 streamapp \
 && useradd --system --uid 10001 --gid streamapp --home-dir /home/streamapp --create-home \
        --shell /usr/sbin/nologin streamapp \
 && install -d -o streamapp -g streamapp -m 0750 /var/lib/streamapp

COPY --from=builder /opt/venv /opt/venv

USER 10001:10001
WORKDIR /home/streamapp

# the worker's web server (GET /digits/, /metrics, the dashboard at /); the predictor uses 8080
EXPOSE 6066 8080

# The worker's health: its web server answers /digits/. The image has no curl,
# so Python asks. A predictor container replaces this with /v2/health/ready.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=4 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/digits/' % os.environ.get('WEB_PORT', '6066'), timeout=4)"]

# Faust stops on SIGTERM: it finishes in-flight work, commits and leaves the
# consumer group, so the others take over its partitions at once.
STOPSIGNAL SIGTERM
CMD ["faust", "-A", "streamapp", "worker", "-l", "info"]
