#!/usr/bin/env bash
# Build policy.wasm: a wasm32-wasip1 waPC module with metadata.yml embedded.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
portcullis="${PORTCULLIS:-portcullis}"
cargo build --release --target wasm32-wasip1
"$portcullis" annotate "${CARGO_TARGET_DIR:-target}/wasm32-wasip1/release/{{crate}}.wasm" \
    --metadata-path metadata.yml --output-path policy.wasm
echo "built policy.wasm"
