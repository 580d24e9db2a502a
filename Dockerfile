# One image for the API and the worker (`binwatch serve` / `binwatch worker`); docs/deployment.md.
#
# torch comes from PyPI at the version constraints.txt pins: its Linux x86_64 wheels are CUDA builds that
# bring the CUDA runtime, cuDNN and NCCL as nvidia-* wheels (pinned there too), so no CUDA base image is
# needed. A GPU host only needs the NVIDIA driver and the NVIDIA Container Toolkit (`--gpus all`, or the
# compose file's device reservation); on a host without a GPU the same image runs on the CPU.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    # torch.cuda.is_available() via NVML: checking for a GPU does not initialise CUDA in the worker's
    # main process (a process that must never fork after CUDA is initialised).
    PYTORCH_NVML_BASED_CUDA_CHECK=1 \
    BINWATCH_HOME=/var/lib/binwatch

# libgomp: OpenMP for torch's CPU kernels; tini: PID 1 that forwards SIGTERM (docker stop, spot notices)
# to the worker, which then hands its job back to the queue.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 tini \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app

# Dependencies first, in their own layer: rebuilding after a code change does not download torch again.
COPY pyproject.toml constraints.txt ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt -c constraints.txt \
    && rm /tmp/requirements.txt

# Editable install: records.migrate runs the Alembic scripts from the checkout's alembic/ folder.
COPY . .
RUN pip install --no-deps -e . \
    && useradd --create-home --uid 10001 binwatch \
    && mkdir -p /var/lib/binwatch \
    && chown -R binwatch /var/lib/binwatch

USER binwatch
EXPOSE 8000
ENTRYPOINT ["tini", "--"]
CMD ["binwatch", "serve"]
