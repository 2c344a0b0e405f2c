#!/usr/bin/env bash
# Build the Portcullis image from the Dockerfile.
#
#   scripts/image.sh [--offline-bases] [TAG]      (TAG defaults to portcullis:dev)
#
# Uses `docker build` when a Docker engine answers, otherwise buildah (daemonless,
# rootful here, chroot isolation), so the same Dockerfile builds on a laptop,
# in CI and on hosts without Docker. --offline-bases builds on the stand-in
# base images of scripts/offline-base-images.sh instead of pulling
# rust:1.95-bookworm and gcr.io/distroless/cc-debian12:nonroot, for hosts
# that cannot reach container registries.
#
# The version label comes from the workspace Cargo.toml and the revision from
# git, so an image says which commit it was built from.
set -euo pipefail
cd "$(dirname "$0")/.."

offline=0
if [[ "${1:-}" == "--offline-bases" ]]; then offline=1; shift; fi
tag="${1:-portcullis:dev}"

version="$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)"
revision="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
args=(--build-arg "VERSION=$version" --build-arg "REVISION=$revision")
if (( offline )); then
    scripts/offline-base-images.sh
    args+=(--build-arg RUST_IMAGE=localhost/portcullis-base/rust:1.95-bookworm
           --build-arg RUNTIME_IMAGE=localhost/portcullis-base/cc-debian12:nonroot)
fi

if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
    (( offline )) && { echo "image: --offline-bases builds with buildah; its bases are not in Docker's image store" >&2; exit 1; }
    exec docker build "${args[@]}" -t "$tag" .
elif command -v buildah >/dev/null 2>&1; then
    # --network host: the builder stage fetches crates from crates.io.
    exec buildah bud --isolation chroot --network host --layers "${args[@]}" -t "$tag" .
else
    echo "image: neither a Docker engine nor buildah is available (Debian: apt-get install buildah)" >&2
    exit 1
fi
