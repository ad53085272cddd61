# Sluice worker image, CUDA backend. Build from the repository root (no GPU needed to build):
#   docker build -f deploy/docker/worker-cuda.Dockerfile -t sluice/worker-cuda:dev .
# Debian 12 + NVIDIA's CUDA apt repository, so the libraries match the CPU image and CI
# (nng, protobuf-c, hiredis 0.14 ...). Run it with the NVIDIA container toolkit
# (docker --gpus all, or the k8s device plugin); the driver comes from the host.
ARG DEBIAN_IMAGE=debian:12-slim
ARG CUDA_APT=13-0
ARG CUDA_ARCHITECTURES="80;86;89;90"

FROM ${DEBIAN_IMAGE} AS cuda-repo
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && curl -fsSL -o /tmp/cuda-keyring.deb \
      https://developer.download.nvidia.com/compute/cuda/repos/debian12/x86_64/cuda-keyring_1.1-1_all.deb \
 && dpkg -i /tmp/cuda-keyring.deb && rm /tmp/cuda-keyring.deb \
 && rm -rf /var/lib/apt/lists/*

FROM cuda-repo AS build
ARG CUDA_APT
ARG CUDA_ARCHITECTURES
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential cmake pkg-config \
      libnng-dev libprotobuf-c-dev protobuf-c-compiler libh2o-dev libh2o-evloop-dev libuv1-dev \
      libhiredis-dev libyaml-dev libcyaml-dev libjansson-dev libssl-dev \
      libcurl4-openssl-dev \
      cuda-nvcc-${CUDA_APT} cuda-cudart-dev-${CUDA_APT} libcublas-dev-${CUDA_APT} \
 && rm -rf /var/lib/apt/lists/*
ENV PATH=/usr/local/cuda/bin:${PATH}
WORKDIR /src
COPY . .
RUN cmake -S . -B /build -DCMAKE_BUILD_TYPE=Release -DSLUICE_CUDA=ON -DBUILD_TESTING=OFF \
      -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCHITECTURES}" \
 && cmake --build /build -j"$(nproc)" --target sluice-worker \
 && strip /build/worker/service/sluice-worker

FROM cuda-repo AS runtime
ARG CUDA_APT
RUN apt-get update \
 && apt-get install -y --no-install-recommends libnng1 libprotobuf-c1 libhiredis0.14 \
      libyaml-0-2 libcyaml1 libjansson4 tini \
      cuda-cudart-${CUDA_APT} libcublas-${CUDA_APT} \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin sluice \
 && mkdir -p /models && chown 10001:10001 /models
# The NVIDIA container toolkit mounts the driver (libcuda) when these are set.
ENV NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    LD_LIBRARY_PATH=/usr/local/cuda/lib64
COPY --from=build /build/worker/service/sluice-worker /usr/local/bin/sluice-worker
USER 10001:10001
EXPOSE 5555 9100
HEALTHCHECK --interval=10s --timeout=3s --start-period=600s --retries=3 \
  CMD curl -fsS -o /dev/null http://127.0.0.1:9100/health || exit 1
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/sluice-worker"]
CMD ["--model", "/models/model.gguf", "--listen", "tcp://0.0.0.0:5555", "--http", "0.0.0.0:9100", \
     "--backend", "cuda"]
