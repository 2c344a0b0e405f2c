#!/usr/bin/env bash
# Build policy.wasm: a component made by componentize-py (pre-initialised with
# Wizer, so the interpreter is not started again for every request), with
# metadata.yml embedded.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
portcullis="${PORTCULLIS:-portcullis}"
componentize-py -d wit -w policy componentize app -o policy.unannotated.wasm
"$portcullis" annotate policy.unannotated.wasm --metadata-path metadata.yml --output-path policy.wasm
rm -f policy.unannotated.wasm
echo "built policy.wasm"
