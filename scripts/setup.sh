#!/usr/bin/env bash
# Install the toolchain pieces the project builds and tests with. Idempotent:
# every step checks before it installs, so a second run takes a second.
#
# Needs (present on the project's machines): rustup with Rust >= 1.95, Go >= 1.26
# with the module proxy, python3 with pip, and curl/openssl. Go-built test
# binaries are built later, on demand, by scripts/go-tools.sh.
set -euo pipefail

bin="$HOME/.cache/portcullis/bin"
mkdir -p "$bin"

need() {
    command -v "$1" >/dev/null 2>&1 || { echo "setup: $1 is required but not installed ($2)" >&2; exit 1; }
}
need rustup "https://rustup.rs"
need cargo "install Rust with rustup"
need go "Go 1.26 or newer"

installed="$(rustup target list --installed)"
for target in wasm32-wasip1 wasm32-wasip2; do
    if ! grep -qx "$target" <<<"$installed"; then
        echo "setup: rustup target add $target"
        rustup target add "$target"
    fi
done
for component in rustfmt clippy; do
    if ! grep -q "^$component" <<<"$(rustup component list --installed)"; then
        rustup component add "$component"
    fi
done

# just: from PyPI's prebuilt wheel (seconds), falling back to crates.io (minutes).
if ! command -v just >/dev/null 2>&1 && [ ! -x "$bin/just" ]; then
    echo "setup: installing just"
    if python3 -m pip install --quiet --target "$HOME/.cache/portcullis/pip" rust-just 2>/dev/null \
        && [ -x "$HOME/.cache/portcullis/pip/bin/just" ]; then
        ln -sf "$HOME/.cache/portcullis/pip/bin/just" "$bin/just"
    else
        cargo install --locked --root "$HOME/.cache/portcullis" just
    fi
fi

# Python and JavaScript policies (scripts/build-policies.sh, the scaffold
# templates): componentize-py from PyPI and componentize-js from npm, pinned,
# each in a directory named by its version (or lock file), with launchers in
# $bin. Both ship their runtime (CPython, SpiderMonkey) and Wizer as packages.
componentize_py_version=0.25.1
py_dir="$HOME/.cache/portcullis/componentize-py-$componentize_py_version"
if [ ! -x "$py_dir/bin/componentize-py" ]; then
    need python3 "Python 3.11 or newer with pip"
    echo "setup: installing componentize-py $componentize_py_version"
    rm -rf "$py_dir.tmp"
    python3 -m pip install --quiet --disable-pip-version-check --target "$py_dir.tmp" \
        "componentize-py==$componentize_py_version"
    rm -rf "$py_dir"
    mv "$py_dir.tmp" "$py_dir"
fi
launcher="$(printf '#!/bin/sh\nPYTHONPATH="%s${PYTHONPATH:+:$PYTHONPATH}" exec python3 "%s/bin/componentize-py" "$@"\n' "$py_dir" "$py_dir")"
if [ "$(cat "$bin/componentize-py" 2>/dev/null)" != "$launcher" ]; then
    printf '%s\n' "$launcher" >"$bin/componentize-py"
    chmod +x "$bin/componentize-py"
fi

toolchains="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/toolchains"
js_dir="$HOME/.cache/portcullis/node-toolchains-$(sha256sum "$toolchains/package-lock.json" | cut -c1-16)"
if [ ! -x "$js_dir/node_modules/.bin/componentize-js" ]; then
    need npm "Node 20 or newer with npm"
    echo "setup: installing componentize-js (npm ci, scripts/toolchains)"
    rm -rf "$js_dir.tmp"
    mkdir -p "$js_dir.tmp"
    cp "$toolchains/package.json" "$toolchains/package-lock.json" "$js_dir.tmp/"
    (cd "$js_dir.tmp" && npm ci --no-audit --no-fund --loglevel=error)
    rm -rf "$js_dir"
    mv "$js_dir.tmp" "$js_dir"
fi
ln -sfn "$js_dir/node_modules/.bin/componentize-js" "$bin/componentize-js"
# Versions this checkout no longer uses.
for old in "$HOME"/.cache/portcullis/componentize-py-* "$HOME"/.cache/portcullis/node-toolchains-*; do
    case "$old" in "$py_dir" | "$js_dir" | *.tmp) ;; *) [ -d "$old" ] && rm -rf "$old" ;; esac
done

# The load benchmark drives the server with wrk (Debian); only for `just bench-load`.
if [ "${PORTCULLIS_SETUP_BENCH:-0}" = 1 ] && ! command -v wrk >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1; then
        apt-get update -qq && apt-get install -y -qq wrk
    fi
fi

# Building and testing the image without a Docker engine: buildah builds it,
# podman runs it, debootstrap makes the offline base images. Only for
# `just image` / `just image-test` on hosts without Docker.
if [ "${PORTCULLIS_SETUP_IMAGE:-0}" = 1 ] && ! { command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; }; then
    missing=()
    for tool in buildah podman debootstrap; do
        command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
            echo "setup: apt-get install ${missing[*]}"
            apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
        else
            echo "setup: no Docker engine, and ${missing[*]} missing: install them (Debian: apt-get install ${missing[*]})" >&2
            exit 1
        fi
    fi
fi
