//! OPA modules import their linear memory (`env.memory`). wasmtime can give
//! only a memory the module *defines* a copy-on-write image of its data
//! segments and a slot of the pooling allocator; an imported memory would have
//! to be created by the host and filled by copying every data segment, on
//! every evaluation. So before compiling, the import is turned into a defined
//! memory with the same limits. Nothing else changes: memory index 0 is the
//! same memory, the module already re-exports it as `memory`, and function
//! indices do not count memory imports.
//!
//! The rewrite works on raw sections (every other section is copied byte for
//! byte), so it cannot change what the policy computes.

use wasmparser::{Parser, Payload, TypeRef};

/// Bumped whenever the output of [`define_imported_memory`] changes, so that
/// cached artifacts of an older rewrite are not reused.
pub(crate) const REWRITE_VERSION: u32 = 1;

const IMPORT_SECTION: u8 = 2;
const MEMORY_SECTION: u8 = 5;

/// Return `wasm` with its imported memory `env.memory` defined instead.
pub(crate) fn define_imported_memory(wasm: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(wasm.len() + 16);
    let mut memory: Option<wasmparser::MemoryType> = None;
    let mut memory_written = false;
    for payload in Parser::new(0).parse_all(wasm) {
        let payload = payload.map_err(|e| e.to_string())?;
        match payload {
            Payload::Version { range, .. } => out.extend_from_slice(&wasm[range]),
            Payload::ImportSection(reader) => {
                let mut kept = Vec::new();
                let mut count = 0u32;
                let section_end = reader.range().end;
                let items: Vec<_> = reader
                    .into_iter_with_offsets()
                    .collect::<Result<_, _>>()
                    .map_err(|e| e.to_string())?;
                for (i, (offset, import)) in items.iter().enumerate() {
                    let end = items.get(i + 1).map_or(section_end, |(next, _)| *next);
                    match import.ty {
                        TypeRef::Memory(ty)
                            if import.module == "env" && import.name == "memory" =>
                        {
                            memory = Some(ty);
                        }
                        TypeRef::Memory(_) => {
                            return Err(format!(
                                "imports a memory other than env.memory ({}.{})",
                                import.module, import.name
                            ));
                        }
                        _ => {
                            count += 1;
                            kept.extend_from_slice(&wasm[*offset..end]);
                        }
                    }
                }
                let mut body = Vec::with_capacity(kept.len() + 5);
                leb128(&mut body, u64::from(count));
                body.extend_from_slice(&kept);
                section(&mut out, IMPORT_SECTION, &body);
            }
            // The import section comes first, so `memory` is known here.
            Payload::MemorySection(_) if memory.is_some() => {
                return Err("defines a memory besides importing env.memory".into());
            }
            Payload::MemorySection(_) => {
                return Err("defines its own memory instead of importing env.memory, \
                            as modules built by `opa build -t wasm` do"
                    .into());
            }
            Payload::End(_) => {}
            other => {
                let Some((id, range)) = other.as_section() else {
                    // Payloads inside a section (such as function bodies) are
                    // covered by their section's range.
                    continue;
                };
                if !memory_written && must_follow_memory(id) {
                    write_memory(&mut out, memory.as_ref())?;
                    memory_written = true;
                }
                // The section header (id and size) precedes the range.
                let header = header_start(wasm, range.start, id)?;
                out.extend_from_slice(&wasm[header..range.end]);
            }
        }
    }
    if !memory_written {
        write_memory(&mut out, memory.as_ref())?;
    }
    Ok(out)
}

/// Sections that come after the memory section in a module (custom sections,
/// id 0, may appear anywhere; keeping them in place is fine).
fn must_follow_memory(id: u8) -> bool {
    matches!(id, 6..=13)
}

fn write_memory(out: &mut Vec<u8>, memory: Option<&wasmparser::MemoryType>) -> Result<(), String> {
    let memory = memory.ok_or("does not import env.memory")?;
    if memory.memory64 || memory.shared {
        return Err("imports a 64-bit or shared memory, which OPA modules do not use".into());
    }
    let mut body = vec![1]; // one memory
    match memory.maximum {
        None => {
            body.push(0x00);
            leb128(&mut body, memory.initial);
        }
        Some(max) => {
            body.push(0x01);
            leb128(&mut body, memory.initial);
            leb128(&mut body, max);
        }
    }
    section(out, MEMORY_SECTION, &body);
    Ok(())
}

fn section(out: &mut Vec<u8>, id: u8, body: &[u8]) {
    out.push(id);
    leb128(out, body.len() as u64);
    out.extend_from_slice(body);
}

fn leb128(out: &mut Vec<u8>, mut value: u64) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// Where the header of the section whose contents start at `start` begins:
/// the id byte, then the size as LEB128 (up to 5 bytes, possibly padded).
fn header_start(wasm: &[u8], start: usize, id: u8) -> Result<usize, String> {
    for size_len in 1..=5 {
        let Some(header) = start.checked_sub(size_len + 1) else {
            break;
        };
        if wasm[header] == id
            && wasm[header + 1..start - 1].iter().all(|b| b & 0x80 != 0)
            && wasm[start - 1] & 0x80 == 0
        {
            return Ok(header);
        }
    }
    Err(format!(
        "cannot find the header of section {id} at {start:#x}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wasm(wat: &str) -> Vec<u8> {
        wat::parse_str(wat).unwrap()
    }

    #[test]
    fn imported_memory_becomes_defined_and_data_stays() {
        let module = wasm(
            r#"(module
                (import "env" "opa_abort" (func $abort (param i32)))
                (import "env" "memory" (memory 2))
                (import "env" "opa_println" (func (param i32)))
                (global (export "g") i32 (i32.const 7))
                (export "memory" (memory 0))
                (func (export "peek") (result i32) (i32.load8_u (i32.const 70000)))
                (func (export "abort") (call $abort (i32.const 0)))
                (data (i32.const 70000) "\2a")
                (@custom "names-and-such" "x"))"#,
        );
        let rewritten = define_imported_memory(&module).unwrap();
        wasmparser::Validator::new()
            .validate_all(&rewritten)
            .unwrap();

        let mut imports = Vec::new();
        let mut memories = Vec::new();
        for payload in Parser::new(0).parse_all(&rewritten) {
            match payload.unwrap() {
                Payload::ImportSection(r) => {
                    for i in r {
                        let i = i.unwrap();
                        imports.push(format!("{}.{}", i.module, i.name));
                    }
                }
                Payload::MemorySection(r) => memories.extend(r.into_iter().map(|m| m.unwrap())),
                _ => {}
            }
        }
        assert_eq!(imports, ["env.opa_abort", "env.opa_println"]);
        assert_eq!(memories.len(), 1);
        assert_eq!(memories[0].initial, 2);
        assert_eq!(memories[0].maximum, None);

        // The data segment lands in the defined memory, and function indices
        // (the call to the first import) still resolve.
        let engine = wasmtime::Engine::default();
        let m = wasmtime::Module::new(&engine, &rewritten).unwrap();
        let mut store = wasmtime::Store::new(&engine, ());
        let mut linker = wasmtime::Linker::new(&engine);
        linker
            .func_wrap("env", "opa_abort", |_: i32| -> wasmtime::Result<()> {
                Err(wasmtime::Error::msg("aborted"))
            })
            .unwrap();
        linker.func_wrap("env", "opa_println", |_: i32| {}).unwrap();
        let instance = linker.instantiate(&mut store, &m).unwrap();
        let peek = instance
            .get_typed_func::<(), i32>(&mut store, "peek")
            .unwrap();
        assert_eq!(peek.call(&mut store, ()).unwrap(), 42);
        let abort = instance
            .get_typed_func::<(), ()>(&mut store, "abort")
            .unwrap();
        assert!(abort.call(&mut store, ()).is_err());
        assert!(instance.get_memory(&mut store, "memory").is_some());
    }

    #[test]
    fn maximum_is_kept() {
        let module =
            wasm(r#"(module (import "env" "memory" (memory 1 9)) (export "memory" (memory 0)))"#);
        let rewritten = define_imported_memory(&module).unwrap();
        wasmparser::Validator::new()
            .validate_all(&rewritten)
            .unwrap();
        let engine = wasmtime::Engine::default();
        let m = wasmtime::Module::new(&engine, &rewritten).unwrap();
        let Some(wasmtime::ExternType::Memory(ty)) = m.get_export("memory") else {
            panic!()
        };
        assert_eq!((ty.minimum(), ty.maximum()), (1, Some(9)));
    }

    #[test]
    fn modules_without_the_import_are_refused() {
        let err = define_imported_memory(&wasm("(module (memory 1))")).unwrap_err();
        assert!(err.contains("instead of importing env.memory"), "{err}");
        let err = define_imported_memory(&wasm(
            r#"(module (import "env" "memory" (memory 1)) (memory 1))"#,
        ))
        .unwrap_err();
        assert!(err.contains("besides importing env.memory"), "{err}");
        let err = define_imported_memory(&wasm("(module)")).unwrap_err();
        assert!(err.contains("env.memory"), "{err}");
        let err =
            define_imported_memory(&wasm(r#"(module (import "x" "mem" (memory 1)))"#)).unwrap_err();
        assert!(err.contains("x.mem"), "{err}");
    }
}
