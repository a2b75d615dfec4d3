# CPU image for the Gradio demo: `docker build -t fracture-detector .` then
# `docker run -p 7860:7860 fracture-detector` (or `docker compose up`), and open http://localhost:7860/.
#
# NOT BUILT HERE: this file was written on a machine without a Docker engine, so the image has
# never been built or run. tests/test_docker.py checks what can be checked without one (every
# COPY source exists and reaches the build context, and the CMD serves the demo from a copy of
# exactly what is copied below); the CPU-index install line below is untested.

FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# A non-root user; its home holds the Hugging Face cache (a volume in docker-compose.yml).
# The cache folder is created here, owned by `app`, so a fresh named volume inherits that owner.
RUN useradd --create-home --uid 1000 app \
    && mkdir -p /home/app/.cache/huggingface \
    && chown -R app:app /home/app/.cache

WORKDIR /app

# Dependencies first, in their own layer: editing the source does not reinstall them.
# torch/torchvision from PyPI pull several GB of CUDA libraries; the PyTorch CPU index has
# CPU-only builds of the same versions (2.14.1+cpu satisfies requirements.txt's torch==2.14.1,
# so the second install keeps them and installs the rest from PyPI).
COPY requirements.txt ./
RUN pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu torch==2.14.1 torchvision==0.29.1 \
    && pip install --no-cache-dir -r requirements.txt

COPY pyproject.toml README.md app.py ./
COPY src/ src/

# A regular install: the bundled model and the example X-rays are package data of
# fracture_detector, found with importlib.resources wherever pip puts the package.
RUN pip install --no-cache-dir --no-deps .

USER app

# The bundled model's ONNX export (the package has no room for it) is built once here, into the app user's
# cache (~/.cache/fracture-detector), instead of at the container's first start.
RUN python -c "import fracture_detector; print(fracture_detector.load().backend)"

ENV GRADIO_SERVER_NAME=0.0.0.0 \
    GRADIO_SERVER_PORT=7860 \
    GRADIO_ANALYTICS_ENABLED=False \
    HF_HOME=/home/app/.cache/huggingface \
    HF_HUB_DISABLE_TELEMETRY=1

EXPOSE 7860

# slim has no curl; Python's urllib exits non-zero on a refused connection or an HTTP error.
# The port follows GRADIO_SERVER_PORT, so overriding it at `docker run -e` keeps the check right.
HEALTHCHECK --interval=30s --timeout=10s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/' % os.environ.get('GRADIO_SERVER_PORT', '7860'), timeout=5)"]

# The model: $MODEL_ID (hf-hub:ORG/NAME[@REV] or a folder inside the container), else the bundled one.
CMD ["python", "app.py"]
