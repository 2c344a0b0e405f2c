#!/usr/bin/env bash
# Build policy.wasm: a component made by componentize-js (the JavaScript
# engine pre-initialised with Wizer), with metadata.yml embedded. Uses
# node_modules/.bin/componentize-js after `npm install`, else the one on PATH.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
portcullis="${PORTCULLIS:-portcullis}"
componentize_js=componentize-js
[[ -x node_modules/.bin/componentize-js ]] && componentize_js=node_modules/.bin/componentize-js
# componentize-js reads its inputs from inside a WASI sandbox: absolute paths.
"$componentize_js" "$PWD/policy.js" --wit "$PWD/wit" --world-name policy \
    --disable http fetch-event -o "$PWD/policy.unannotated.wasm"
"$portcullis" annotate policy.unannotated.wasm --metadata-path metadata.yml --output-path policy.wasm
rm -f policy.unannotated.wasm
echo "built policy.wasm"
