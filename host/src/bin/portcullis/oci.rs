//! `portcullis push` and `portcullis pull`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;

use super::inputs;

#[derive(Args)]
pub struct PushArgs {
    /// The module to publish.
    module: PathBuf,
    /// Where: `registry://host[:port]/repository:tag`.
    reference: String,
    /// Extra manifest annotations, `key=value`; repeatable.
    #[arg(long = "annotation", short = 'a')]
    annotations: Vec<String>,
    #[command(flatten)]
    sources: inputs::SourceArgs,
}

#[derive(Args)]
pub struct PullArgs {
    /// `registry://...`, `https://...` or `file://...`.
    reference: String,
    /// Also write the module to this file.
    #[arg(long, short)]
    output: Option<PathBuf>,
    #[command(flatten)]
    sources: inputs::SourceArgs,
}

pub async fn push(args: PushArgs) -> anyhow::Result<()> {
    let wasm = std::fs::read(&args.module)
        .with_context(|| format!("reading {}", args.module.display()))?;
    // Refuse what no host could run, before it reaches a registry.
    portcullis_adapters::detect_abi(&wasm)?;
    let mut annotations = BTreeMap::new();
    for pair in &args.annotations {
        let Some((k, v)) = pair.split_once('=') else {
            bail!("annotation {pair:?} is not key=value");
        };
        annotations.insert(k.to_string(), v.to_string());
    }
    let pushed = args
        .sources
        .fetcher()?
        .push(&wasm, &args.reference, annotations)
        .await?;
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::json!({
            "reference": pushed.reference,
            "digest": pushed.manifest_digest,
        }))?
    );
    Ok(())
}

pub async fn pull(args: PullArgs) -> anyhow::Result<()> {
    let fetched = args.sources.fetcher()?.fetch(&args.reference).await?;
    if let Some(output) = &args.output {
        std::fs::write(output, &fetched.bytes)
            .with_context(|| format!("writing {}", output.display()))?;
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::json!({
            "reference": args.reference,
            "digest": fetched.digest,
            "manifest_digest": fetched.manifest_digest,
            "path": args.output.as_ref().unwrap_or(&fetched.path),
        }))?
    );
    Ok(())
}
