//! `strata bench` on the command line.

use std::path::PathBuf;
use std::time::Duration;

use super::report::Report;
use super::workloads::Workload;
use super::*;

/// `strata bench` on the command line.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(value_enum)]
    workload: Workload,
    /// Base URL of the API, or tcp://HOST:PORT for `line`
    /// [default: http://127.0.0.1:3000, tcp://127.0.0.1:9888 for line]
    #[arg(long)]
    target: Option<String>,
    /// Concurrent connections (one operation in flight on each).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    connections: u64,
    /// Seconds measured, after the warm-up.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds run first and not counted.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Distinct keys, counters or widgets to spread over (fewer: more contention).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(2..))]
    keys: u64,
    /// Weights of the workload's operations: kv and line put,get (default put=1,get=1); widgets
    /// add,link,get (default add); counters increment,get (default increment). E.g. --mix get=9,put=1.
    #[arg(long)]
    mix: Option<String>,
    /// Open loop at this many operations per second in total, latency measured from each scheduled send
    /// time (coordinated omission corrected). Without it: closed loop.
    #[arg(long)]
    rate: Option<f64>,
    /// The server's Prometheus endpoint, to read its CPU time before and after the measured part
    /// [default: TARGET/metrics for HTTP targets; give it for `line`]
    #[arg(long)]
    metrics: Option<String>,
    /// Read the server's CPU time from /proc/PID/stat instead (a server on this machine that does not
    /// report its own)
    #[arg(long)]
    server_pid: Option<u32>,
    /// Write the JSON report (figures, parameters, histogram buckets) here.
    #[arg(long)]
    output: Option<PathBuf>,
    /// Draw the latency percentile spectrum as SVG here.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Earlier JSON reports to draw on the same plot (e.g. a `health` baseline); repeatable.
    #[arg(long)]
    compare: Vec<PathBuf>,
}

/// Runs `strata bench` and prints the figures.
pub async fn command(args: Args) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let bad = |what: &str| -> Box<dyn std::error::Error + Send + Sync> { what.into() };
    if !(args.duration.is_finite() && args.duration > 0.0) {
        return Err(bad("--duration must be a positive number of seconds"));
    }
    if !(args.warmup.is_finite() && args.warmup >= 0.0) {
        return Err(bad("--warmup must be 0 or more seconds"));
    }
    let target = args.target.unwrap_or_else(|| {
        if args.workload == Workload::Line {
            "tcp://127.0.0.1:9888".into()
        } else {
            "http://127.0.0.1:3000".into()
        }
    });
    let mut options = Options::new(args.workload, &target);
    options.connections = args.connections as usize;
    options.duration = Duration::from_secs_f64(args.duration);
    options.warmup = Duration::from_secs_f64(args.warmup);
    options.keys = args.keys as usize;
    options.rate = args.rate;
    if let Some(metrics) = args.metrics {
        options.metrics = Some(metrics);
    }
    options.server_pid = args.server_pid;
    if let Some(mix) = &args.mix {
        options.mix = args.workload.parse_mix(mix)?;
    }
    // Read before the run, so that a wrong path fails now rather than after it.
    let mut compared = Vec::new();
    for path in &args.compare {
        let text = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let report: Report =
            serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        compared.push(report);
    }
    let report = run(options).await?;
    report.print();
    if let Some(path) = &args.output {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)?;
        println!("  report      {}", path.display());
    }
    if let Some(path) = &args.plot {
        let mut all: Vec<&Report> = compared.iter().collect();
        all.push(&report);
        plot(&all, path)?;
        println!("  plot        {}", path.display());
    }
    Ok(())
}
