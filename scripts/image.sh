#!/usr/bin/env bash
# Build the Portcullis image from the Dockerfile.
#
#   scripts/image.sh [--offline-bases] [TAG]      (TAG defaults to portcullis:dev)
#   scripts/image.sh --prebuilt [TAG]
#
# Uses `docker build` when a Docker engine answers, otherwise buildah (daemonless,
# rootful here, chroot isolation), so the same Dockerfile builds on a laptop,
# in CI and on hosts without Docker. --offline-bases builds on the stand-in
# base images of scripts/offline-base-images.sh instead of pulling
# rust:1.95-bookworm and gcr.io/distroless/cc-debian12:nonroot, for hosts
# that cannot reach container registries.
#
# --prebuilt builds the four binaries here (`cargo build --profile dist`,
# incremental in $CARGO_TARGET_DIR) and puts them on the Dockerfile's runtime
# stage, taken from the Dockerfile itself, on the offline runtime base, with
# Docker's classic builder: no registry and no second Rust toolchain in a
# builder image. For Debian bookworm hosts (the runtime base's glibc) with a
# Docker engine and no registry, such as CI's; the image is smoke-run to
# catch a glibc mismatch. PORTCULLIS_IMAGE_PROFILE=dev takes the debug
# binaries that `cargo test --workspace` builds instead: the same build as
# the test suite's (same features), so after it nothing is compiled; the
# kind suite of `./dev test` uses them (docs/kind.md).
#
# The version label comes from the workspace Cargo.toml and the revision from
# git, so an image says which commit it was built from.
set -euo pipefail
cd "$(dirname "$0")/.."

offline=0 prebuilt=0
if [[ "${1:-}" == "--offline-bases" ]]; then offline=1; shift; fi
if [[ "${1:-}" == "--prebuilt" ]]; then prebuilt=1; shift; fi
tag="${1:-portcullis:dev}"

version="$(awk -F'"' '/^version = /{print $2; exit}' Cargo.toml)"
revision="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
args=(--build-arg "VERSION=$version" --build-arg "REVISION=$revision")
if (( prebuilt )); then
    command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1 \
        || { echo "image: --prebuilt needs a Docker engine" >&2; exit 1; }
    profile="${PORTCULLIS_IMAGE_PROFILE:-dist}"
    case "$profile" in
        dist) cargo build --profile dist --locked -p portcullis-host -p portcullis-controller -p portcullis-audit-scanner --bins; out=dist ;;
        dev) cargo test --locked --workspace --no-run; out=debug ;;
        *) echo "image: PORTCULLIS_IMAGE_PROFILE must be dist or dev" >&2; exit 2 ;;
    esac
    scripts/offline-base-images.sh --docker-runtime
    ctx="$(mktemp -d)"
    trap 'rm -rf "$ctx"' EXIT
    mkdir "$ctx/out"
    dist="${CARGO_TARGET_DIR:-target}/$out"
    cp "$dist/policy-server" "$dist/portcullis-controller" "$dist/audit-scanner" "$dist/portcullis" "$ctx/out/"
    # The Dockerfile's last stage, with the binaries from the context instead
    # of the builder stage: one definition of what the image holds.
    { echo 'ARG RUNTIME_IMAGE'
      sed -n '/^FROM \${RUNTIME_IMAGE}$/,$p' Dockerfile | sed 's#^COPY --from=builder /out/ #COPY out/ #'
    } > "$ctx/Dockerfile"
    grep -q '^COPY out/ /usr/local/bin/$' "$ctx/Dockerfile" \
        || { echo "image: the Dockerfile's runtime stage no longer copies /out/ from the builder" >&2; exit 1; }
    DOCKER_BUILDKIT=0 docker build -q "${args[@]}" \
        --build-arg RUNTIME_IMAGE=localhost/portcullis-base/cc-debian12:nonroot -t "$tag" "$ctx" >/dev/null
    for bin in policy-server portcullis-controller audit-scanner portcullis; do
        docker run --rm --entrypoint "/usr/local/bin/$bin" "$tag" --help >/dev/null \
            || { echo "image: $bin does not run in $tag (built on a host with a newer glibc than the runtime base?)" >&2; exit 1; }
    done
    echo "image: built $tag from host-built binaries ($profile profile)" >&2
    exit 0
fi
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
