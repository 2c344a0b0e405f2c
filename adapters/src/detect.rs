//! ABI detection from the binary header and the exports.

use crate::error::AdapterError;
use crate::types::Abi;

/// Decide which adapter runs `wasm`, or say clearly why none does.
///
/// Core modules are recognised by their exports: `__guest_call` means waPC;
/// the `opa_*` imports and exports of `opa build -t wasm` mean OPA; `_start`
/// without either a WASI command (Kubewarden's `executionMode: wasi`).
/// Components are accepted here and checked against the WIT world when linked.
pub fn detect_abi(wasm: &[u8]) -> Result<Abi, AdapterError> {
    if wasm.len() < 8 || &wasm[0..4] != b"\0asm" {
        let shown: Vec<String> = wasm.iter().take(4).map(|b| format!("{b:02x}")).collect();
        return Err(AdapterError::Invalid(format!(
            "not a WebAssembly binary (expected magic 00 61 73 6d, found {})",
            if shown.is_empty() {
                "nothing".to_string()
            } else {
                shown.join(" ")
            }
        )));
    }
    if wasmparser::Parser::is_component(wasm) {
        return Ok(Abi::Component);
    }
    if !wasmparser::Parser::is_core_wasm(wasm) {
        return Err(AdapterError::Invalid(format!(
            "unknown WebAssembly binary version {:02x?}",
            &wasm[4..8]
        )));
    }

    let mut exports = Vec::new();
    let mut imports_opa = false;
    for payload in wasmparser::Parser::new(0).parse_all(wasm) {
        match payload.map_err(|e| AdapterError::Invalid(e.to_string()))? {
            wasmparser::Payload::ExportSection(reader) => {
                for export in reader {
                    let export = export.map_err(|e| AdapterError::Invalid(e.to_string()))?;
                    exports.push(export.name.to_string());
                }
            }
            wasmparser::Payload::ImportSection(reader) => {
                for import in reader {
                    let import = import.map_err(|e| AdapterError::Invalid(e.to_string()))?;
                    if import.module == "env" && import.name.starts_with("opa_") {
                        imports_opa = true;
                    }
                }
            }
            _ => {}
        }
    }
    let has = |name: &str| exports.iter().any(|e| e == name);

    if has("__guest_call") {
        return Ok(Abi::Wapc);
    }
    if imports_opa
        || exports.iter().any(|e| e.starts_with("opa_"))
        || has("eval") && has("builtins")
    {
        return Ok(Abi::Opa);
    }
    if has("_start") {
        return Ok(Abi::WasiCommand);
    }
    let mut listed: Vec<&str> = exports.iter().map(String::as_str).take(8).collect();
    if exports.len() > 8 {
        listed.push("...");
    }
    Err(AdapterError::Unsupported(format!(
        "core module without the waPC export __guest_call (exports: {})",
        if listed.is_empty() {
            "none".to_string()
        } else {
            listed.join(", ")
        }
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wasm(wat: &str) -> Vec<u8> {
        wat::parse_str(wat).unwrap()
    }

    #[test]
    fn wapc_by_guest_call_export() {
        let m = wasm(
            r#"(module (memory (export "memory") 1)
            (func (export "__guest_call") (param i32 i32) (result i32) i32.const 1))"#,
        );
        assert_eq!(detect_abi(&m).unwrap(), Abi::Wapc);
    }

    #[test]
    fn component_by_header() {
        assert_eq!(detect_abi(&wasm("(component)")).unwrap(), Abi::Component);
    }

    #[test]
    fn opa_by_its_abi_and_wasi_commands_detected() {
        let opa = wasm(
            r#"(module (import "env" "opa_abort" (func (param i32)))
            (func (export "opa_eval") (result i32) i32.const 0))"#,
        );
        assert_eq!(detect_abi(&opa).unwrap(), Abi::Opa);

        let cmd = wasm(r#"(module (func (export "_start")))"#);
        assert_eq!(detect_abi(&cmd).unwrap(), Abi::WasiCommand);

        let other = wasm(r#"(module (func (export "hello")))"#);
        let err = detect_abi(&other).unwrap_err().to_string();
        assert!(err.contains("exports: hello"), "{err}");
    }

    #[test]
    fn garbage_is_invalid() {
        let err = detect_abi(b"PK\x03\x04 a zip file")
            .unwrap_err()
            .to_string();
        assert!(err.contains("50 4b 03 04"), "{err}");
        assert!(detect_abi(b"").unwrap_err().to_string().contains("nothing"));
    }
}
