#!/usr/bin/env bash
# Build the sample and test policies under sample-policies/ to WebAssembly and
# copy them to <repo>/target/policies/NAME.wasm.
#
#   waPC guests (Kubewarden protocol)      -> wasm32-wasip1 core modules
#   component guests (portcullis:policy)   -> wasm32-wasip2 components
#   Rego policies (OPA and Gatekeeper)     -> `opa build -t wasm` modules
#
# opa is built from its Go module by scripts/go-tools.sh (once; cached under
# ~/.cache/portcullis/bin), unless $OPA names one.
#
# Environment:
#   PORTCULLIS_WASM_TARGET_DIR  cargo target dir (default: <repo>/target/wasm)
#   CARGO                       cargo binary (default: cargo)
#   OPA                         opa binary (default: built by scripts/go-tools.sh)
#
# Idempotent; runs from any working directory.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
manifest="$repo/sample-policies/Cargo.toml"
export CARGO_TARGET_DIR="${PORTCULLIS_WASM_TARGET_DIR:-$repo/target/wasm}"
out_dir="$repo/target/policies"
cargo="${CARGO:-cargo}"

wasip1_crates=(pod-privileged-wapc default-labels-wapc adversarial-wapc)
wasip2_crates=(pod-privileged-component default-labels-component adversarial-component)

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

# Rego: OPA-mode and Gatekeeper-mode samples, and the adversarial test policies.
opa="${OPA:-}"
if [[ -z "$opa" ]]; then
    opa="$("$repo/scripts/go-tools.sh" opa | tail -n 1)"
fi

# build_rego NAME ENTRYPOINT SOURCE [opa build flags...]
build_rego() {
    local name="$1" entrypoint="$2" source="$3"
    shift 3
    local tmp
    tmp="$(mktemp -d)"
    echo "==> opa build -t wasm $* -e $entrypoint $source" >&2
    "$opa" build -t wasm "$@" -e "$entrypoint" -o "$tmp/bundle.tar.gz" "$source"
    # The bundle holds /policy.wasm (and the sources, and data.json).
    tar -xzPf "$tmp/bundle.tar.gz" -O /policy.wasm >"$tmp/policy.wasm"
    mv -f "$tmp/policy.wasm" "$out_dir/$name.wasm"
    rm -rf "$tmp"
    printf '%s\t%s bytes\n' "$out_dir/$name.wasm" "$(wc -c <"$out_dir/$name.wasm" | tr -d ' ')"
}

# The Rego of a ConstraintTemplate: the block scalar `rego: |` of its (only)
# target, as our sample templates write it.
template_rego() {
    awk '/^ +rego: \|/ { indent = index($0, "rego:") + 1; on = 1; next }
         on && /^ *$/ { print ""; next }
         on && substr($0, 1, indent) ~ /^ +$/ { print substr($0, indent + 1); next }
         on { exit }' "$1"
}

rego_dir="$repo/sample-policies"
build_rego pod-privileged-opa policy/main "$rego_dir/pod-privileged-opa/policy.rego"
gatekeeper_src="$(mktemp -d)"
trap 'rm -rf "$gatekeeper_src"' EXIT
template_rego "$rego_dir/pod-privileged-gatekeeper/template.yaml" >"$gatekeeper_src/template.rego"
build_rego pod-privileged-gatekeeper k8spspprivileged/violation "$gatekeeper_src/template.rego" --v0-compatible
build_rego adversarial-rego-loop adversarial/loop/violation "$rego_dir/adversarial-rego/loop.rego"
build_rego adversarial-rego-huge-output adversarial/huge/violation "$rego_dir/adversarial-rego/huge-output.rego"
build_rego adversarial-rego-unsupported-builtin adversarial/unsupported/violation \
    "$rego_dir/adversarial-rego/unsupported-builtin.rego"
build_rego adversarial-rego-conflict adversarial/conflict/violation "$rego_dir/adversarial-rego/conflict.rego"
