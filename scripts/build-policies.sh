#!/usr/bin/env bash
# Build the sample and test policies under sample-policies/ to WebAssembly and
# copy them to <repo>/target/policies/NAME.wasm.
#
#   waPC guests (Kubewarden protocol)      -> wasm32-wasip1 core modules
#   component guests (portcullis:policy)   -> wasm32-wasip2 components
#
# Environment:
#   PORTCULLIS_WASM_TARGET_DIR  cargo target dir (default: <repo>/target/wasm)
#   CARGO                       cargo binary (default: cargo)
#
# Idempotent; runs from any working directory.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
manifest="$repo/sample-policies/Cargo.toml"
export CARGO_TARGET_DIR="${PORTCULLIS_WASM_TARGET_DIR:-$repo/target/wasm}"
out_dir="$repo/target/policies"
cargo="${CARGO:-cargo}"

wasip1_crates=(pod-privileged-wapc default-labels-wapc adversarial-wapc
    unique-ingress-host-wapc requester-can-i-wapc image-digest-wapc capability-probe-wapc)
wasip2_crates=(pod-privileged-component default-labels-component adversarial-component
    unique-ingress-host-component requester-can-i-component image-digest-component
    capability-probe-component capability-probe-v01-component)

if command -v rustup >/dev/null 2>&1; then
    installed="$(rustup target list --installed 2>/dev/null || true)"
    for target in wasm32-wasip1 wasm32-wasip2; do
        if ! grep -qx "$target" <<<"$installed"; then
            echo "error: rust target $target is not installed (rustup target add $target)" >&2
            exit 1
        fi
    done
fi

build() {
    local target="$1"
    shift
    local args=()
    for crate in "$@"; do
        args+=(-p "$crate")
    done
    echo "==> cargo build --release --target $target ${args[*]}" >&2
    "$cargo" build --release --manifest-path "$manifest" --target "$target" "${args[@]}"
}

build wasm32-wasip1 "${wasip1_crates[@]}"
build wasm32-wasip2 "${wasip2_crates[@]}"

mkdir -p "$out_dir"
copy() {
    local target="$1"
    shift
    for crate in "$@"; do
        local src="$CARGO_TARGET_DIR/$target/release/${crate//-/_}.wasm"
        local dst="$out_dir/$crate.wasm"
        if [[ ! -f "$src" ]]; then
            echo "error: $src was not built" >&2
            exit 1
        fi
        # Copy through a temporary file so a reader never sees a partial module.
        cp "$src" "$dst.tmp"
        mv -f "$dst.tmp" "$dst"
        printf '%s\t%s bytes\n' "$dst" "$(wc -c <"$dst" | tr -d ' ')"
    done
}
copy wasm32-wasip1 "${wasip1_crates[@]}"
copy wasm32-wasip2 "${wasip2_crates[@]}"
