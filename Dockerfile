# jobmesh: the `peer` and `signal-server` binaries, and tesseract for the
# `ocr` capability, on Debian slim, as a non-root user.
#
#   docker build -t jobmesh .
#   docker run --rm -p 7070:7070 jobmesh signal-server --listen 0.0.0.0:7070 --open
#   docker run --rm jobmesh peer --signal ws://HOST:7070/ws --open --capabilities echo,thumbnail,ocr
#
# deploy/compose.yaml runs a signal-server and workers that `--scale`.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# The release profile (LTO) of the workspace; only the two binaries.
RUN cargo build --release --locked -p jobmesh-cli -p jobmesh-signal-server \
 && strip target/release/peer target/release/signal-server

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates tesseract-ocr tesseract-ocr-eng tini \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --create-home --home-dir /var/lib/jobmesh --uid 10001 jobmesh
COPY --from=build /src/target/release/peer /src/target/release/signal-server /usr/local/bin/
USER jobmesh
WORKDIR /var/lib/jobmesh
# Data (identity key, credential, journal) and the control socket live
# under the user's home; mount a volume on /var/lib/jobmesh to keep them.
ENV XDG_DATA_HOME=/var/lib/jobmesh/data \
    XDG_RUNTIME_DIR=/var/lib/jobmesh/run \
    JOBMESH_LOG=info
# tini reaps handler processes and forwards SIGTERM, so `docker stop`
# drains (running jobs get --grace-secs, 30 by default; give docker a
# longer stop timeout than that).
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["signal-server", "--help"]
