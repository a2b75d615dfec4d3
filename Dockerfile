# The demo's image, serving without PyTorch: `docker build -t fracture-detector .`, then
# `docker run -p 7860:7860 fracture-detector` (or `docker compose up`) and open http://localhost:7860/.
#
# Two stages: `build` installs the serving install (`pip install fracture-detector`, no extras: ONNX
# Runtime, Gradio, NumPy, Pillow) into a virtual environment; the final stage copies only that
# environment onto a clean base, with no compiler, pip cache or PyTorch. The bundled model ships its
# model.onnx inside the package, so nothing is exported at build or start time.
#
# Where no image registry or package index can be reached (tests/test_container.py builds it so):
#   scripts/docker_base.sh fracture-detector-base:bookworm     # Debian + Python 3.11, by debootstrap
#   python scripts/wheelhouse.py wheelhouse                     # the wheels, downloaded on the host
#   docker build --build-arg BASE_IMAGE=fracture-detector-base:bookworm \
#       --build-arg PIP_NO_INDEX=1 --build-arg PIP_FIND_LINKS=/wheelhouse -t fracture-detector .

ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
# pip reads these from the environment: unset, it uses PyPI; set, only the copied wheelhouse.
ARG PIP_NO_INDEX
ARG PIP_FIND_LINKS
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN python3 -m venv /opt/venv
WORKDIR /src
COPY wheelhouse/ /wheelhouse/
# Dependencies first, in their own layer: editing the source does not reinstall them. They are
# pyproject.toml's own list (the serving install), at requirements.txt's tested versions.
COPY requirements.txt pyproject.toml ./
RUN python3 -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > serving-requirements.txt \
    && /opt/venv/bin/pip install -r serving-requirements.txt -c requirements.txt
# A regular install, not editable: the bundled model and the example X-rays are package data.
COPY README.md ./
COPY src/ src/
RUN /opt/venv/bin/pip install --no-deps .

FROM ${BASE_IMAGE}
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:$PATH

# A non-root user; its home holds the Hugging Face cache (a volume in docker-compose.yml).
# The cache folder is created here, owned by `app`, so a fresh named volume inherits that owner.
RUN useradd --create-home --uid 1000 app \
    && mkdir -p /home/app/.cache/huggingface \
    && chown -R app:app /home/app/.cache

COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY app.py ./
USER app

# Fails the build unless the bundled model loads and runs on ONNX Runtime, with no PyTorch in the image.
RUN python -c "import importlib.util, fracture_detector; assert importlib.util.find_spec('torch') is None; \
print(fracture_detector.load().backend)" | grep -qx onnxruntime

ENV GRADIO_SERVER_NAME=0.0.0.0 \
    GRADIO_SERVER_PORT=7860 \
    GRADIO_ANALYTICS_ENABLED=False \
    HF_HOME=/home/app/.cache/huggingface \
    HF_HUB_DISABLE_TELEMETRY=1

EXPOSE 7860

# No curl in the image; Python's urllib exits non-zero on a refused connection or an HTTP error.
# The port follows GRADIO_SERVER_PORT, so overriding it at `docker run -e` keeps the check right.
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/' % os.environ.get('GRADIO_SERVER_PORT', '7860'), timeout=5)"]

# The model: $MODEL_ID (hf-hub:ORG/NAME[@REV] or a folder inside the container), else the bundled one.
CMD ["python", "app.py"]
