#!/usr/bin/env bash
# Publish a release: the container image and the sample policies as OCI artifacts.
#
#   scripts/release.sh [--image-only | --policies-only] PREFIX
#
# PREFIX is a registry and namespace, e.g. ghcr.io/portcullis-dev. With the
# workspace version V (Cargo.toml), it publishes
#
#   PREFIX/portcullis:V                         the image (scripts/image.sh, then docker/buildah push)
#   PREFIX/policies/NAME:vV                     each policy of sample-policies/published.txt
#
# and prints every reference with its digest. These are the references the
# charts' defaults use (PREFIX ghcr.io/portcullis-dev).
#
# Credentials: the image push uses docker's or buildah's login; the policy
# push reads ~/.docker/config.json like `portcullis push` always does.
# Environment:
#   PORTCULLIS        the portcullis CLI (default: target/release/portcullis, built if missing)
#   SOURCES_PATH      a sources.yml for the policy push (insecure registries, extra CAs)
#   POLICIES_DIR      take the modules from here instead of building them (scripts/build-policies.sh)
#   IMAGE_PUSH_FLAGS  extra flags of the image push (e.g. --tls-verify=false for buildah)
#   OFFLINE_BASES=1   build the image on scripts/offline-base-images.sh stand-ins
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

image=1 policies=1
case "${1:-}" in
    --image-only) policies=0; shift ;;
    --policies-only) image=0; shift ;;
esac
prefix="${1:-}"
[[ -n "$prefix" && "$prefix" != *://* ]] || {
    echo "usage: scripts/release.sh [--image-only | --policies-only] REGISTRY/NAMESPACE (no scheme)" >&2
    exit 2
}
prefix="${prefix%/}"
version="$(awk -F'"' '/^version = /{print $2; exit}' Cargo.toml)"

if (( policies )); then
    cli="${PORTCULLIS:-}"
    if [[ -z "$cli" ]]; then
        cli="${CARGO_TARGET_DIR:-$repo/target}/release/portcullis"
        [[ -x "$cli" ]] || cargo build --release --locked -p portcullis-host --bin portcullis
    fi
    modules="${POLICIES_DIR:-}"
    if [[ -z "$modules" ]]; then
        scripts/build-policies.sh >&2
        modules="$repo/target/policies"
    fi
    sources=()
    [[ -n "${SOURCES_PATH:-}" ]] && sources=(--sources-path "$SOURCES_PATH")
    while read -r name module; do
        [[ -z "$name" || "$name" == \#* ]] && continue
        ref="registry://$prefix/policies/$name:v$version"
        pushed="$("$cli" push "$modules/$module.wasm" "$ref" "${sources[@]}")"
        digest="$(grep -o '"digest": "sha256:[0-9a-f]*"' <<<"$pushed" | grep -o 'sha256:[0-9a-f]*')"
        echo "$ref@$digest"
    done < sample-policies/published.txt
fi

if (( image )); then
    tag="$prefix/portcullis:$version"
    if [[ "${OFFLINE_BASES:-0}" == 1 ]]; then scripts/image.sh --offline-bases "$tag" >&2; else scripts/image.sh "$tag" >&2; fi
    digest_file="$(mktemp)"
    trap 'rm -f "$digest_file"' EXIT
    # shellcheck disable=SC2086 # IMAGE_PUSH_FLAGS is a list of flags
    if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
        docker push ${IMAGE_PUSH_FLAGS:-} "$tag" >&2
        docker inspect --format '{{index .RepoDigests 0}}' "$tag" | sed 's/.*@//' > "$digest_file"
    else
        buildah push ${IMAGE_PUSH_FLAGS:-} --digestfile "$digest_file" "$tag" "docker://$tag" >&2
    fi
    echo "$tag@$(cat "$digest_file")"
fi
