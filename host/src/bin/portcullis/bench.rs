//! `portcullis bench`: what one evaluation costs, measured as the server runs it.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Args;
use portcullis_adapters::EvalContext;

use super::inputs;
use super::run::{humantime_secs, policy_name};

#[derive(Args)]
pub struct BenchArgs {
    /// The request: an AdmissionReview or a bare AdmissionRequest.
    #[arg(long, short)]
    request: PathBuf,
    /// Policy settings: inline JSON/YAML, or @FILE.
    #[arg(long, short)]
    settings: Option<String>,
    /// How long to measure.
    #[arg(long, default_value = "3s", value_parser = humantime_secs)]
    duration: Duration,
    /// The module: a path or a URI.
    module: String,
    #[command(flatten)]
    mode: inputs::ModeArgs,
    #[command(flatten)]
    sources: inputs::SourceArgs,
}

pub async fn bench(args: BenchArgs) -> anyhow::Result<()> {
    let module = inputs::fetch_module(&args.module, &args.sources).await?;
    let settings = inputs::settings(args.settings.as_deref())?;
    let request = inputs::request(&args.request, false)?;
    let loaded = args.mode.load(&inputs::engine()?, &module.bytes)?;
    let ctx = EvalContext::new(policy_name(&args.module), Duration::from_secs(5));
    if !loaded.validate_settings(&ctx, &settings)?.valid {
        bail!("invalid settings");
    }
    // Warm up caches and the pool before measuring.
    for _ in 0..100 {
        loaded.validate(&ctx, &request, &settings)?;
    }
    let mut samples = Vec::new();
    let started = Instant::now();
    while started.elapsed() < args.duration {
        let t = Instant::now();
        loaded.validate(&ctx, &request, &settings)?;
        samples.push(t.elapsed());
    }
    samples.sort();
    let pct = |p: f64| samples[((samples.len() - 1) as f64 * p) as usize];
    let mean = samples.iter().sum::<Duration>() / samples.len() as u32;
    let report = serde_json::json!({
        "module": args.module,
        "abi": loaded.abi(),
        "digest": module.digest,
        "evaluations": samples.len(),
        "fresh_instance_per_call_us": {
            "p50": pct(0.50).as_secs_f64() * 1e6,
            "p99": pct(0.99).as_secs_f64() * 1e6,
            "mean": mean.as_secs_f64() * 1e6,
        },
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
