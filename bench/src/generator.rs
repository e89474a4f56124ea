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

use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Latencies above a minute are recorded as a minute.
const MAX_MICROS: u64 = 60_000_000;

/// What to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// `GET /health`: the baseline (no store work).
    Health,
    /// Single-key `PUT /kv/keys/…` (durable) and `GET /kv/keys/…`; mix of `put`, `get` (default 1:1).
    Kv,
    /// 2-key read-modify-write transactions (begin, 2 reads, 2 writes, commit); a commit conflict is a refusal.
    KvTx,
    /// The key/value line protocol over TCP (`--target tcp://HOST:PORT`), one command in flight per
    /// connection (no pipelining); mix of `put`, `get` (default 1:1).
    Line,
    /// `POST /certificates` of 1 share, 3 in 4 to class CS, 1 in 4 to PS (`issue`).
    Certificates,
    /// Widgets: `add` (create a new widget), `link` (associate two of the first `--keys` widgets on a random
    /// port, then dissociate), `get` (`GET /widgets/{serial}`); default `add` only. Missing widgets
    /// `w1-0000000000`… are created first (the serials `strata widgets load --seed 1` makes).
    Widgets,
    /// `POST /increment` of 1 over `--keys` counters (`increment`) and `GET /increment/{key}` (`get`);
    /// default `increment` only.
    Counters,
}

impl Workload {
    /// The operations `--mix` may weight, and their default weights.
    fn operations(self) -> &'static [(&'static str, u32)] {
        match self {
            Workload::Health => &[("health", 1)],
            Workload::Kv | Workload::Line => &[("put", 1), ("get", 1)],
            Workload::KvTx => &[("transaction", 1)],
            Workload::Certificates => &[("issue", 1)],
            Workload::Widgets => &[("add", 1), ("link", 0), ("get", 0)],
            Workload::Counters => &[("increment", 1), ("get", 0)],
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Workload::Health => "health",
            Workload::Kv => "kv",
            Workload::KvTx => "kv-tx",
            Workload::Line => "line",
            Workload::Certificates => "certificates",
            Workload::Widgets => "widgets",
            Workload::Counters => "counters",
        }
    }

    /// The workload's default mix (operations of weight 0 left out).
    pub fn default_mix(self) -> Mix {
        self.operations()
            .iter()
            .filter(|(_, w)| *w > 0)
            .map(|(op, w)| (op.to_string(), *w))
            .collect()
    }

    /// Parses `op=weight,op=weight` (a bare `op` weighs 1); operations left out weigh 0.
    pub fn parse_mix(self, text: &str) -> Result<Mix, String> {
        let mut mix = Mix::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (op, weight) = match part.split_once('=') {
                Some((op, w)) => (
                    op.trim(),
                    w.trim()
                        .parse::<u32>()
                        .map_err(|_| format!("mix weight of {op:?} must be a whole number"))?,
                ),
                None => (part, 1),
            };
            mix.insert(op.to_owned(), weight);
        }
        self.check_mix(&mix)?;
        Ok(mix)
    }

    fn check_mix(self, mix: &Mix) -> Result<(), String> {
        let known: Vec<&str> = self.operations().iter().map(|(op, _)| *op).collect();
        if let Some(op) = mix.keys().find(|op| !known.contains(&op.as_str())) {
            return Err(format!(
                "{} has no operation {op:?} (it has: {})",
                self.name(),
                known.join(", ")
            ));
        }
        if mix.values().all(|w| *w == 0) {
            return Err("the mix needs at least one operation of weight above 0".into());
        }
        Ok(())
    }
}

/// Operation name → relative weight.
pub type Mix = BTreeMap<String, u32>;

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

/// The figures of a run; also the JSON report (`--output`), which `--compare` reads back.
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

/// The operations a worker can run, resolved from the mix once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Health,
    KvPut,
    KvGet,
    KvTx,
    LinePut,
    LineGet,
    Issue,
    WidgetAdd,
    WidgetLink,
    WidgetGet,
    Increment,
    CounterGet,
}

impl Op {
    fn of(workload: Workload, name: &str) -> Op {
        match (workload, name) {
            (Workload::Health, _) => Op::Health,
            (Workload::Kv, "put") => Op::KvPut,
            (Workload::Kv, _) => Op::KvGet,
            (Workload::KvTx, _) => Op::KvTx,
            (Workload::Line, "put") => Op::LinePut,
            (Workload::Line, _) => Op::LineGet,
            (Workload::Certificates, _) => Op::Issue,
            (Workload::Widgets, "add") => Op::WidgetAdd,
            (Workload::Widgets, "link") => Op::WidgetLink,
            (Workload::Widgets, _) => Op::WidgetGet,
            (Workload::Counters, "increment") => Op::Increment,
            (Workload::Counters, _) => Op::CounterGet,
        }
    }
}

enum Outcome {
    Done,
    Refused(String),
    Failed(String),
}

/// What one worker saw.
struct Tally {
    histograms: BTreeMap<String, Histogram<u64>>,
    refusals: BTreeMap<String, u64>,
    errors: BTreeMap<String, u64>,
    warmup: WarmupFigures,
    backlog: u64,
}

impl Tally {
    fn new() -> Self {
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

    fn count(&mut self, op: &str, outcome: Outcome, latency: Duration, warming_up: bool) {
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

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("valid histogram bounds")
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

/// Runs the workload and returns its figures.
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

/// Where the server's CPU time is read.
#[derive(Debug, Clone)]
enum CpuSource {
    /// Its Prometheus endpoint.
    Metrics(String),
    /// `/proc/PID/stat` on this machine.
    Pid(u32),
}

impl CpuSource {
    async fn seconds(&self) -> Result<f64, String> {
        match self {
            CpuSource::Metrics(url) => server_cpu_seconds(url).await,
            CpuSource::Pid(pid) => {
                let path = format!("/proc/{pid}/stat");
                let stat = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
                proc_stat_cpu_seconds(&stat).ok_or_else(|| format!("{path}: unexpected format"))
            }
        }
    }
}

/// utime + stime of a `/proc/PID/stat` line, in seconds. Fields 14 and 15, counted after the command name
/// (which is in parentheses and may hold spaces); in clock ticks of `USER_HZ`, 100 on Linux.
fn proc_stat_cpu_seconds(stat: &str) -> Option<f64> {
    const USER_HZ: f64 = 100.0;
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / USER_HZ)
}

/// The server's `process_cpu_seconds_total`, from its Prometheus text at `url`.
async fn server_cpu_seconds(url: &str) -> Result<f64, String> {
    let mut http = Http::new(url)?;
    let (status, body) = http.request(Method::GET, "", None).await?;
    if status != 200 {
        return Err(format!("{url} answered {status}"));
    }
    let text = String::from_utf8_lossy(&body);
    parse_cpu_seconds(&text).ok_or_else(|| format!("{url} has no process_cpu_seconds_total"))
}

fn parse_cpu_seconds(prometheus_text: &str) -> Option<f64> {
    prometheus_text.lines().find_map(|line| {
        let value = line.strip_prefix("process_cpu_seconds_total ")?;
        value.trim().parse().ok()
    })
}

fn report(
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

fn latency(h: &Histogram<u64>) -> Latency {
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
    fn label(&self) -> String {
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

/// Renders the latency percentile spectra of `reports` into one SVG: x is the percentile on a log scale of
/// 1/(1 − p) (so 90%, 99%, 99.9% are equally spaced, as in HdrHistogram's plots), y the latency in ms.
pub fn plot(
    reports: &[&Report],
    path: &Path,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    use plotters::prelude::*;
    let series: Vec<(String, Vec<(f64, f64)>)> = reports
        .iter()
        .map(|r| {
            let points = r
                .histogram
                .percentiles
                .iter()
                .filter(|p| p.percentile < 100.0)
                .map(|p| (100.0 / (100.0 - p.percentile), p.value_ms))
                .collect();
            (r.label(), points)
        })
        .collect();
    let widest = series
        .iter()
        .flat_map(|(_, points)| points.iter().map(|(x, _)| *x))
        .fold(100.0_f64, f64::max);
    let x_max = 10f64.powf(widest.log10().ceil());
    let y_max = series
        .iter()
        .flat_map(|(_, points)| points.iter().map(|(_, y)| *y))
        .fold(0.01_f64, f64::max)
        * 1.1;
    let title = match reports {
        [one] => format!(
            "strata bench {}: latency by percentile",
            one.workload.name()
        ),
        _ => "strata bench: latency by percentile".to_owned(),
    };
    let root = SVGBackend::new(path, (960, 540)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(20)
        .x_label_area_size(45)
        .y_label_area_size(65)
        .build_cartesian_2d((1.0..x_max).log_scale(), 0.0..y_max)?;
    let percent = |x: &f64| {
        // Key points of the log axis are powers of ten: 1 → 0%, 10 → 90%, 100 → 99%, 1000 → 99.9%, …
        let nines = x.log10().round() as usize;
        format!("{:.*}%", nines.saturating_sub(2), 100.0 * (1.0 - 1.0 / x))
    };
    chart
        .configure_mesh()
        .x_labels(8)
        .x_label_formatter(&percent)
        .x_desc("percentile")
        .y_desc("latency (ms)")
        .draw()?;
    for (i, (label, points)) in series.into_iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// Creates what the operations read: keys, counters, widgets (only when the mix reads them).
async fn prepare(context: &Arc<Context>) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let o = &context.options;
    let has = |op: Op| context.table.iter().any(|(_, o, _)| *o == op);
    let mut jobs = tokio::task::JoinSet::new();
    let parallel = o.connections.min(16);
    if has(Op::KvGet)
        || has(Op::KvTx)
        || has(Op::CounterGet)
        || has(Op::WidgetLink)
        || has(Op::WidgetGet)
    {
        if (has(Op::WidgetLink) || has(Op::WidgetGet)) && widgets_present(context).await {
            return Ok(());
        }
        for part in 0..parallel {
            let context = context.clone();
            jobs.spawn(async move {
                let o = &context.options;
                let mut http = Http::new(&o.target)?;
                for k in (part..o.keys).step_by(parallel) {
                    let (method, path, body) = match o.workload {
                        Workload::Counters => (
                            Method::POST,
                            "/increment".to_owned(),
                            json!({"key": format!("bench-{k}"), "value": 1}),
                        ),
                        Workload::Widgets => (
                            Method::POST,
                            "/widgets".to_owned(),
                            json!({
                                "serial_number": crate::widgets_load::serial(1, k as u64),
                                "name": format!("widget {k}"),
                                "ports": ["P", "R", "Q"],
                            }),
                        ),
                        _ => (
                            Method::PUT,
                            format!("/kv/keys/bench-{k}"),
                            json!({"value": "0"}),
                        ),
                    };
                    match call(
                        &mut http,
                        method,
                        &path,
                        Some(&body),
                        &["duplicate_serial_number"],
                    )
                    .await
                    {
                        (Outcome::Done | Outcome::Refused(_), _) => {}
                        (Outcome::Failed(kind), _) => {
                            return Err(format!("preparing {} failed: {kind}", o.workload.name()));
                        }
                    }
                }
                Ok(())
            });
        }
    }
    if has(Op::LineGet) {
        for part in 0..parallel {
            let context = context.clone();
            jobs.spawn(async move {
                let o = &context.options;
                let mut line = LineClient::connect(&o.target).await?;
                for k in (part..o.keys).step_by(parallel) {
                    match line.call(&format!("PUT bench-{k} benchmark value\n")).await {
                        Outcome::Done => {}
                        Outcome::Refused(kind) | Outcome::Failed(kind) => {
                            return Err(format!("preparing line keys failed: {kind}"));
                        }
                    }
                }
                Ok(())
            });
        }
    }
    while let Some(done) = jobs.join_next().await {
        done??;
    }
    Ok(())
}

/// Whether the first and last of the widgets the mix uses exist already (loaded by `strata widgets load
/// --seed 1`, or by an earlier run), so that a large loaded store is not walked again.
async fn widgets_present(context: &Context) -> bool {
    let o = &context.options;
    let Ok(mut http) = Http::new(&o.target) else {
        return false;
    };
    for i in [0, o.keys - 1] {
        let path = format!("/widgets/{}", crate::widgets_load::serial(1, i as u64));
        match http.request(Method::GET, &path, None).await {
            Ok((200, _)) => {}
            _ => return false,
        }
    }
    true
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

async fn http_operation(
    context: &Context,
    http: &mut Http,
    op: Op,
    key: u64,
    worker: usize,
    sent: u64,
    pick: &mut impl FnMut(u64) -> u64,
) -> Outcome {
    let widget = |i: u64| crate::widgets_load::serial(1, i);
    let (get, post) = (Method::GET, Method::POST);
    match op {
        Op::Health => call(http, get, "/health", None, &[]).await.0,
        Op::KvPut => {
            let body = json!({"value": "benchmark value"});
            let path = format!("/kv/keys/bench-{key}");
            call(http, Method::PUT, &path, Some(&body), &[]).await.0
        }
        Op::KvGet => {
            call(http, get, &format!("/kv/keys/bench-{key}"), None, &[])
                .await
                .0
        }
        Op::KvTx => {
            let other = pick(context.options.keys as u64 - 1);
            // Two distinct keys: `other` skips over `key`.
            let b = if other >= key { other + 1 } else { other };
            read_modify_write(http, key, b).await
        }
        Op::Issue => {
            let class = if pick(4) == 0 { "PS" } else { "CS" };
            let body = json!({"name": "Bench Holder", "amount": 1, "class": class});
            let refusable = ["insufficient_shares"];
            call(http, post, "/certificates", Some(&body), &refusable)
                .await
                .0
        }
        Op::WidgetAdd => {
            let ports: Vec<&str> = (0..1 + pick(3))
                .map(|_| ["P", "R", "Q"][pick(3) as usize])
                .collect();
            let body = json!({
                "serial_number": format!("bench-{}-{worker}-{sent}", context.run_id),
                "name": "bench widget",
                "ports": ports,
            });
            call(http, post, "/widgets", Some(&body), &[]).await.0
        }
        Op::WidgetLink => {
            let other = pick(context.options.keys as u64 - 1);
            let (a, b) = (
                widget(key),
                widget(if other >= key { other + 1 } else { other }),
            );
            let port = ["P", "R", "Q"][pick(3) as usize];
            let body = json!({"peer": b, "port": port});
            let path = format!("/widgets/{a}/associations");
            let refusable = ["no_free_slot", "already_associated"];
            match call(http, post, &path, Some(&body), &refusable).await.0 {
                Outcome::Done => {
                    let path = format!("/widgets/{a}/associations/{port}/{b}");
                    call(http, Method::DELETE, &path, None, &[]).await.0
                }
                other => other,
            }
        }
        Op::WidgetGet => {
            call(http, get, &format!("/widgets/{}", widget(key)), None, &[])
                .await
                .0
        }
        Op::Increment => {
            let body = json!({"key": format!("bench-{key}"), "value": 1});
            call(http, post, "/increment", Some(&body), &[]).await.0
        }
        Op::CounterGet => {
            call(http, get, &format!("/increment/bench-{key}"), None, &[])
                .await
                .0
        }
        Op::LinePut | Op::LineGet => Outcome::Failed("line operation without a connection".into()),
    }
}

/// Sends, reads the whole body, and classifies the answer; a `409` whose error code is in `refusable` is a
/// refusal. Returns the body of a success.
async fn call(
    http: &mut Http,
    method: Method,
    path: &str,
    body: Option<&Value>,
    refusable: &[&str],
) -> (Outcome, Option<Value>) {
    let (status, body) = match http.request(method, path, body).await {
        Ok(reply) => reply,
        Err(kind) => return (Outcome::Failed(kind), None),
    };
    let json: Option<Value> = serde_json::from_slice(&body).ok();
    if (200..300).contains(&status) {
        return (Outcome::Done, json);
    }
    let code = json
        .as_ref()
        .and_then(|v| v["error"]["code"].as_str())
        .map(str::to_owned);
    let outcome = match code {
        Some(code) if status == 409 && refusable.contains(&code.as_str()) => Outcome::Refused(code),
        Some(code) => Outcome::Failed(format!("http {status} {code}")),
        None => Outcome::Failed(format!("http {status}")),
    };
    (outcome, None)
}

/// One HTTP/1.1 keep-alive connection, straight on hyper (no pool, no URL parsing per request), driven by
/// the worker's own task rather than a spawned one (one wake-up per reply, not two): the generator shares
/// the machine's cores with the server, so what it spends per request is taken from the server. A
/// transport error drops the connection; the next request opens another.
struct Http {
    /// `host[:port]` as given, for the `Host` header.
    host: String,
    /// `host:port`, to connect to.
    address: String,
    /// The target's path (an API stage such as `/prod`), without a trailing slash.
    prefix: String,
    connected: Option<Connected>,
}

struct Connected {
    sender: SendRequest<Full<Bytes>>,
    /// The socket's side of the connection; polled only while a request is in flight.
    connection: std::pin::Pin<Box<HttpConnection>>,
}

type HttpConnection = hyper::client::conn::http1::Connection<
    hyper_util::rt::TokioIo<tokio::net::TcpStream>,
    Full<Bytes>,
>;

impl Http {
    fn new(target: &str) -> Result<Self, String> {
        let Some(rest) = target.strip_prefix("http://") else {
            return Err(if target.starts_with("https://") {
                "https targets are not supported: strata bench speaks plain HTTP/1.1".to_owned()
            } else {
                format!("--target {target:?} is not an http:// URL")
            });
        };
        let (host, prefix) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        if host.is_empty() {
            return Err(format!("--target {target:?} has no host"));
        }
        // A port is present unless the host ends with a name or an IPv6 literal's bracket.
        let has_port = host
            .rsplit_once(':')
            .is_some_and(|(_, port)| port.parse::<u16>().is_ok());
        Ok(Self {
            host: host.to_owned(),
            address: if has_port {
                host.to_owned()
            } else {
                format!("{host}:80")
            },
            prefix: prefix.trim_end_matches('/').to_owned(),
            connected: None,
        })
    }

    async fn connect(&self) -> Result<Connected, String> {
        let stream = tokio::net::TcpStream::connect(&self.address)
            .await
            .map_err(|_| "transport connect".to_owned())?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|_| "transport connect".to_owned())?;
        Ok(Connected {
            sender,
            connection: Box::pin(connection),
        })
    }

    /// Status and body, or the kind of transport failure.
    async fn request(
        &mut self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Bytes), String> {
        if self.connected.as_ref().is_none_or(|c| c.sender.is_closed()) {
            self.connected = Some(self.connect().await?);
        }
        let mut builder = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.prefix))
            .header(hyper::header::HOST, &self.host);
        let body = match body {
            Some(value) => {
                builder = builder.header(hyper::header::CONTENT_TYPE, "application/json");
                Full::new(Bytes::from(value.to_string()))
            }
            None => Full::new(Bytes::new()),
        };
        let request = builder
            .body(body)
            .map_err(|_| format!("request: invalid path {path:?}"))?;
        let (outcome, ended) = {
            let Connected { sender, connection } =
                self.connected.as_mut().expect("connected above");
            let exchange = async {
                sender.ready().await?;
                let response = sender.send_request(request).await?;
                let status = response.status().as_u16();
                let body = response.into_body().collect().await?.to_bytes();
                Ok::<_, hyper::Error>((status, body))
            };
            let mut exchange = std::pin::pin!(exchange);
            // The connection ends (server closed it, or an error) at most once; the exchange then finishes
            // with what was already received, or fails.
            let mut ended = false;
            let both = async {
                loop {
                    tokio::select! {
                        reply = &mut exchange => break reply,
                        _ = connection.as_mut(), if !ended => ended = true,
                    }
                }
            };
            let outcome = tokio::time::timeout(Duration::from_secs(30), both).await;
            (outcome, ended)
        };
        if ended || !matches!(outcome, Ok(Ok(_))) {
            self.connected = None;
        }
        match outcome {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(_)) => Err("transport closed".into()),
            Err(_) => Err("transport timeout".into()),
        }
    }
}

/// Begin, read both keys, write both incremented, commit; a commit conflict is a refusal.
async fn read_modify_write(http: &mut Http, a: u64, b: u64) -> Outcome {
    let began = match call(
        http,
        Method::POST,
        "/kv/transactions",
        Some(&json!({})),
        &[],
    )
    .await
    {
        (Outcome::Done, Some(body)) => body,
        (Outcome::Done, None) => {
            return Outcome::Failed("protocol transaction without an id".into());
        }
        (other, _) => return other,
    };
    let Some(tx) = began["id"].as_str() else {
        return Outcome::Failed("protocol transaction without an id".into());
    };
    for k in [a, b] {
        let path = format!("/kv/transactions/{tx}/keys/bench-{k}");
        let n: u64 = match call(http, Method::GET, &path, None, &[]).await {
            (Outcome::Done, Some(got)) => got["value"]
                .as_str()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            (Outcome::Done, None) => 0,
            (other, _) => return other,
        };
        let body = json!({"value": (n + 1).to_string()});
        if let (outcome @ (Outcome::Refused(_) | Outcome::Failed(_)), _) =
            call(http, Method::PUT, &path, Some(&body), &[]).await
        {
            return outcome;
        }
    }
    let commit = format!("/kv/transactions/{tx}/commit");
    call(http, Method::POST, &commit, None, &["conflict"])
        .await
        .0
}

/// One line-protocol connection, one command in flight.
struct LineClient {
    read: tokio::io::BufReader<tokio::net::tcp::OwnedReadHalf>,
    write: tokio::net::tcp::OwnedWriteHalf,
    reply: String,
}

impl LineClient {
    async fn connect(target: &str) -> Result<Self, String> {
        let address = target.trim_start_matches("tcp://");
        let stream = tokio::net::TcpStream::connect(address)
            .await
            .map_err(|_| "transport connect".to_owned())?;
        let _ = stream.set_nodelay(true);
        let (read, write) = stream.into_split();
        Ok(Self {
            read: tokio::io::BufReader::new(read),
            write,
            reply: String::new(),
        })
    }

    async fn call(&mut self, command: &str) -> Outcome {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
        self.reply.clear();
        if self.write.write_all(command.as_bytes()).await.is_err() {
            return Outcome::Failed("transport write".into());
        }
        match tokio::time::timeout(
            Duration::from_secs(30),
            self.read.read_line(&mut self.reply),
        )
        .await
        {
            Err(_) => return Outcome::Failed("transport timeout".into()),
            Ok(Err(_) | Ok(0)) => return Outcome::Failed("transport closed".into()),
            Ok(Ok(_)) => {}
        }
        match serde_json::from_str::<Value>(&self.reply) {
            Ok(v) if v["status"] == "Ok" => Outcome::Done,
            Ok(v) => Outcome::Failed(format!(
                "protocol {}",
                v["mesg"].as_str().unwrap_or("Error without a message")
            )),
            Err(_) => Outcome::Failed("protocol reply is not JSON".into()),
        }
    }
}

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

#[cfg(test)]
mod tests {
    use super::{parse_cpu_seconds, proc_stat_cpu_seconds};

    #[test]
    fn cpu_time_is_read_from_prometheus_text_and_proc_stat() {
        let text = "# TYPE process_cpu_seconds_total gauge\nprocess_cpu_seconds_total 12.34\n\
                    process_cpu_seconds_total_other 1\n";
        assert_eq!(parse_cpu_seconds(text), Some(12.34));
        assert_eq!(parse_cpu_seconds("process_threads 3\n"), None);
        // A command name with spaces and a parenthesis; utime 250 and stime 50 ticks.
        let stat = "4242 (strata (x) y) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0";
        assert_eq!(proc_stat_cpu_seconds(stat), Some(3.0));
        let own = std::fs::read_to_string("/proc/self/stat").unwrap();
        assert!(proc_stat_cpu_seconds(&own).is_some(), "{own}");
    }
}
