# The imgmod image: the CLI is the entrypoint (`worker`, `db upgrade`, `run ...`, `doctor`).
#
# Reproducible: the base image is pinned by version and digest (the digest as pinned by public
# projects for this tag; check it with `docker buildx imagetools inspect python:3.11.13-slim-bookworm`
# and bump tag and digest together), and every Python package comes from constraints.txt.
# The wheel carries the Alembic migrations (worker/_migrations), so the image holds no source.
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm@sha256:86adf8dbadc3d6e82ee5dd2c74bec2e1c2467cdad47886280501df722372d2e1

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY constraints.txt pyproject.toml README.md ./
COPY worker ./worker
COPY migrations ./migrations
# The build backend at its locked version, then the wheel built with it (no unpinned isolation env).
RUN pip install -c constraints.txt setuptools \
    && pip wheel --no-deps --no-build-isolation -w /dist .

FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
COPY --from=build /dist /tmp/dist
COPY constraints.txt /tmp/constraints.txt
RUN pip install -c /tmp/constraints.txt /tmp/dist/imgmod-*.whl \
    && rm -rf /tmp/dist /tmp/constraints.txt \
    && useradd --create-home --uid 10001 --user-group imgmod

USER imgmod
WORKDIR /home/imgmod
ENTRYPOINT ["imgmod"]
CMD ["--help"]
