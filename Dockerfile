# spectralearth-build in a container. Build (add the torch training stack with EXTRAS=train):
#   docker build -t spectralearth-build .
#   docker build -t spectralearth-build:train --build-arg EXTRAS=train .
# Run (the entry point is build-dataset; mount the archive read-only and a folder for the output):
#   docker run --rm --user "$(id -u):$(id -g)" -v "$PWD/enmap:/data/enmap:ro" \
#     -v "$PWD/datasets:/data/out" spectralearth-build --tiles /data/enmap --out /data/out/se-v1
# Other commands: --entrypoint spectralearth-build (report, quicklook, info, scan, plan, synth).
FROM python:3.11-slim

# Optional extras of the package, comma-separated: "train", "jobqueue", "train,jobqueue".
ARG EXTRAS=""

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MPLBACKEND=Agg \
    MPLCONFIGDIR=/tmp/matplotlib

WORKDIR /opt/spectralearth-build
COPY pyproject.toml README.md ./
COPY spectralearth_build ./spectralearth_build
COPY configs ./configs
# The local package is installed with its declared dependency ranges (pyproject.toml).
# hadolint ignore=DL3013
RUN pip install --no-cache-dir ".${EXTRAS:+[${EXTRAS}]}" \
    && useradd --create-home --uid 10001 --user-group --shell /usr/sbin/nologin seb \
    && mkdir -p /data \
    && chown seb:seb /data

USER 10001:10001
WORKDIR /data
ENTRYPOINT ["build-dataset"]
CMD ["--help"]
