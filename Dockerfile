# One image for every xfs role: MRC, OSD, client (FUSE mount) and the init helper.
#   docker compose up --build      (see docker-compose.yml and README.md)
FROM python:3.11-slim-bookworm

# fuse3: fusermount3 and libfuse3 at run time; gcc, pkg-config and libfuse3-dev only to
# build pyfuse3, removed again in the same layer.
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY xfs ./xfs
RUN apt-get update \
    && apt-get install -y --no-install-recommends fuse3 gcc libfuse3-dev pkg-config \
    && pip install --no-cache-dir . \
    && apt-get purge -y --auto-remove gcc libfuse3-dev pkg-config \
    && rm -rf /var/lib/apt/lists/* /src

COPY docker/xfs-docker.sh /usr/local/bin/xfs-docker
RUN chmod 0755 /usr/local/bin/xfs-docker && mkdir -p /etc/xfs /var/lib/xfs /mnt/xfs
WORKDIR /
# xfs mrc|osd|mount stop cleanly on SIGTERM (in-flight requests get `grace` seconds).
STOPSIGNAL SIGTERM
CMD ["xfs", "--help"]
