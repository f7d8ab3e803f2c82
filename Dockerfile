# The imgmod image: the CLI is the entrypoint (`worker`, `db upgrade`, `run ...`, `doctor`).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY worker ./worker
COPY migrations ./migrations
# Editable on purpose: the Alembic migrations live beside the package (migrations/), where
# `imgmod db upgrade` finds them; a plain wheel install would leave them behind.
RUN pip install -e . \
    && useradd --create-home --uid 10001 --user-group imgmod

USER imgmod
WORKDIR /home/imgmod
ENTRYPOINT ["imgmod"]
CMD ["--help"]
