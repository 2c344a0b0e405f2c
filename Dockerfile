# syntax=docker/dockerfile:1
#
# Portcullis container image: ONE image with all four binaries
#   /usr/local/bin/policy-server          (the admission webhook)
#   /usr/local/bin/portcullis-controller  (the Kubernetes controller)
#   /usr/local/bin/audit-scanner          (the audit scanner CronJob)
#   /usr/local/bin/portcullis             (the CLI)
#
# Why one multi-binary image rather than one image per binary: the
# binaries share almost all of their dependency tree (wasmtime, kube, rustls),
# so one builder stage compiles it once; one tag to build, sign, scan and pin
# (the controller's image and the PolicyServer `spec.image` are the same
# reference, so they can never drift apart); the runtime layer is shared on
# every node. The cost is a few MB of unused binary per Pod. Select the binary
# with the container `command` (the Helm charts do); the default entrypoint is
# the policy-server, since that is what a PolicyServer's Deployment runs
# without setting `command`.
#
# Build:  scripts/image.sh [TAG]      (docker build, or buildah without a Docker engine;
#         --offline-bases for hosts that reach no container registry)
# or:     docker build -t ghcr.io/portcullis-dev/portcullis:0.1.0 \
#           --build-arg VERSION=0.1.0 --build-arg REVISION=$(git rev-parse HEAD) .
# Tested by `just image-test` (tests/tests/image.rs); not part of `./dev test`,
# which must stay well inside CI's time budget.

ARG RUST_IMAGE=rust:1.95-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${RUST_IMAGE} AS builder
WORKDIR /src
# Cargo.lock is used as is (--locked): a build never resolves new versions.
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --profile dist --locked \
        -p portcullis-host -p portcullis-controller -p portcullis-audit-scanner --bins \
 && mkdir -p /out \
 && cp target/dist/policy-server \
       target/dist/portcullis-controller \
       target/dist/audit-scanner \
       target/dist/portcullis /out/

FROM ${RUNTIME_IMAGE}
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG SOURCE=https://github.com/portcullis-dev/portcullis
LABEL org.opencontainers.image.title="portcullis" \
      org.opencontainers.image.description="Portcullis Kubernetes admission policy engine: policy-server, portcullis-controller, audit-scanner and portcullis CLI" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
COPY --from=builder /out/ /usr/local/bin/
# distroless "nonroot": uid/gid 65532, no shell, no package manager.
USER 65532:65532
# Policy-server defaults: webhook 3000 (the controller sets 8443), probes/metrics 8081;
# controller: metrics and probes 8080.
EXPOSE 3000 8081 8080
ENTRYPOINT ["/usr/local/bin/policy-server"]
