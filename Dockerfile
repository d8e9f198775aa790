# syntax=docker/dockerfile:1
# drover as a container: `docker build -t drover .`, then
#   docker run -v /path/to/drover.toml:/etc/drover/drover.toml:ro -p 127.0.0.1:9187:9187 drover
# The default command is `drover --config /etc/drover/drover.toml run`; pass another command
# (`check`, `install`, `status`, `wait SYNC`) after the image name, with `--config` first.
#
# Base images are pinned to exact tags (a Rust release and a Debian point release), so a
# rebuild gets the same toolchain and libc; bump them deliberately. For byte-for-byte
# reproducible builds, add the digests your registry reports (`docker buildx imagetools
# inspect rust:1.95.0-bookworm`) as `@sha256:...` after each tag.

FROM rust:1.95.0-bookworm AS builder
WORKDIR /src
COPY . .
# The cache mounts keep the crate registry and build directory between builds (BuildKit);
# the binary is copied out of the cached target directory in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
    && cp target/release/drover /usr/local/bin/drover

FROM debian:12.12-slim
# CA certificates for sslmode=verify-ca/verify-full without a sslrootcert of one's own; curl
# for the HEALTHCHECK.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*
# A fixed numeric uid, so orchestrators can check runAsNonRoot; its home can hold ~/.pgpass.
RUN groupadd --system --gid 10001 drover \
    && useradd --system --uid 10001 --gid drover --create-home --home-dir /home/drover \
       --shell /usr/sbin/nologin drover
COPY --from=builder /usr/local/bin/drover /usr/local/bin/drover
USER 10001:10001
WORKDIR /home/drover
EXPOSE 9187
# /health answers 200 while the daemon serves (no token needed, even with
# daemon.api_token_for_reads). Set DROVER_HEALTH_URL when daemon.listen uses another port; the
# daemon must listen on 127.0.0.1 or 0.0.0.0 inside the container.
ENV DROVER_HEALTH_URL=http://127.0.0.1:9187/health
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD curl -fsS --max-time 4 -o /dev/null "$DROVER_HEALTH_URL" || exit 1
ENTRYPOINT ["drover"]
CMD ["--config", "/etc/drover/drover.toml", "run"]
