//! The figures of a run: what each worker counted, merged into the report, printed or written as JSON.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

use super::client::Outcome;
use super::workloads::{Mix, Workload};
use super::*;

/// Latencies above a minute are recorded as a minute.
pub(super) const MAX_MICROS: u64 = 60_000_000;

#[derive(Debug, Serialize, Deserialize)]
pub struct Report {
    pub workload: Workload,
    pub parameters: Parameters,
    /// Seconds from the end of the warm-up until the last measured operation was answered.
    pub measured_s: f64,
    /// Successful operations (a transaction counts once, however many requests it took).
    pub operations: u64,
    pub ops_per_s: f64,
    /// Of successful operations, in milliseconds.
    pub latency_ms: Latency,
    pub by_operation: BTreeMap<String, OperationFigures>,
    /// Expected domain answers under contention (`409`s such as `conflict`, `insufficient_shares`), by code.
    pub refusals: BTreeMap<String, u64>,
    /// Everything else that was not a success, by kind: HTTP status and error code, transport, protocol.
    pub errors: BTreeMap<String, u64>,
    pub error_count: u64,
    /// The server's own CPU time over the measured part, if it could be read (see [`ServerCpu`]).
    #[serde(default)]
    pub server_cpu: ServerCpu,
    /// Operations (and errors) sent during the warm-up, left out of every other figure.
    pub warmup: WarmupFigures,
    /// Open loop: operations scheduled within the run but never sent (the server could not keep up).
    pub backlog: u64,
    /// How the latency relates to coordinated omission in this run.
    pub coordinated_omission: String,
    pub histogram: HistogramExport,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Parameters {
    pub target: String,
    pub connections: usize,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub keys: usize,
    pub mix: Mix,
    /// `closed` or `open`.
    pub r#loop: String,
    /// Open loop: the requested operations per second.
    pub rate: Option<f64>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct OperationFigures {
    pub operations: u64,
    pub ops_per_s: f64,
    pub latency_ms: Latency,
}

/// What the server spent on the run: its `process_cpu_seconds_total` (user + system time of every thread,
/// from `GET /metrics`) read when the warm-up ends and again when the last measured operation is answered.
/// On a machine the generator shares with the server this is the figure that decides throughput, and on
/// Lambda it is what is billed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ServerCpu {
    /// CPU seconds over the measured part; `None` when not measured.
    pub seconds: Option<f64>,
    /// Of those, microseconds per successful operation (a transaction counts once).
    pub us_per_op: Option<f64>,
    /// Why it was not measured (no `--metrics`, the endpoint refused, no such metric).
    pub unavailable: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct WarmupFigures {
    pub operations: u64,
    pub errors: u64,
}

/// The latency histogram of successful operations (all kinds merged).
#[derive(Debug, Serialize, Deserialize)]
pub struct HistogramExport {
    pub unit: String,
    pub significant_digits: u8,
    /// Every recorded value bucket: `count` operations took up to `value_us` (at the histogram's precision).
    pub buckets: Vec<Bucket>,
    /// The percentile spectrum (HdrHistogram's `outputPercentileDistribution`, 5 steps per halving), for plots.
    pub percentiles: Vec<PercentilePoint>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Bucket {
    pub value_us: u64,
    pub count: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct PercentilePoint {
    pub percentile: f64,
    pub value_ms: f64,
}

/// What one worker saw.
pub(super) struct Tally {
    pub(super) histograms: BTreeMap<String, Histogram<u64>>,
    pub(super) refusals: BTreeMap<String, u64>,
    pub(super) errors: BTreeMap<String, u64>,
    pub(super) warmup: WarmupFigures,
    pub(super) backlog: u64,
}

impl Tally {
    pub(super) fn new() -> Self {
        Self {
            histograms: BTreeMap::new(),
            refusals: BTreeMap::new(),
            errors: BTreeMap::new(),
            warmup: WarmupFigures {
                operations: 0,
                errors: 0,
            },
            backlog: 0,
        }
    }

    pub(super) fn count(
        &mut self,
        op: &str,
        outcome: Outcome,
        latency: Duration,
        warming_up: bool,
    ) {
        if warming_up {
            match outcome {
                Outcome::Failed(_) => self.warmup.errors += 1,
                _ => self.warmup.operations += 1,
            }
            return;
        }
        match outcome {
            Outcome::Done => self
                .histograms
                .entry(op.to_owned())
                .or_insert_with(new_histogram)
                .saturating_record((latency.as_micros() as u64).clamp(1, MAX_MICROS)),
            Outcome::Refused(code) => *self.refusals.entry(code).or_insert(0) += 1,
            Outcome::Failed(kind) => *self.errors.entry(kind).or_insert(0) += 1,
        }
    }
}

pub(super) fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("valid histogram bounds")
}

pub(super) fn report(
    options: &Options,
    tally: Tally,
    measured_s: f64,
) -> Result<Report, hdrhistogram::AdditionError> {
    let mut all = new_histogram();
    let mut by_operation = BTreeMap::new();
    for (op, h) in &tally.histograms {
        all.add(h)?;
        by_operation.insert(
            op.clone(),
            OperationFigures {
                operations: h.len(),
                ops_per_s: h.len() as f64 / measured_s,
                latency_ms: latency(h),
            },
        );
    }
    let buckets = all
        .iter_recorded()
        .map(|v| Bucket {
            value_us: all.highest_equivalent(v.value_iterated_to()),
            count: v.count_at_value(),
        })
        .collect();
    let percentiles = if all.is_empty() {
        Vec::new()
    } else {
        all.iter_quantiles(5)
            .map(|v| PercentilePoint {
                percentile: v.quantile_iterated_to() * 100.0,
                value_ms: all.highest_equivalent(v.value_iterated_to()) as f64 / 1000.0,
            })
            .collect()
    };
    let open = options.rate.is_some();
    Ok(Report {
        workload: options.workload,
        parameters: Parameters {
            target: options.target.clone(),
            connections: options.connections,
            duration_s: options.duration.as_secs_f64(),
            warmup_s: options.warmup.as_secs_f64(),
            keys: options.keys,
            mix: options.mix.clone(),
            r#loop: if open { "open" } else { "closed" }.into(),
            rate: options.rate,
        },
        measured_s,
        operations: all.len(),
        ops_per_s: all.len() as f64 / measured_s,
        latency_ms: latency(&all),
        by_operation,
        error_count: tally.errors.values().sum(),
        refusals: tally.refusals,
        errors: tally.errors,
        server_cpu: ServerCpu::default(),
        warmup: tally.warmup,
        backlog: tally.backlog,
        coordinated_omission: if open {
            "open loop: latency measured from each operation's scheduled send time, so stalls are \
             included (corrected for coordinated omission; up to ~1 ms of generator timer lateness)"
        } else {
            "closed loop: latency is each operation's service time; requests a stall would have \
             delayed are never sent, so tail percentiles are understated (coordinated omission not \
             corrected; use --rate for an open loop)"
        }
        .into(),
        histogram: HistogramExport {
            unit: "microseconds".into(),
            significant_digits: 3,
            buckets,
            percentiles,
        },
    })
}

pub(super) fn latency(h: &Histogram<u64>) -> Latency {
    if h.is_empty() {
        return Latency {
            p50: 0.0,
            p90: 0.0,
            p99: 0.0,
            p999: 0.0,
            max: 0.0,
            mean: 0.0,
        };
    }
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    Latency {
        p50: ms(0.5),
        p90: ms(0.9),
        p99: ms(0.99),
        p999: ms(0.999),
        max: h.max() as f64 / 1000.0,
        mean: h.mean() / 1000.0,
    }
}

impl Report {
    pub fn print(&self) {
        let p = &self.parameters;
        let looped = match p.rate {
            Some(rate) => format!("open loop at {rate} ops/s"),
            None => "closed loop".to_owned(),
        };
        let mix: Vec<String> = p.mix.iter().map(|(op, w)| format!("{op}={w}")).collect();
        println!(
            "{} ({}) against {} with {} connections, {looped}: {:.1} s measured after {:.1} s warm-up",
            self.workload.name(),
            mix.join(","),
            p.target,
            p.connections,
            self.measured_s,
            p.warmup_s
        );
        println!(
            "  throughput  {:>10.0} ops/s ({} operations)",
            self.ops_per_s, self.operations
        );
        let line = |l: &Latency| {
            format!(
                "p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}",
                l.p50, l.p90, l.p99, l.p999, l.max
            )
        };
        println!("  latency ms  {}", line(&self.latency_ms));
        match (&self.server_cpu.us_per_op, &self.server_cpu.seconds) {
            (Some(us), Some(seconds)) => {
                println!("  server cpu  {us:>10.1} µs/op ({seconds:.2} s over the measured part)")
            }
            _ => println!(
                "  server cpu  not measured: {}",
                self.server_cpu
                    .unavailable
                    .as_deref()
                    .unwrap_or("no operations")
            ),
        }
        if self.by_operation.len() > 1 {
            for (op, f) in &self.by_operation {
                println!(
                    "    {op:<9} {:>10.0} ops/s  {}",
                    f.ops_per_s,
                    line(&f.latency_ms)
                );
            }
        }
        let counts = |m: &BTreeMap<String, u64>| {
            if m.is_empty() {
                "none".to_owned()
            } else {
                let parts: Vec<String> = m.iter().map(|(k, v)| format!("{k}: {v}")).collect();
                parts.join(", ")
            }
        };
        println!("  refusals    {}", counts(&self.refusals));
        println!("  errors      {}", counts(&self.errors));
        if self.backlog > 0 {
            println!(
                "  backlog     {} scheduled operations never sent: the server did not keep up with the rate",
                self.backlog
            );
        }
        println!("  note        {}", self.coordinated_omission);
    }

    /// A label for plots: workload, mix, connections and throughput.
    pub(super) fn label(&self) -> String {
        // The mix is named only where the workload has a choice of operations.
        let mix = if self.workload.operations().len() > 1 {
            let ops: Vec<String> = self
                .parameters
                .mix
                .iter()
                .filter(|(_, w)| **w > 0)
                .map(|(op, w)| format!("{op}={w}"))
                .collect();
            format!(" {}", ops.join(","))
        } else {
            String::new()
        };
        format!(
            "{}{mix} (c={}): {:.0} ops/s, p99 {:.2} ms",
            self.workload.name(),
            self.parameters.connections,
            self.ops_per_s,
            self.latency_ms.p99
        )
    }
}
