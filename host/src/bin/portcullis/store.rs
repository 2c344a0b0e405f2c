//! The local module store: `policies`, `rm`, `digest`, and `save` / `load`
//! (a tarball of policies for air-gapped clusters).
//!
//! The tarball holds `index.json` (`{"version": 1, "policies": [{"uri",
//! "digest", "manifestDigest"}]}`) and each module once, as
//! `sha256/<hex>.wasm`. `load` checks every digest before it stores anything.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use super::inputs;

/// Format version of the tarball's index.
const ARCHIVE_VERSION: u32 = 1;
/// The largest module and index a tarball may hold, as for any download.
const MAX_ENTRY_BYTES: u64 = portcullis_host::fetch::MAX_MODULE_BYTES;

#[derive(Clone, Copy, ValueEnum)]
pub enum ListFormat {
    Table,
    Json,
}

#[derive(Args)]
pub struct PoliciesArgs {
    #[arg(long, short, value_enum, default_value_t = ListFormat::Table)]
    output: ListFormat,
    #[command(flatten)]
    sources: inputs::SourceArgs,
}

#[derive(Args)]
pub struct RmArgs {
    /// Source URIs, or digests (a prefix of at least 8 hex digits will do).
    #[arg(required = true)]
    policies: Vec<String>,
    #[command(flatten)]
    sources: inputs::SourceArgs,
}

#[derive(Args)]
pub struct DigestArgs {
    /// A `registry://` reference (or any module URI or path).
    module: String,
    #[command(flatten)]
    sources: inputs::SourceArgs,
}

#[derive(Args)]
pub struct SaveArgs {
    /// The tarball to write (gzip-compressed tar).
    #[arg(long, short)]
    output: PathBuf,
    /// The policies: `registry://`, `http(s)://` or `file://` URIs, fetched
    /// (or taken from the store) as `run` and the policy-server fetch them.
    #[arg(required = true)]
    policies: Vec<String>,
    #[command(flatten)]
    sources: inputs::SourceArgs,
}

#[derive(Args)]
pub struct LoadArgs {
    /// The tarball `save` wrote.
    #[arg(long, short)]
    input: PathBuf,
    #[command(flatten)]
    sources: inputs::SourceArgs,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ArchiveIndex {
    version: u32,
    policies: Vec<ArchivedPolicy>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ArchivedPolicy {
    uri: String,
    digest: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    manifest_digest: Option<String>,
}

pub async fn policies(args: PoliciesArgs) -> anyhow::Result<()> {
    let stored = args.sources.fetcher()?.stored().await;
    match args.output {
        ListFormat::Json => println!("{}", serde_json::to_string_pretty(&stored)?),
        ListFormat::Table => {
            let width = stored.iter().map(|p| p.uri.len()).max().unwrap_or(0).max(6);
            println!("{:<width$}  {:<19}  {:>10}", "POLICY", "DIGEST", "SIZE");
            for p in &stored {
                let short: String = p.digest.chars().take(19).collect();
                let size = p.size.map_or("missing".to_string(), human_size);
                println!("{:<width$}  {short:<19}  {size:>10}", p.uri);
            }
        }
    }
    Ok(())
}

fn human_size(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / f64::from(1 << 20)),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / f64::from(1 << 10)),
        b => format!("{b} B"),
    }
}

pub async fn rm(args: RmArgs) -> anyhow::Result<()> {
    let fetcher = args.sources.fetcher()?;
    for selector in &args.policies {
        let removed = fetcher.remove(selector).await?;
        if removed.is_empty() {
            bail!("no stored policy matches {selector:?} (see `portcullis policies`)");
        }
        for p in removed {
            println!("removed {} ({})", p.uri, p.digest);
        }
    }
    Ok(())
}

/// Prints `<reference>@<manifest digest>` for a registry reference, as
/// `kwctl digest` does, and the module's own digest for other sources.
pub async fn digest(args: DigestArgs) -> anyhow::Result<()> {
    let module = inputs::fetch_module(&args.module, &args.sources).await?;
    match module.manifest_digest {
        Some(manifest) => {
            let reference = args.module.split('@').next().unwrap_or(&args.module);
            println!("{reference}@{manifest}");
        }
        None => println!("{}", module.digest),
    }
    Ok(())
}

pub async fn save(args: SaveArgs) -> anyhow::Result<()> {
    let fetcher = args.sources.fetcher()?;
    let mut index = ArchiveIndex {
        version: ARCHIVE_VERSION,
        policies: Vec::new(),
    };
    let mut blobs: BTreeMap<String, std::sync::Arc<[u8]>> = BTreeMap::new();
    for uri in &args.policies {
        let fetched = fetcher
            .fetch(uri)
            .await
            .with_context(|| format!("fetching {uri}"))?;
        if fetched.source.starts_with("file://") {
            bail!(
                "{uri}: save takes registry:// and http(s):// policies; copy local files as they are"
            );
        }
        index.policies.push(ArchivedPolicy {
            uri: fetched.source.clone(),
            digest: fetched.digest.clone(),
            manifest_digest: fetched.manifest_digest.clone(),
        });
        blobs.insert(fetched.digest.clone(), fetched.bytes.clone());
    }
    let file = tempfile::NamedTempFile::new_in(
        args.output
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new(".")),
    )?;
    {
        let gz = flate2::write::GzEncoder::new(file.as_file(), flate2::Compression::default());
        let mut tar = tar::Builder::new(gz);
        append(&mut tar, "index.json", &serde_json::to_vec_pretty(&index)?)?;
        for (digest, bytes) in &blobs {
            let hex = digest.trim_start_matches("sha256:");
            append(&mut tar, &format!("sha256/{hex}.wasm"), bytes)?;
        }
        tar.into_inner()?.finish()?;
    }
    file.persist(&args.output)
        .with_context(|| format!("writing {}", args.output.display()))?;
    println!(
        "saved {} policies ({} modules) to {}",
        index.policies.len(),
        blobs.len(),
        args.output.display()
    );
    Ok(())
}

fn append<W: std::io::Write>(
    tar: &mut tar::Builder<W>,
    path: &str,
    bytes: &[u8],
) -> anyhow::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_size(bytes.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_cksum();
    tar.append_data(&mut header, path, bytes)?;
    Ok(())
}

pub async fn load(args: LoadArgs) -> anyhow::Result<()> {
    let file = std::fs::File::open(&args.input)
        .with_context(|| format!("opening {}", args.input.display()))?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut index: Option<ArchiveIndex> = None;
    let mut blobs: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.to_string_lossy().into_owned();
        if entry.size() > MAX_ENTRY_BYTES {
            bail!("{path} in the tarball is larger than {MAX_ENTRY_BYTES} bytes");
        }
        let mut bytes = Vec::new();
        (&mut entry)
            .take(MAX_ENTRY_BYTES + 1)
            .read_to_end(&mut bytes)?;
        if path == "index.json" {
            index = Some(serde_json::from_slice(&bytes).context("index.json is not valid")?);
        } else if let Some(hex) = path
            .strip_prefix("sha256/")
            .and_then(|p| p.strip_suffix(".wasm"))
        {
            let actual = hex::encode(sha2::Sha256::digest(&bytes));
            if actual != hex {
                bail!("{path} is corrupt: its content hashes to sha256:{actual}");
            }
            blobs.insert(format!("sha256:{hex}"), bytes);
        } else {
            bail!("unexpected entry {path:?} in the tarball");
        }
    }
    let index =
        index.context("the tarball has no index.json (was it written by `portcullis save`?)")?;
    if index.version != ARCHIVE_VERSION {
        bail!("tarball format version {} is not supported", index.version);
    }
    for p in &index.policies {
        if !blobs.contains_key(&p.digest) {
            bail!("the tarball lacks the module of {} ({})", p.uri, p.digest);
        }
    }
    let fetcher = args.sources.fetcher()?;
    for p in index.policies {
        let bytes = blobs[&p.digest].clone();
        fetcher.import(&p.uri, bytes, p.manifest_digest).await?;
        println!("loaded {} ({})", p.uri, p.digest);
    }
    Ok(())
}
