//! `strata bench`: a load generator for a running strata (the local server, or an API Gateway URL).
//!
//! Each of `--connections` workers runs the workload's operations one after another for `--warmup` and then
//! `--duration` seconds. Only operations *sent* after the warm-up are counted. Latency is recorded per
//! operation in HDR histograms (microseconds, 3 significant digits), one per operation kind.
//!
//! Two loops:
//! - Closed (the default): a worker sends its next operation as soon as the previous one is answered. When the
//!   server stalls, the worker stops sending, so the requests that would have waited in the stall are never
//!   measured (coordinated omission). The percentiles are then the service time under this load, not the
//!   latency users arriving at their own pace would see; the report says so.
//! - Open (`--rate R`): each worker sends on a fixed schedule (R / connections per second, staggered), and
//!   latency is measured from the time an operation *should* have been sent, as wrk2 does. A stall therefore
//!   shows up in every operation scheduled during it. Operations still unsent at the end are counted as
//!   `backlog`. Tokio's timer has a 1 ms granularity, so open-loop figures can include up to about 1 ms of
//!   the generator's own lateness.
//!
//! Outcomes: a 2xx (or an `Ok` line) is an operation; a `409` the workload expects under contention
//! (`conflict`, `insufficient_shares`, `no_free_slot`, `already_associated`) is a refusal, counted apart and
//! not in the latency; anything else is an error, by kind (`http 503 unavailable`, `transport timeout`,
//! `protocol Key not found!`).

mod args;
mod client;
mod cpu;
mod plot;
mod report;
mod workloads;

pub use args::{Args, command};
pub use plot::plot;
pub use report::{
    Bucket, HistogramExport, Latency, OperationFigures, Parameters, PercentilePoint, Report,
    ServerCpu, WarmupFigures,
};
pub use workloads::{Mix, Workload};

use std::sync::Arc;
use std::time::{Duration, Instant};

use client::{Http, LineClient, Outcome};
use cpu::CpuSource;
use report::{Tally, new_histogram, report};
use workloads::{Op, http_operation, prepare};

#[derive(Debug, Clone)]
pub struct Options {
    pub workload: Workload,
    /// Base URL of the API, or `tcp://HOST:PORT` of the line protocol.
    pub target: String,
    pub connections: usize,
    /// The measured part of the run.
    pub duration: Duration,
    /// Run before measuring (connections, caches, the writer's batches settle); not counted.
    pub warmup: Duration,
    /// Distinct keys (widgets, counters) the workload spreads over: fewer keys, more contention.
    pub keys: usize,
    pub mix: Mix,
    /// Open loop: operations per second in total, on a schedule. `None`: closed loop.
    pub rate: Option<f64>,
    /// The server's Prometheus endpoint, read before and after the measured part for the server's own CPU
    /// time (`process_cpu_seconds_total`). `None`: not measured.
    pub metrics: Option<String>,
    /// Instead of `metrics`: the server's process id on this machine, whose CPU time `/proc` tells (for a
    /// server that does not report its own, such as an earlier build measured side by side).
    pub server_pid: Option<u32>,
}

impl Options {
    /// The defaults of `strata bench` for this workload and target.
    pub fn new(workload: Workload, target: &str) -> Self {
        Self {
            workload,
            target: target.trim_end_matches('/').to_owned(),
            connections: 20,
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(1),
            keys: 1000,
            mix: workload.default_mix(),
            rate: None,
            metrics: (!target.starts_with("tcp://"))
                .then(|| format!("{}/metrics", target.trim_end_matches('/'))),
            server_pid: None,
        }
    }

    fn check(&self) -> Result<(), String> {
        self.workload.check_mix(&self.mix)?;
        if self.connections == 0 || self.keys < 2 || self.duration.is_zero() {
            return Err("connections ≥ 1, keys ≥ 2 and a duration above 0 are needed".into());
        }
        if self.rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
            return Err("--rate must be a positive number of operations per second".into());
        }
        let line = self.target.starts_with("tcp://");
        if !line {
            Http::new(&self.target)?;
        }
        if let Some(metrics) = &self.metrics {
            Http::new(metrics).map_err(|e| format!("--metrics: {e}"))?;
        }
        if (self.workload == Workload::Line) != line {
            return Err(if line {
                format!(
                    "{} is measured over HTTP: --target http://HOST:PORT",
                    self.workload.name()
                )
            } else {
                "line is measured over TCP: --target tcp://HOST:PORT (the line protocol port)"
                    .into()
            });
        }
        Ok(())
    }
}

/// When a worker sends.
#[derive(Clone, Copy)]
struct Schedule {
    measure_from: Instant,
    deadline: Instant,
    /// Open loop: time between one worker's sends; the first send is at `first`.
    interval: Option<Duration>,
    first: Instant,
}

/// Shared by every worker of a run.
struct Context {
    options: Options,
    /// Cumulative weights: (operation name, upper bound).
    table: Vec<(&'static str, Op, u64)>,
    total_weight: u64,
    /// Makes the serials of widgets added by this run unique.
    run_id: String,
}

pub async fn run(options: Options) -> Result<Report, Box<dyn std::error::Error + Send + Sync>> {
    options.check()?;
    let mut table = Vec::new();
    let mut total_weight = 0;
    for (name, _) in options.workload.operations() {
        let weight = options.mix.get(*name).copied().unwrap_or(0);
        if weight > 0 {
            total_weight += u64::from(weight);
            table.push((*name, Op::of(options.workload, name), total_weight));
        }
    }
    let run_id = format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0)
    );
    let context = Arc::new(Context {
        options,
        table,
        total_weight,
        run_id,
    });
    prepare(&context).await?;

    let options = &context.options;
    let started = Instant::now();
    let measure_from = started + options.warmup;
    let deadline = measure_from + options.duration;
    let interval = options
        .rate
        .map(|rate| Duration::from_secs_f64(options.connections as f64 / rate));
    // Read when the warm-up ends, on a task of its own so that no worker waits for it.
    let source = match (options.server_pid, &options.metrics) {
        (Some(pid), _) => Some(CpuSource::Pid(pid)),
        (None, Some(url)) => Some(CpuSource::Metrics(url.clone())),
        (None, None) => None,
    };
    let cpu_before = source.clone().map(|source| {
        tokio::spawn(async move {
            tokio::time::sleep_until(measure_from.into()).await;
            source.seconds().await
        })
    });
    let mut workers = Vec::new();
    for id in 0..options.connections {
        // Staggered so that the open loop's sends spread evenly over each interval.
        let first = started
            + interval.map_or(Duration::ZERO, |i| {
                i * id as u32 / options.connections as u32
            });
        let schedule = Schedule {
            measure_from,
            deadline,
            interval,
            first,
        };
        let context = context.clone();
        workers.push(tokio::spawn(
            async move { work(id, &context, schedule).await },
        ));
    }
    let mut merged = Tally::new();
    for worker in workers {
        let tally = worker.await?;
        for (op, h) in tally.histograms {
            merged
                .histograms
                .entry(op)
                .or_insert_with(new_histogram)
                .add(&h)?;
        }
        for (k, v) in tally.refusals {
            *merged.refusals.entry(k).or_insert(0) += v;
        }
        for (k, v) in tally.errors {
            *merged.errors.entry(k).or_insert(0) += v;
        }
        merged.warmup.operations += tally.warmup.operations;
        merged.warmup.errors += tally.warmup.errors;
        merged.backlog += tally.backlog;
    }
    let measured_s = measure_from.elapsed().as_secs_f64();
    let cpu = match (cpu_before, &source) {
        (Some(before), Some(source)) => {
            let before = before.await?;
            let after = source.seconds().await;
            match (before, after) {
                (Ok(before), Ok(after)) => Ok(after - before),
                (Err(e), _) | (_, Err(e)) => Err(e),
            }
        }
        _ => Err("neither --metrics nor --server-pid given".to_owned()),
    };
    let mut report = report(options, merged, measured_s)?;
    report.server_cpu = match cpu {
        Ok(seconds) => ServerCpu {
            seconds: Some(seconds),
            us_per_op: (report.operations > 0).then(|| seconds * 1e6 / report.operations as f64),
            unavailable: None,
        },
        Err(why) => ServerCpu {
            unavailable: Some(why),
            ..ServerCpu::default()
        },
    };
    Ok(report)
}

async fn work(id: usize, context: &Context, schedule: Schedule) -> Tally {
    let o = &context.options;
    let mut tally = Tally::new();
    // A cheap deterministic spread of keys and operations per worker (xorshift).
    let mut state = (id as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut pick = move |n: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n
    };
    // Checked by `Options::check` for every workload but line.
    let mut http = Http::new(&o.target).ok();
    let mut line = if o.workload == Workload::Line {
        match LineClient::connect(&o.target).await {
            Ok(client) => Some(client),
            Err(kind) => {
                tally.errors.insert(kind, 1);
                return tally;
            }
        }
    } else {
        None
    };
    let mut next_send = schedule.first;
    let mut sent: u64 = 0;
    loop {
        let intended = match schedule.interval {
            Some(interval) => {
                if next_send >= schedule.deadline {
                    break;
                }
                let now = Instant::now();
                if now >= schedule.deadline {
                    let unsent =
                        (schedule.deadline - next_send).as_secs_f64() / interval.as_secs_f64();
                    tally.backlog += unsent.ceil() as u64;
                    break;
                }
                tokio::time::sleep_until(next_send.into()).await;
                let intended = next_send;
                next_send += interval;
                intended
            }
            None => {
                let now = Instant::now();
                if now >= schedule.deadline {
                    break;
                }
                now
            }
        };
        sent += 1;
        let ticket = pick(context.total_weight);
        let (name, op) = context
            .table
            .iter()
            .find(|(_, _, bound)| ticket < *bound)
            .map(|(name, op, _)| (*name, *op))
            .expect("a ticket below the total weight");
        let key = pick(o.keys as u64);
        let outcome = match (op, line.as_mut()) {
            (Op::LinePut, Some(line)) => {
                line.call(&format!("PUT bench-{key} benchmark value {sent}\n"))
                    .await
            }
            (Op::LineGet, Some(line)) => line.call(&format!("GET bench-{key}\n")).await,
            (_, None) => match http.as_mut() {
                Some(http) => http_operation(context, http, op, key, id, sent, &mut pick).await,
                None => Outcome::Failed("no HTTP target".into()),
            },
            (_, Some(_)) => Outcome::Failed("HTTP operation on a line connection".into()),
        };
        let broken = matches!(&outcome, Outcome::Failed(kind) if kind.starts_with("transport"));
        tally.count(
            name,
            outcome,
            intended.elapsed(),
            intended < schedule.measure_from,
        );
        if broken && line.is_some() {
            // The connection is gone: open another rather than fail every later command.
            match LineClient::connect(&o.target).await {
                Ok(client) => line = Some(client),
                Err(kind) => {
                    *tally.errors.entry(kind).or_insert(0) += 1;
                    break;
                }
            }
        }
    }
    tally
}
