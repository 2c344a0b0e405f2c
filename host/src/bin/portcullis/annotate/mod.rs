//! `portcullis annotate`: embed a policy's metadata in its module.
//!
//! waPC and WASI command modules get Kubewarden's `io.kubewarden.metadata`
//! section, written as `kwctl annotate` writes it, so that kwctl and the
//! upstream policy-server accept the result. Components get the same JSON in
//! `portcullis.metadata`, without the waPC-only `protocolVersion` and
//! `executionMode`.

pub mod capabilities;
mod metadata;
mod sections;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;
use portcullis_adapters::{KUBEWARDEN_SECTION, PORTCULLIS_SECTION};

pub use self::metadata::{ContextAwareResource, Metadata, Rule};
use self::sections::Placement;

/// The annotation that carries a policy's usage text.
const USAGE_ANNOTATION: &str = "io.kubewarden.policy.usage";

#[derive(Args)]
pub struct AnnotateArgs {
    /// The module or component to annotate.
    module: PathBuf,
    /// The metadata (YAML or JSON). Without it, the metadata the module
    /// already carries is kept and `--annotation` and `--usage-path` patch it.
    #[arg(long, short = 'm')]
    metadata_path: Option<PathBuf>,
    /// A file whose text becomes the `io.kubewarden.policy.usage` annotation.
    #[arg(long, short = 'u')]
    usage_path: Option<PathBuf>,
    /// An annotation `KEY=VALUE`, or `KEY=@FILE` to read the value from a
    /// file; repeatable.
    #[arg(long = "annotation", short = 'a', value_name = "KEY=VALUE")]
    annotations: Vec<String>,
    /// Where to write the annotated module (may be the input itself).
    #[arg(long, short = 'o')]
    output_path: PathBuf,
    /// Replace the metadata the module already carries with `--metadata-path`.
    #[arg(long)]
    force: bool,
}

pub async fn annotate(args: AnnotateArgs) -> anyhow::Result<()> {
    let wasm = std::fs::read(&args.module)
        .with_context(|| format!("reading {}", args.module.display()))?;
    let existing = existing_metadata(&wasm)?;
    let mut metadata = match (&args.metadata_path, existing) {
        (Some(path), existing) => {
            if existing.is_some() && !args.force {
                bail!(
                    "{} already carries metadata; use --force to replace it",
                    args.module.display()
                );
            }
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            serde_yaml::from_str::<Metadata>(&text)
                .with_context(|| format!("{} is not valid policy metadata", path.display()))?
        }
        (None, Some((_, json))) => serde_json::from_slice(&json)
            .context("the module's own metadata cannot be read; give --metadata-path")?,
        (None, None) => bail!(
            "{} carries no metadata; give --metadata-path",
            args.module.display()
        ),
    };
    apply_overrides(&mut metadata, &args.annotations, args.usage_path.as_deref())?;

    let kind = ModuleKind::of(&wasm)?;
    let (section, placement) = match kind {
        ModuleKind::Component => {
            if let Some(mode) = &metadata.execution_mode {
                bail!(
                    "executionMode {mode:?} is for core modules; a component runs as a \
                     portcullis:policy component (remove executionMode)"
                );
            }
            metadata.protocol_version = None;
            // First, so that it shadows metadata a nested module may carry.
            (PORTCULLIS_SECTION, Placement::First)
        }
        ModuleKind::Core(found) => {
            let declared = metadata
                .execution_mode
                .get_or_insert_with(|| "kubewarden-wapc".into())
                .clone();
            if !found.allows(&declared) {
                bail!(
                    "the metadata says executionMode {declared:?}, but the module is {}",
                    found.describe()
                );
            }
            metadata.protocol_version = Some(if declared == "kubewarden-wapc" {
                // kwctl asks the guest; v1 is the only waPC protocol there
                // is, and loading the module proves it links as one.
                super::inputs::engine()?
                    .load(&wasm)
                    .context("the module does not load as a waPC policy")?;
                "v1".to_string()
            } else {
                "Unknown".to_string()
            });
            (KUBEWARDEN_SECTION, Placement::Last)
        }
    };
    metadata.validate()?;
    warn_on_capabilities(&wasm, &metadata)?;

    let json = serde_json::to_vec(&metadata)?;
    // One module, one metadata: any earlier section of either name goes.
    let stripped = sections::without_custom(&wasm, &[KUBEWARDEN_SECTION, PORTCULLIS_SECTION])?;
    let out = sections::with_custom(&stripped, section, &json, placement)?;
    write_atomically(&args.output_path, &out)
}

/// The first metadata section (at any depth), by name and raw JSON.
pub fn existing_metadata(wasm: &[u8]) -> anyhow::Result<Option<(String, Vec<u8>)>> {
    for payload in wasmparser::Parser::new(0).parse_all(wasm) {
        let payload = payload.context("the module is not valid WebAssembly")?;
        if let wasmparser::Payload::CustomSection(reader) = payload
            && matches!(reader.name(), KUBEWARDEN_SECTION | PORTCULLIS_SECTION)
        {
            return Ok(Some((reader.name().to_string(), reader.data().to_vec())));
        }
    }
    Ok(None)
}

fn apply_overrides(
    metadata: &mut Metadata,
    annotations: &[String],
    usage_path: Option<&Path>,
) -> anyhow::Result<()> {
    let mut overrides = BTreeMap::new();
    for arg in annotations {
        let Some((key, value)) = arg.split_once('=') else {
            bail!("invalid annotation {arg:?}: expected KEY=VALUE or KEY=@FILE");
        };
        if key.is_empty() {
            bail!("invalid annotation {arg:?}: the key is empty");
        }
        let value = match value.strip_prefix('@') {
            Some(path) => std::fs::read_to_string(path)
                .with_context(|| format!("reading the value of annotation {key} from {path}"))?,
            None => value.to_string(),
        };
        overrides.insert(key.to_string(), value);
    }
    if let Some(path) = usage_path {
        if overrides.contains_key(USAGE_ANNOTATION) {
            bail!("both --usage-path and --annotation set {USAGE_ANNOTATION}");
        }
        let usage =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        overrides.insert(USAGE_ANNOTATION.to_string(), usage);
    }
    if !overrides.is_empty() {
        metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .extend(overrides);
    }
    Ok(())
}

/// What a binary is, for checking `executionMode` against it.
enum ModuleKind {
    Component,
    Core(CoreAbi),
}

#[derive(Clone, Copy)]
enum CoreAbi {
    Wapc,
    WasiCommand,
    Rego,
    Unknown,
}

impl ModuleKind {
    fn of(wasm: &[u8]) -> anyhow::Result<ModuleKind> {
        if wasmparser::Parser::is_component(wasm) {
            return Ok(ModuleKind::Component);
        }
        if !wasmparser::Parser::is_core_wasm(wasm) {
            bail!("not a WebAssembly module or component");
        }
        let mut exports = BTreeSet::new();
        for payload in wasmparser::Parser::new(0).parse_all(wasm) {
            if let wasmparser::Payload::ExportSection(reader) = payload? {
                for export in reader {
                    exports.insert(export?.name.to_string());
                }
            }
        }
        let abi = if exports.contains("__guest_call") {
            CoreAbi::Wapc
        } else if exports.iter().any(|e| e.starts_with("opa_")) {
            CoreAbi::Rego
        } else if exports.contains("_start") {
            CoreAbi::WasiCommand
        } else {
            CoreAbi::Unknown
        };
        Ok(ModuleKind::Core(abi))
    }
}

impl CoreAbi {
    fn allows(self, mode: &str) -> bool {
        matches!(
            (self, mode),
            (CoreAbi::Wapc, "kubewarden-wapc")
                | (CoreAbi::WasiCommand, "wasi")
                | (CoreAbi::Rego, "opa" | "gatekeeper")
        )
    }

    fn describe(self) -> &'static str {
        match self {
            CoreAbi::Wapc => "a waPC module (executionMode kubewarden-wapc)",
            CoreAbi::WasiCommand => "a WASI command module (executionMode wasi)",
            CoreAbi::Rego => "an OPA/Rego module (executionMode opa or gatekeeper)",
            CoreAbi::Unknown => {
                "neither a waPC, a WASI command nor an OPA module (no __guest_call, _start or \
                 opa_* export)"
            }
        }
    }
}

/// Warn about capabilities the module may call that its metadata does not
/// declare: the policy-server would refuse those calls unless an operator
/// grants more than the policy asks for.
fn warn_on_capabilities(wasm: &[u8], metadata: &Metadata) -> anyhow::Result<()> {
    let detected = capabilities::detect(wasm)?;
    let declared = metadata.host_capabilities.clone().unwrap_or_default();
    let missing = capabilities::undeclared(&detected, &declared);
    if !missing.is_empty() {
        eprintln!(
            "warning: the module may call host capabilities that its metadata does not \
             declare in hostCapabilities: {}",
            missing.join(", ")
        );
    }
    if detected.iter().any(|c| c.starts_with("kubernetes/"))
        && metadata.context_aware_resources.is_empty()
    {
        eprintln!(
            "warning: the module may read Kubernetes resources, but its metadata lists no \
             contextAwareResources"
        );
    }
    Ok(())
}

fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("creating a file in {}", dir.display()))?;
    std::fs::write(tmp.path(), bytes).with_context(|| format!("writing {}", path.display()))?;
    tmp.persist(path)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_and_usage() {
        let dir = tempfile::tempdir().unwrap();
        let usage = dir.path().join("README.md");
        std::fs::write(&usage, "# usage").unwrap();
        let value = dir.path().join("v.txt");
        std::fs::write(&value, "from a file").unwrap();
        let mut m: Metadata = serde_yaml::from_str("rules: []").unwrap();
        apply_overrides(
            &mut m,
            &["a=b".into(), format!("c=@{}", value.display())],
            Some(&usage),
        )
        .unwrap();
        let a = m.annotations.unwrap();
        assert_eq!(a["a"], "b");
        assert_eq!(a["c"], "from a file");
        assert_eq!(a[USAGE_ANNOTATION], "# usage");
        let mut m: Metadata = serde_yaml::from_str("rules: []").unwrap();
        assert!(apply_overrides(&mut m, &["nokey".into()], None).is_err());
        assert!(apply_overrides(&mut m, &["=v".into()], None).is_err());
        assert!(apply_overrides(&mut m, &[format!("{USAGE_ANNOTATION}=x")], Some(&usage)).is_err());
    }

    #[test]
    fn modes_are_checked_against_the_exports() {
        let kind = |wat: &str| ModuleKind::of(&wat::parse_str(wat).unwrap()).unwrap();
        let ModuleKind::Core(wapc) = kind(
            r#"(module (func (export "__guest_call") (param i32 i32) (result i32) i32.const 0))"#,
        ) else {
            panic!()
        };
        assert!(wapc.allows("kubewarden-wapc") && !wapc.allows("wasi"));
        let ModuleKind::Core(cmd) = kind(r#"(module (func (export "_start")))"#) else {
            panic!()
        };
        assert!(cmd.allows("wasi") && !cmd.allows("kubewarden-wapc"));
        assert!(matches!(kind("(component)"), ModuleKind::Component));
    }
}
