# Sluice gateway image. Build from the repository root:
#   docker build -f deploy/docker/gateway.Dockerfile -t sluice/gateway:dev .
# Stage 1 builds with Debian 12's packaged libraries (the same stack as CI); stage 2 carries
# only the binary and its runtime libraries, and runs as an unprivileged user.
ARG DEBIAN_IMAGE=debian:12-slim

FROM ${DEBIAN_IMAGE} AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential cmake pkg-config \
      libnng-dev libprotobuf-c-dev protobuf-c-compiler libh2o-dev libh2o-evloop-dev libuv1-dev \
      libhiredis-dev libyaml-dev libcyaml-dev libjansson-dev libssl-dev \
      libcurl4-openssl-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# Only the gateway target is built; the configure step still sees the whole project.
RUN cmake -S . -B /build -DCMAKE_BUILD_TYPE=Release -DSLUICE_CUDA=OFF -DBUILD_TESTING=OFF \
 && cmake --build /build -j"$(nproc)" --target sluice-gateway \
 && strip /build/gateway/sluice-gateway

FROM ${DEBIAN_IMAGE} AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends libnng1 libprotobuf-c1 libh2o0.13 \
      libh2o-evloop0.13 libuv1 libhiredis0.14 libyaml-0-2 libcyaml1 libjansson4 libssl3 \
      curl ca-certificates tini \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin sluice
COPY --from=build /build/gateway/sluice-gateway /usr/local/bin/sluice-gateway
USER 10001:10001
# 8000: the API; 9102: the admin port (/metrics) when run with --metrics-listen 0.0.0.0:9102
EXPOSE 8000 9102
# /health is liveness only (the process serves HTTP); readiness (/ready) is for orchestrators.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD curl -fsS -o /dev/null http://127.0.0.1:8000/health || exit 1
# tini is PID 1: it forwards SIGTERM (the gateway drains on it) and reaps zombies.
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/sluice-gateway"]
CMD ["--listen", "0.0.0.0:8000"]
