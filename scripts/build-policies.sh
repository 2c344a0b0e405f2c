#!/usr/bin/env bash
# Build the sample and test policies under sample-policies/ to WebAssembly and
# copy them to <repo>/target/policies/NAME.wasm.
#
#   scripts/build-policies.sh           build and copy
#   scripts/build-policies.sh --clippy  instead, run clippy (warnings as errors,
#                                       tests included) on each crate for the
#                                       target it is built for
#
#   waPC guests (Kubewarden protocol)      -> wasm32-wasip1 core modules
#   component guests (portcullis:policy)   -> wasm32-wasip2 components
#   Python guests (componentize-py)        -> components
#   JavaScript guests (componentize-js)    -> components
#   Go guests (GOOS=wasip1)                -> WASI command modules
#   Go waPC guests (standard Go toolchain) -> GOOS=wasip1 c-shared modules
#   Rego policies (OPA and Gatekeeper)     -> `opa build -t wasm` modules
#
# The Python, JavaScript and Go policies get their metadata from
# `portcullis annotate` (built here when one of them needs building), and are
# rebuilt only when their sources or toolchain change.
#
# opa is built from its Go module by scripts/go-tools.sh (once; cached under
# ~/.cache/portcullis/bin), unless $OPA names one.
#
# Environment:
#   PORTCULLIS_WASM_TARGET_DIR  cargo target dir (default: <repo>/target/wasm)
#   CARGO                       cargo binary (default: cargo)
#   PORTCULLIS                  the portcullis CLI (default: built from this checkout)
#   GO                          go binary (default: go)
#   OPA                         opa binary (default: built by scripts/go-tools.sh)
#
# Idempotent; runs from any working directory.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
manifest="$repo/sample-policies/Cargo.toml"
host_target_dir="${CARGO_TARGET_DIR:-$repo/target}"
export CARGO_TARGET_DIR="${PORTCULLIS_WASM_TARGET_DIR:-$repo/target/wasm}"
export PATH="$HOME/.cache/portcullis/bin:$PATH"
out_dir="$repo/target/policies"
cargo="${CARGO:-cargo}"

wasip1_crates=(pod-privileged-wapc default-labels-wapc adversarial-wapc namespace-allowlist-wapc
    unique-ingress-host-wapc requester-can-i-wapc image-digest-wapc capability-probe-wapc)
wasip2_crates=(pod-privileged-component default-labels-component adversarial-component
    unique-ingress-host-component requester-can-i-component image-digest-component
    capability-probe-component capability-probe-v01-component)
# Standard Go modules under sample-policies/ without dependencies: they build
# offline, and Go's build cache makes a second run take a second.
go_guests=(adversarial-go)

if command -v rustup >/dev/null 2>&1; then
    installed="$(rustup target list --installed 2>/dev/null || true)"
    for target in wasm32-wasip1 wasm32-wasip2; do
        if ! grep -qx "$target" <<<"$installed"; then
            echo "error: rust target $target is not installed (rustup target add $target)" >&2
            exit 1
        fi
    done
fi

if [[ "${1:-}" == "--clippy" ]]; then
    clippy() {
        local target="$1"
        shift
        local args=(-p policy-common)
        for crate in "$@"; do
            args+=(-p "$crate")
        done
        echo "==> cargo clippy --target $target --all-targets ${args[*]}" >&2
        "$cargo" clippy --manifest-path "$manifest" --target "$target" --all-targets "${args[@]}" -- -D warnings
    }
    clippy wasm32-wasip1 "${wasip1_crates[@]}"
    clippy wasm32-wasip2 "${wasip2_crates[@]}"
    exit 0
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

# ---------------------------------------------------------------- other languages
python_policies=(pod-privileged-python)
js_policies=(pod-privileged-js)
go_policies=(pod-privileged-go)

portcullis=""
cli() {
    if [[ -z "$portcullis" ]]; then
        if [[ -n "${PORTCULLIS:-}" ]]; then
            portcullis="$PORTCULLIS"
        else
            # The workspace's binaries, as `just build` makes them: building
            # one package alone would compile its dependencies again with
            # other features.
            echo "==> cargo build --workspace --bins (for portcullis annotate)" >&2
            CARGO_TARGET_DIR="$host_target_dir" "$cargo" build -q --manifest-path "$repo/Cargo.toml" \
                --workspace --bins
            portcullis="$host_target_dir/debug/portcullis"
        fi
    fi
    "$portcullis" "$@"
}

need_tool() {
    command -v "$1" >/dev/null 2>&1 || {
        echo "error: $1 is not installed (scripts/setup.sh installs it)" >&2
        exit 1
    }
}

# A hash of everything a build reads: the sources (and the WIT they include)
# and the toolchain's version.
stamp_of() {
    local dir="$1" tool_version="$2"
    {
        echo "$tool_version"
        (cd "$dir" && find -L . -type f ! -name '*.wasm' ! -name '*.md' ! -path './node_modules/*' | LC_ALL=C sort | xargs sha256sum)
    } | sha256sum | cut -c1-32
}

# build_other NAME TOOL_VERSION COMMAND...: COMMAND writes $unannotated from
# the sources in sample-policies/NAME (its working directory).
build_other() {
    local name="$1" version="$2"
    shift 2
    local dir="$repo/sample-policies/$name" dst="$out_dir/$name.wasm"
    local stamp
    stamp="$(stamp_of "$dir" "$version")"
    if [[ -f "$dst" && "$(cat "$out_dir/.$name.stamp" 2>/dev/null)" == "$stamp" ]]; then
        printf '%s\t%s bytes (up to date)\n' "$dst" "$(wc -c <"$dst" | tr -d ' ')"
        return
    fi
    unannotated="$(mktemp -d)/$name.wasm"
    echo "==> $name: $*" >&2
    (cd "$dir" && "$@")
    cli annotate "$unannotated" --metadata-path "$dir/metadata.yml" --output-path "$dst.tmp"
    rm -rf "$(dirname "$unannotated")"
    mv -f "$dst.tmp" "$dst"
    echo "$stamp" >"$out_dir/.$name.stamp"
    printf '%s\t%s bytes\n' "$dst" "$(wc -c <"$dst" | tr -d ' ')"
}

python_build() { componentize-py -d wit -w pod-privileged componentize app -o "$unannotated" >/dev/null; }
# componentize-js reads its inputs from inside a WASI sandbox: absolute paths.
js_build() {
    componentize-js "$PWD/policy.js" --wit "$PWD/wit" --world-name pod-privileged \
        --disable http fetch-event -o "$unannotated" >/dev/null
}
go_build() { GOOS=wasip1 GOARCH=wasm go build -trimpath -ldflags=-s -o "$unannotated" .; }

need_tool componentize-py
need_tool componentize-js
need_tool go
for name in "${python_policies[@]}"; do
    build_other "$name" "$(componentize-py --version)" python_build
done
for name in "${js_policies[@]}"; do
    build_other "$name" "componentize-js $(componentize-js --version)" js_build
done
for name in "${go_policies[@]}"; do
    build_other "$name" "$(go version)" go_build
done

# Go waPC guests: no metadata to annotate, and a build takes seconds.
go="${GO:-go}"
for guest in "${go_guests[@]}"; do
    dst="$out_dir/$guest.wasm"
    echo "==> GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared ($guest)" >&2
    (cd "$repo/sample-policies/$guest" \
        && GOOS=wasip1 GOARCH=wasm "$go" build -buildmode=c-shared -trimpath -buildvcs=false -o "$dst.tmp" .)
    mv -f "$dst.tmp" "$dst"
    printf '%s\t%s bytes\n' "$dst" "$(wc -c <"$dst" | tr -d ' ')"
done

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
template_rego "$rego_dir/unique-ingress-host-gatekeeper/template.yaml" >"$gatekeeper_src/unique.rego"
build_rego unique-ingress-host-gatekeeper k8suniqueingresshost/violation "$gatekeeper_src/unique.rego" --v0-compatible
build_rego adversarial-rego-loop adversarial/loop/violation "$rego_dir/adversarial-rego/loop.rego"
build_rego adversarial-rego-huge-output adversarial/huge/violation "$rego_dir/adversarial-rego/huge-output.rego"
build_rego adversarial-rego-unsupported-builtin adversarial/unsupported/violation \
    "$rego_dir/adversarial-rego/unsupported-builtin.rego"
build_rego adversarial-rego-conflict adversarial/conflict/violation "$rego_dir/adversarial-rego/conflict.rego"
