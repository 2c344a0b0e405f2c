//! Top-level custom sections of a module or component.
//!
//! Both binary formats are an 8-byte preamble followed by sections of
//! `id, size (LEB128), contents`; custom sections (id 0) start their contents
//! with a name. Rewriting at this level copies every other section byte for
//! byte, which is all `annotate` needs, so it is done here rather than by
//! parsing and re-encoding the whole module.

use anyhow::{bail, ensure};

const PREAMBLE: usize = 8;
const CUSTOM: u8 = 0;

/// One top-level section.
struct Section {
    id: u8,
    /// The whole section, header included.
    bytes: std::ops::Range<usize>,
    /// A custom section's name.
    name: Option<String>,
}

fn leb_u32(wasm: &[u8], pos: &mut usize) -> anyhow::Result<u32> {
    let mut result: u64 = 0;
    for shift in (0..35).step_by(7) {
        let Some(&byte) = wasm.get(*pos) else {
            bail!("truncated LEB128 number at byte {pos}");
        };
        *pos += 1;
        result |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return u32::try_from(result).map_err(|_| anyhow::anyhow!("LEB128 number too large"));
        }
    }
    bail!("LEB128 number longer than 5 bytes at byte {pos}")
}

fn sections(wasm: &[u8]) -> anyhow::Result<Vec<Section>> {
    ensure!(
        wasm.len() >= PREAMBLE && wasm.starts_with(b"\0asm"),
        "not a WebAssembly binary"
    );
    let mut out = Vec::new();
    let mut pos = PREAMBLE;
    while pos < wasm.len() {
        let start = pos;
        let id = wasm[pos];
        pos += 1;
        let size = leb_u32(wasm, &mut pos)? as usize;
        let end = pos
            .checked_add(size)
            .filter(|end| *end <= wasm.len())
            .ok_or_else(|| anyhow::anyhow!("section at byte {start} runs past the end"))?;
        let name = if id == CUSTOM {
            let mut p = pos;
            let len = leb_u32(wasm, &mut p)? as usize;
            let name = wasm
                .get(p..p + len)
                .filter(|_| p + len <= end)
                .ok_or_else(|| anyhow::anyhow!("custom section name at byte {p} is truncated"))?;
            Some(String::from_utf8_lossy(name).into_owned())
        } else {
            None
        };
        out.push(Section {
            id,
            bytes: start..end,
            name,
        });
        pos = end;
    }
    Ok(out)
}

fn leb(mut n: usize, out: &mut Vec<u8>) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// The encoding of a custom section.
pub fn custom_section(name: &str, data: &[u8]) -> Vec<u8> {
    let mut contents = Vec::with_capacity(name.len() + data.len() + 5);
    leb(name.len(), &mut contents);
    contents.extend_from_slice(name.as_bytes());
    contents.extend_from_slice(data);
    let mut out = vec![CUSTOM];
    leb(contents.len(), &mut out);
    out.extend_from_slice(&contents);
    out
}

/// Where a new section goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Right after the preamble: found first by readers that take the first
    /// match, even one that also looks inside a component's nested modules.
    First,
    /// After every other section, where `kwctl annotate` puts it.
    Last,
}

/// Whether a top-level custom section `name` exists.
#[cfg(test)]
fn has_custom(wasm: &[u8], name: &str) -> anyhow::Result<bool> {
    Ok(sections(wasm)?
        .iter()
        .any(|s| s.name.as_deref() == Some(name)))
}

/// `wasm` without its top-level custom sections named in `names`.
pub fn without_custom(wasm: &[u8], names: &[&str]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(wasm.len());
    out.extend_from_slice(&wasm[..PREAMBLE]);
    for section in sections(wasm)? {
        if section.id == CUSTOM && section.name.as_deref().is_some_and(|n| names.contains(&n)) {
            continue;
        }
        out.extend_from_slice(&wasm[section.bytes]);
    }
    Ok(out)
}

/// `wasm` with a new custom section `name` holding `data`.
pub fn with_custom(
    wasm: &[u8],
    name: &str,
    data: &[u8],
    placement: Placement,
) -> anyhow::Result<Vec<u8>> {
    // Checks the structure, so that nothing is appended to garbage.
    sections(wasm)?;
    let new = custom_section(name, data);
    let mut out = Vec::with_capacity(wasm.len() + new.len());
    match placement {
        Placement::First => {
            out.extend_from_slice(&wasm[..PREAMBLE]);
            out.extend_from_slice(&new);
            out.extend_from_slice(&wasm[PREAMBLE..]);
        }
        Placement::Last => {
            out.extend_from_slice(wasm);
            out.extend_from_slice(&new);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_and_places_custom_sections() {
        let wasm = wat::parse_str(
            r#"(module (@custom "io.kubewarden.metadata" "old") (@custom "keep" "k")
               (func (export "f")))"#,
        )
        .unwrap();
        let long = vec![b'x'; 300]; // a two-byte LEB128 size
        let stripped = without_custom(&wasm, &["io.kubewarden.metadata"]).unwrap();
        let out = with_custom(&stripped, "io.kubewarden.metadata", &long, Placement::Last).unwrap();
        wasmparser::Validator::new().validate_all(&out).unwrap();
        let customs: Vec<(String, Vec<u8>)> = wasmparser::Parser::new(0)
            .parse_all(&out)
            .filter_map(|p| match p.unwrap() {
                wasmparser::Payload::CustomSection(r) => {
                    Some((r.name().to_string(), r.data().to_vec()))
                }
                _ => None,
            })
            .collect();
        assert_eq!(customs.len(), 2);
        assert_eq!(customs[0], ("keep".to_string(), b"k".to_vec()));
        assert_eq!(customs[1], ("io.kubewarden.metadata".to_string(), long));

        let first = with_custom(&wasm, "portcullis.metadata", b"{}", Placement::First).unwrap();
        assert!(first[8..].starts_with(&custom_section("portcullis.metadata", b"{}")));
        assert!(has_custom(&first, "portcullis.metadata").unwrap());
        assert!(!has_custom(&wasm, "portcullis.metadata").unwrap());
    }

    #[test]
    fn truncated_input_is_an_error() {
        let wasm = wat::parse_str(r#"(module (@custom "a" "bcd"))"#).unwrap();
        assert!(sections(&wasm[..wasm.len() - 1]).is_err());
        assert!(sections(b"\0asm").is_err());
        assert!(sections(b"\0asm\x01\0\0\0\x00\xff\xff\xff\xff\x7f").is_err());
    }
}
