# spectralearth-build in a container: `docker build -t spectralearth-build .` then
# `docker run --rm -v $PWD/data:/data spectralearth-build build --tiles /data/enmap --out /data/dataset`
FROM python:3.11-slim
WORKDIR /opt/spectralearth-build
COPY pyproject.toml README.md ./
COPY spectralearth_build ./spectralearth_build
COPY configs ./configs
RUN pip install --no-cache-dir .
ENTRYPOINT ["spectralearth-build"]
CMD ["--help"]
