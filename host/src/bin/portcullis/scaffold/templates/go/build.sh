#!/usr/bin/env bash
# Build policy.wasm: a GOOS=wasip1 WASI command module with metadata.yml
# (executionMode: wasi) embedded.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
portcullis="${PORTCULLIS:-portcullis}"
GOOS=wasip1 GOARCH=wasm go build -trimpath -ldflags=-s -o policy.unannotated.wasm .
"$portcullis" annotate policy.unannotated.wasm --metadata-path metadata.yml --output-path policy.wasm
rm -f policy.unannotated.wasm
echo "built policy.wasm"
