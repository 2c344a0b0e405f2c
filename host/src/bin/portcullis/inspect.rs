//! `portcullis inspect`: what a module is and what it declares.

use clap::Args;
use serde_json::{Value, json};

use super::annotate::{capabilities, existing_metadata};
use super::inputs;

#[derive(Args)]
pub struct InspectArgs {
    /// A path or a `file://`, `http(s)://` or `registry://` URI.
    module: String,
    #[command(flatten)]
    sources: inputs::SourceArgs,
}

/// Prints the ABI, digest, size, execution mode (and, for an OPA module, its
/// entrypoints and the builtins it needs, flagging those this host lacks),
/// the metadata (from `io.kubewarden.metadata`
/// or `portcullis.metadata`, as written) and the host capabilities the module
/// may call. Fails when the module does not load: what inspect accepts, the
/// policy-server runs.
pub async fn inspect(args: InspectArgs) -> anyhow::Result<()> {
    let module = inputs::fetch_module(&args.module, &args.sources).await?;
    let engine = inputs::engine()?;
    let loaded = engine.load(&module.bytes)?;
    let (section, metadata) = match existing_metadata(&module.bytes)? {
        Some((name, raw)) => {
            let value: Value = serde_json::from_slice(&raw)
                .map_err(|e| anyhow::anyhow!("custom section {name} is not JSON: {e}"))?;
            (Some(name), value)
        }
        None => (None, Value::Null),
    };
    // The host's own reading of it, which must agree.
    if section.is_some() && loaded.metadata().is_none() {
        anyhow::bail!("the metadata section is not valid policy metadata");
    }
    let mut report = json!({
        "module": args.module,
        "abi": loaded.abi(),
        "digest": loaded.digest(),
        "size": module.bytes.len(),
        "executionMode": loaded.execution_mode(),
        "metadataSection": section,
        "metadata": metadata,
        "capabilities": capabilities::detect(&module.bytes)?,
    });
    // OPA modules: the ABI version, the entrypoints, and the builtins the
    // module needs from the host, with the ones this host lacks flagged.
    if let Some(opa) = loaded.opa_info() {
        let mut info = serde_json::to_value(opa)?;
        let unsupported: Vec<&str> = opa
            .builtins
            .iter()
            .filter(|b| !b.supported)
            .map(|b| b.name.as_str())
            .collect();
        info["unsupportedBuiltins"] = json!(unsupported);
        report["opa"] = info;
    }
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
