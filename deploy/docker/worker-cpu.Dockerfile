# Sluice worker image, CPU backend. Build from the repository root:
#   docker build -f deploy/docker/worker-cpu.Dockerfile -t sluice/worker-cpu:dev .
# The model is NOT baked in: mount it at /models (docker-compose.yml, or the k8s init
# container that downloads and checks it). Non-root; the binary only needs /models readable.
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
RUN cmake -S . -B /build -DCMAKE_BUILD_TYPE=Release -DSLUICE_CUDA=OFF -DBUILD_TESTING=OFF \
 && cmake --build /build -j"$(nproc)" --target sluice-worker \
 && strip /build/worker/service/sluice-worker

FROM ${DEBIAN_IMAGE} AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends libnng1 libprotobuf-c1 libhiredis0.14 \
      libyaml-0-2 libcyaml1 libjansson4 curl ca-certificates tini \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin sluice \
 && mkdir -p /models && chown 10001:10001 /models
COPY --from=build /build/worker/service/sluice-worker /usr/local/bin/sluice-worker
USER 10001:10001
# 5555: nng (gateways dial it); 9100: /health /ready /metrics
EXPOSE 5555 9100
# Model load + warm-up take a while: a long start period before failures count.
HEALTHCHECK --interval=10s --timeout=3s --start-period=300s --retries=3 \
  CMD curl -fsS -o /dev/null http://127.0.0.1:9100/health || exit 1
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/sluice-worker"]
CMD ["--model", "/models/model.gguf", "--listen", "tcp://0.0.0.0:5555", "--http", "0.0.0.0:9100", \
     "--backend", "cpu"]
