//! Which host capabilities a module may call, found without running it.
//!
//! - A core module (waPC, WASI command) names a capability at run time, in the
//!   strings it passes to `__host_call` / `host.call`; like `kwctl annotate`,
//!   look for each known namespace and operation in its data segments.
//! - A component imports the WIT interface of each capability it may call.

use std::collections::BTreeSet;

use portcullis_host::capabilities::CapabilityGrants;

/// Kubewarden's gated capabilities (`tracing/log` is always allowed), as
/// `namespace`, `operation`.
pub const KNOWN: &[(&str, &str)] = &[
    ("kubernetes", "list_resources_by_namespace"),
    ("kubernetes", "list_resources_all"),
    ("kubernetes", "get_resource"),
    ("kubernetes", "can_i"),
    ("oci", "v1/verify"),
    ("oci", "v2/verify"),
    ("oci", "v1/manifest_digest"),
    ("oci", "v1/oci_manifest"),
    ("oci", "v1/oci_manifest_config"),
    ("net", "v1/dns_lookup_host"),
    ("crypto", "v1/is_certificate_trusted"),
];

/// The capabilities behind each function of the `portcullis:policy` world.
const COMPONENT_FUNCTIONS: &[(&str, &str, &[&str])] = &[
    ("kubernetes", "get-resource", &["kubernetes/get_resource"]),
    (
        "kubernetes",
        "list-resources",
        &[
            "kubernetes/list_resources_by_namespace",
            "kubernetes/list_resources_all",
        ],
    ),
    ("kubernetes", "can-i", &["kubernetes/can_i"]),
    ("oci", "manifest-digest", &["oci/v1/manifest_digest"]),
    ("net", "lookup-host", &["net/v1/dns_lookup_host"]),
    (
        "crypto",
        "is-certificate-trusted",
        &["crypto/v1/is_certificate_trusted"],
    ),
];

/// `namespace/operation` of every capability the module may call.
pub fn detect(wasm: &[u8]) -> anyhow::Result<BTreeSet<String>> {
    if wasmparser::Parser::is_component(wasm) {
        component_imports(wasm)
    } else {
        Ok(scan_data(&data_segments(wasm)?))
    }
}

fn data_segments(wasm: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut all = Vec::new();
    for payload in wasmparser::Parser::new(0).parse_all(wasm) {
        if let wasmparser::Payload::DataSection(reader) = payload? {
            for data in reader {
                all.extend_from_slice(data?.data);
                // A separator, so that no match spans two segments.
                all.push(0xff);
            }
        }
    }
    Ok(all)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Does `operation` occur other than as the start of a longer known operation
/// (`v1/oci_manifest` inside `v1/oci_manifest_config`)?
fn occurs_alone(data: &[u8], operation: &str) -> bool {
    let longer: Vec<&str> = KNOWN
        .iter()
        .map(|(_, op)| *op)
        .filter(|op| *op != operation && op.starts_with(operation))
        .collect();
    let needle = operation.as_bytes();
    (0..data.len().saturating_sub(needle.len() - 1)).any(|i| {
        data[i..].starts_with(needle) && !longer.iter().any(|l| data[i..].starts_with(l.as_bytes()))
    })
}

fn scan_data(data: &[u8]) -> BTreeSet<String> {
    KNOWN
        .iter()
        .filter(|(ns, op)| contains(data, ns.as_bytes()) && occurs_alone(data, op))
        .map(|(ns, op)| format!("{ns}/{op}"))
        .collect()
}

fn component_imports(wasm: &[u8]) -> anyhow::Result<BTreeSet<String>> {
    let mut found = BTreeSet::new();
    let mut depth = 0usize;
    for payload in wasmparser::Parser::new(0).parse_all(wasm) {
        match payload? {
            wasmparser::Payload::ModuleSection { .. }
            | wasmparser::Payload::ComponentSection { .. } => depth += 1,
            wasmparser::Payload::End(_) => depth = depth.saturating_sub(1),
            // Only the outer component's imports are what it asks the host for.
            wasmparser::Payload::ComponentImportSection(reader) if depth == 0 => {
                for import in reader {
                    let name = import?.name.0;
                    let Some(interface) = name
                        .strip_prefix("portcullis:policy/")
                        .map(|rest| rest.split('@').next().unwrap_or(rest))
                    else {
                        continue;
                    };
                    for (iface, _, caps) in COMPONENT_FUNCTIONS {
                        if *iface == interface {
                            found.extend(caps.iter().map(|c| c.to_string()));
                        }
                    }
                }
            }
            _ => {}
        }
    }
    Ok(found)
}

/// The detected capabilities that the declared patterns do not grant, by the
/// policy-server's own rule.
pub fn undeclared(detected: &BTreeSet<String>, declared: &BTreeSet<String>) -> Vec<String> {
    // Declared patterns the server would refuse to load grant nothing here:
    // every detected capability is then reported.
    let granted = CapabilityGrants::new(declared).unwrap_or_default();
    detected
        .iter()
        .filter(|path| {
            let (namespace, operation) = path.split_once('/').unwrap_or((path, ""));
            !granted.is_granted(namespace, operation)
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_data(strings: &[&str]) -> Vec<u8> {
        let data: String = strings.iter().map(|s| format!("{s}\\00")).collect();
        wat::parse_str(format!(
            r#"(module (memory 1) (data (i32.const 0) "{data}"))"#
        ))
        .unwrap()
    }

    #[test]
    fn core_modules_by_their_strings() {
        assert!(detect(&with_data(&["hello"])).unwrap().is_empty());
        let caps = detect(&with_data(&["kubewarden", "net", "v1/dns_lookup_host"])).unwrap();
        assert_eq!(
            caps.into_iter().collect::<Vec<_>>(),
            ["net/v1/dns_lookup_host"]
        );
        // A namespace is needed too.
        assert!(detect(&with_data(&["can_i"])).unwrap().is_empty());
        // A longer operation does not imply its prefix.
        let caps = detect(&with_data(&["oci", "v1/oci_manifest_config"])).unwrap();
        assert_eq!(
            caps.into_iter().collect::<Vec<_>>(),
            ["oci/v1/oci_manifest_config"]
        );
    }

    #[test]
    fn components_by_their_imports() {
        let component = wat::parse_str(
            r#"(component
                 (import "portcullis:policy/kubernetes@0.1.0" (instance))
                 (import "portcullis:policy/host@0.1.0" (instance)))"#,
        )
        .unwrap();
        let caps = detect(&component).unwrap();
        assert!(caps.contains("kubernetes/get_resource") && caps.contains("kubernetes/can_i"));
        assert!(!caps.iter().any(|c| c.starts_with("oci")));
    }

    #[test]
    fn undeclared_by_grant_patterns() {
        let detected: BTreeSet<String> = ["oci/v1/verify", "kubernetes/get_resource"]
            .map(String::from)
            .into();
        let declared = |p: &[&str]| p.iter().map(|s| s.to_string()).collect();
        assert_eq!(
            undeclared(&detected, &declared(&["*"])),
            Vec::<String>::new()
        );
        assert_eq!(
            undeclared(&detected, &declared(&["oci/*"])),
            ["kubernetes/get_resource"]
        );
        assert_eq!(undeclared(&detected, &declared(&[])).len(), 2);
        assert_eq!(
            undeclared(
                &detected,
                &declared(&["oci/v1/*", "kubernetes/get_resource"])
            )
            .len(),
            0
        );
    }
}
