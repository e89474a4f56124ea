//! `strata bench`: a closed-loop load generator for a running strata (local server or API Gateway URL).
//!
//! Each of `--connections` workers sends one operation, waits for the answer, and sends the next, for
//! `--duration` seconds. Latency is recorded per operation in an HDR histogram (microseconds). Because the
//! loop is closed, a slow reply delays the next request instead of being measured against a schedule:
//! coordinated omission is not corrected, so tail percentiles are the service time under this load, not
//! the latency an open-loop arrival rate would see.

use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// `GET /health`: the baseline (no store work).
    Health,
    /// `PUT /kv/keys/…` (durable single-key writes).
    KvPut,
    /// `GET /kv/keys/…` of keys written first.
    KvGet,
    /// 2-key read-modify-write transactions (begin, 2 gets, 2 puts, commit); conflicts counted and retried.
    KvTx,
    /// `POST /certificates` of 1 share, 3 in 4 to class CS, 1 in 4 to PS.
    Certificates,
    /// `GET /widgets/{serial}` of widgets made by `strata widgets load --seed 1` (serials below `--keys`).
    WidgetsGet,
    /// Associate two random loaded widgets on a random port, then dissociate if it succeeded; every answer
    /// below 500 (a refusal such as `no_free_slot` included) counts as an operation.
    WidgetsLink,
    /// The key/value line protocol over TCP (`--target tcp://HOST:PORT`): PUT and GET alternating, one
    /// connection per client, each waiting for its reply (no pipelining), like `redis-benchmark -P 1`.
    Line,
}

#[derive(Debug, Clone)]
pub struct Options {
    pub workload: Workload,
    pub target: String,
    pub connections: usize,
    pub duration: Duration,
    /// Distinct keys the workload spreads over (fewer keys, more contention).
    pub keys: usize,
}

/// The figures a run produces; also written as the JSON report.
#[derive(Debug, Serialize)]
pub struct Report {
    pub workload: Workload,
    pub target: String,
    pub connections: usize,
    pub duration_s: f64,
    /// Completed operations (a transaction counts once, however many requests it took).
    pub operations: u64,
    pub ops_per_s: f64,
    pub latency_ms: Latency,
    /// Non-success outcomes by status code (`conflict` for 409s in `kv-tx`), and transport errors.
    pub errors: BTreeMap<String, u64>,
    pub note: &'static str,
}

#[derive(Debug, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

struct Worker {
    histogram: Histogram<u64>,
    operations: u64,
    errors: BTreeMap<String, u64>,
}

pub async fn run(options: Options) -> Result<Report, Box<dyn std::error::Error>> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(options.connections)
        .timeout(Duration::from_secs(30))
        .build()?;
    let options = Arc::new(options);
    prepare(&client, &options).await?;
    let started = Instant::now();
    let deadline = started + options.duration;
    let mut workers = Vec::new();
    for id in 0..options.connections {
        let (client, options) = (client.clone(), options.clone());
        workers.push(tokio::spawn(async move {
            work(id, &client, &options, deadline).await
        }));
    }
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let (mut operations, mut errors) = (0, BTreeMap::new());
    for worker in workers {
        let w = worker.await?;
        histogram.add(&w.histogram)?;
        operations += w.operations;
        for (k, v) in w.errors {
            *errors.entry(k).or_insert(0) += v;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    Ok(Report {
        workload: options.workload,
        target: options.target.clone(),
        connections: options.connections,
        duration_s: elapsed,
        operations,
        ops_per_s: operations as f64 / elapsed,
        latency_ms: Latency {
            p50: ms(0.5),
            p90: ms(0.9),
            p99: ms(0.99),
            p999: ms(0.999),
            max: histogram.max() as f64 / 1000.0,
        },
        errors,
        note: "closed loop: latency is per-operation service time; coordinated omission is not corrected",
    })
}

impl Report {
    pub fn print(&self) {
        println!(
            "{:?} against {} with {} connections for {:.1} s",
            self.workload, self.target, self.connections, self.duration_s
        );
        println!(
            "  throughput  {:>10.0} ops/s ({} operations)",
            self.ops_per_s, self.operations
        );
        let l = &self.latency_ms;
        println!(
            "  latency ms  p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}",
            l.p50, l.p90, l.p99, l.p999, l.max
        );
        if self.errors.is_empty() {
            println!("  errors      none");
        } else {
            println!("  errors      {:?}", self.errors);
        }
    }
}

/// Writes the keys that reads and transactions start from.
async fn prepare(
    client: &reqwest::Client,
    options: &Options,
) -> Result<(), Box<dyn std::error::Error>> {
    if matches!(options.workload, Workload::KvGet | Workload::KvTx) {
        for k in 0..options.keys {
            let r = client
                .put(format!("{}/kv/keys/bench-{k}", options.target))
                .json(&json!({"value": "0"}))
                .send()
                .await?;
            if !r.status().is_success() {
                return Err(format!("preparing keys failed: {}", r.status()).into());
            }
        }
    }
    Ok(())
}

async fn work(id: usize, client: &reqwest::Client, options: &Options, deadline: Instant) -> Worker {
    if options.workload == Workload::Line {
        return line_worker(id, options, deadline).await;
    }
    let mut w = Worker {
        histogram: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds"),
        operations: 0,
        errors: BTreeMap::new(),
    };
    // A cheap deterministic spread of keys per worker.
    let mut next = (id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut pick = move |n: usize| {
        next ^= next << 13;
        next ^= next >> 7;
        next ^= next << 17;
        (next % n as u64) as usize
    };
    while Instant::now() < deadline {
        let started = Instant::now();
        let outcome = match options.workload {
            Workload::Health => status_of(
                client
                    .get(format!("{}/health", options.target))
                    .send()
                    .await,
            ),
            Workload::KvPut => {
                let url = format!("{}/kv/keys/bench-{}", options.target, pick(options.keys));
                status_of(
                    client
                        .put(url)
                        .json(&json!({"value": "benchmark value"}))
                        .send()
                        .await,
                )
            }
            Workload::KvGet => status_of(
                client
                    .get(format!(
                        "{}/kv/keys/bench-{}",
                        options.target,
                        pick(options.keys)
                    ))
                    .send()
                    .await,
            ),
            Workload::Line => unreachable!("line clients run in line_worker"),
            Workload::WidgetsGet => {
                let serial = crate::widgets_load::serial(1, pick(options.keys) as u64);
                status_of(
                    client
                        .get(format!("{}/widgets/{serial}", options.target))
                        .send()
                        .await,
                )
            }
            Workload::WidgetsLink => {
                let (a, b) = (
                    crate::widgets_load::serial(1, pick(options.keys) as u64),
                    crate::widgets_load::serial(1, pick(options.keys) as u64),
                );
                let port = ["P", "R", "Q"][pick(3)];
                let linked = client
                    .post(format!("{}/widgets/{a}/associations", options.target))
                    .json(&json!({"peer": b, "port": port}))
                    .send()
                    .await;
                match linked {
                    Ok(r) if r.status() == 201 => status_of(
                        client
                            .delete(format!(
                                "{}/widgets/{a}/associations/{port}/{b}",
                                options.target
                            ))
                            .send()
                            .await,
                    ),
                    Ok(r) if r.status().is_client_error() => Ok(()),
                    other => status_of(other),
                }
            }
            Workload::Certificates => {
                let class = if pick(4) == 0 { "PS" } else { "CS" };
                let body = json!({"name": "Bench Holder", "amount": 1, "class": class});
                status_of(
                    client
                        .post(format!("{}/certificates", options.target))
                        .json(&body)
                        .send()
                        .await,
                )
            }
            Workload::KvTx => {
                let (a, b) = (pick(options.keys), pick(options.keys));
                read_modify_write(
                    client,
                    &options.target,
                    a,
                    if a == b { (b + 1) % options.keys } else { b },
                )
                .await
            }
        };
        match outcome {
            Ok(()) => {
                w.operations += 1;
                let micros = started.elapsed().as_micros().max(1) as u64;
                let _ = w.histogram.record(micros.min(60_000_000));
            }
            Err(kind) => *w.errors.entry(kind).or_insert(0) += 1,
        }
    }
    w
}

fn status_of(result: Result<reqwest::Response, reqwest::Error>) -> Result<(), String> {
    match result {
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) => Err(r.status().as_u16().to_string()),
        Err(e) => Err(format!(
            "transport: {}",
            if e.is_timeout() { "timeout" } else { "error" }
        )),
    }
}

/// Begin, read both keys, write both incremented, commit. A 409 is reported as `conflict`.
async fn read_modify_write(
    client: &reqwest::Client,
    target: &str,
    a: usize,
    b: usize,
) -> Result<(), String> {
    let json = |r: Result<reqwest::Response, reqwest::Error>| async move {
        let r = r.map_err(|_| "transport: error".to_owned())?;
        let status = r.status();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        match status.as_u16() {
            200 | 201 => Ok(body),
            409 => Err("conflict".to_owned()),
            other => Err(other.to_string()),
        }
    };
    let began = json(
        client
            .post(format!("{target}/kv/transactions"))
            .json(&json!({}))
            .send()
            .await,
    )
    .await?;
    let tx = began["id"].as_str().unwrap_or_default().to_owned();
    for k in [a, b] {
        let url = format!("{target}/kv/transactions/{tx}/keys/bench-{k}");
        let got = json(client.get(&url).send().await).await?;
        let n: u64 = got["value"]
            .as_str()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        json(
            client
                .put(&url)
                .json(&json!({"value": (n + 1).to_string()}))
                .send()
                .await,
        )
        .await?;
    }
    json(
        client
            .post(format!("{target}/kv/transactions/{tx}/commit"))
            .send()
            .await,
    )
    .await?;
    Ok(())
}

/// One line-protocol connection: `PUT bench-<n> value` and `GET bench-<n>` alternating.
async fn line_worker(id: usize, options: &Options, deadline: Instant) -> Worker {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let mut w = Worker {
        histogram: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds"),
        operations: 0,
        errors: BTreeMap::new(),
    };
    let address = options.target.trim_start_matches("tcp://");
    let Ok(stream) = tokio::net::TcpStream::connect(address).await else {
        w.errors.insert("transport: connect".into(), 1);
        return w;
    };
    let _ = stream.set_nodelay(true);
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    let mut reply = String::new();
    let mut n: usize = id;
    while Instant::now() < deadline {
        n = n.wrapping_add(1);
        let key = n % options.keys;
        let command = if n.is_multiple_of(2) {
            format!("PUT bench-{key} benchmark value {n}\n")
        } else {
            format!("GET bench-{key}\n")
        };
        let started = Instant::now();
        reply.clear();
        if write.write_all(command.as_bytes()).await.is_err()
            || read.read_line(&mut reply).await.unwrap_or(0) == 0
        {
            *w.errors.entry("transport: error".into()).or_insert(0) += 1;
            break;
        }
        if reply.starts_with("{\"status\": \"Ok\"") || reply.contains("Key not found!") {
            w.operations += 1;
            let micros = started.elapsed().as_micros().max(1) as u64;
            let _ = w.histogram.record(micros.min(60_000_000));
        } else {
            *w.errors.entry(reply.trim().to_owned()).or_insert(0) += 1;
        }
    }
    w
}
