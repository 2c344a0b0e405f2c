//! `portcullis bench`: what one evaluation costs, measured as the server runs it.
//!
//! The "fresh" column is the policy-server's path: a new instance for every
//! call, so instantiation and guest initialisation are paid each time (unlike
//! `kwctl bench`, which reuses one warm instance). The "warm" column is the
//! call alone, in an instance that already served one: the lower bound,
//! without the isolation the server gives every request.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::{Args, ValueEnum};
use portcullis_adapters::{EvalContext, LoadedModule, PolicyRequest, Settings};

use super::inputs;
use super::run::{humantime_secs, policy_name};

/// Calls per warm sample: one instance serves this many, and the first
/// (fresh) call's cost is subtracted.
const WARM_BATCH: usize = 20;

#[derive(Args)]
pub struct BenchArgs {
    /// The request: an AdmissionReview or a bare AdmissionRequest.
    #[arg(long, short)]
    request: PathBuf,
    /// Policy settings: inline JSON/YAML, or @FILE.
    #[arg(long, short)]
    settings: Option<String>,
    /// How long to measure each column.
    #[arg(long, default_value = "3s", value_parser = humantime_secs)]
    duration: Duration,
    /// What to print.
    #[arg(long, short, value_enum, default_value_t = Format::Table)]
    output: Format,
    /// The module: a path or a URI.
    module: String,
    #[command(flatten)]
    mode: inputs::ModeArgs,
    #[command(flatten)]
    sources: inputs::SourceArgs,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Table,
    Json,
}

/// Percentiles of a set of durations, in microseconds.
#[derive(serde::Serialize)]
struct Stats {
    samples: usize,
    p50: f64,
    p90: f64,
    p99: f64,
    mean: f64,
}

impl Stats {
    fn of(mut samples: Vec<Duration>) -> Stats {
        samples.sort();
        let pct = |p: f64| samples[((samples.len() - 1) as f64 * p).round() as usize];
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        Stats {
            samples: samples.len(),
            p50: us(pct(0.50)),
            p90: us(pct(0.90)),
            p99: us(pct(0.99)),
            mean: us(samples.iter().sum::<Duration>() / samples.len() as u32),
        }
    }
}

pub async fn bench(args: BenchArgs) -> anyhow::Result<()> {
    let module = inputs::fetch_module(&args.module, &args.sources).await?;
    let settings = inputs::settings(args.settings.as_deref())?;
    let request = inputs::request(&args.request, false)?;
    let loaded = args.mode.load(&inputs::engine()?, &module.bytes)?;
    let ctx = EvalContext::new(policy_name(&args.module), Duration::from_secs(5));
    let duration = args.duration;
    let (fresh, warm) = tokio::task::spawn_blocking({
        let loaded = loaded.clone();
        move || measure(&loaded, &ctx, &request, &settings, duration)
    })
    .await??;
    let report = serde_json::json!({
        "module": args.module,
        "abi": loaded.abi(),
        "digest": module.digest,
        "fresh_instance_per_call_us": fresh,
        "warm_call_us": warm,
    });
    match args.output {
        Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Format::Table => {
            println!("{} ({}, {})", args.module, loaded.abi(), module.digest);
            println!(
                "{:<28} {:>9} {:>9} {:>9} {:>9} {:>9}",
                "µs per validate", "p50", "p90", "p99", "mean", "samples"
            );
            for (name, s) in [
                ("fresh instance (server)", &fresh),
                ("warm instance (bound)", &warm),
            ] {
                println!(
                    "{name:<28} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9}",
                    s.p50, s.p90, s.p99, s.mean, s.samples
                );
            }
        }
    }
    Ok(())
}

fn measure(
    loaded: &LoadedModule,
    ctx: &EvalContext,
    request: &PolicyRequest,
    settings: &Settings,
    duration: Duration,
) -> anyhow::Result<(Stats, Stats)> {
    // Evaluations block (WASI calls even run a runtime of their own), so all
    // of this runs off the async runtime's threads.
    let verdict = loaded.validate_settings(ctx, settings)?;
    if !verdict.valid {
        bail!(
            "the policy rejected its settings: {}",
            verdict.message.unwrap_or_default()
        );
    }
    // Warm up caches and the pool before measuring.
    let warm_up = Instant::now();
    while warm_up.elapsed() < duration / 10 {
        loaded.validate(ctx, request, settings)?;
    }
    let mut fresh = Vec::new();
    let started = Instant::now();
    while started.elapsed() < duration || fresh.len() < 10 {
        let t = Instant::now();
        loaded.validate(ctx, request, settings)?;
        fresh.push(t.elapsed());
    }
    let fresh = Stats::of(fresh);
    // A warm call: the time of a batch in one instance, less one fresh call,
    // spread over the rest of the batch.
    let fresh_p50 = Duration::from_secs_f64(fresh.p50 / 1e6);
    let mut warm = Vec::new();
    let started = Instant::now();
    while started.elapsed() < duration || warm.len() < 10 {
        let t = Instant::now();
        loaded.validate_reusing_instance(ctx, request, settings, WARM_BATCH + 1)?;
        let batch = t.elapsed().saturating_sub(fresh_p50);
        warm.push(batch / WARM_BATCH as u32);
    }
    Ok((fresh, Stats::of(warm)))
}
