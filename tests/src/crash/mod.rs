//! Crash-recovery rounds against the real `strata serve`: concurrent clients of all four services, `kill -9` at
//! a random moment, a restart on the same data directory, and a check of every invariant of CONTRACT.md over
//! everything acknowledged since the first round.
//!
//! Each client owns what it writes (its KV keys, its counters, its widgets), so one sequence of answers fully
//! describes the state it must find after a restart: an acknowledged write must be there unless a later
//! acknowledged write of the same client replaced it, and the one request in flight at the kill may or may not
//! have happened (all of it or none of it). Certificates and widget associations are shared: every client
//! issues from the same classes and links its widgets to anyone's. Answers that never came are settled after
//! the restart: certificate issues and keyed increments are retried with their `Idempotency-Key` (and must
//! then count exactly once), the rest are observed and must be one of the two allowed outcomes.
//!
//! The keyed writes (certificate issues, the first counter client's increments, widget creates and
//! associations) and the widget deletes go through `strata-client`, so its retry rules are what runs under
//! the kills; the checks read through it too. What stays hand-written, and why: the key/value clients (no
//! key, transactions the client does not have, and each answer's version), the unkeyed counter clients
//! (the client keys every increment), and `/health`.
//!
//! The same rounds run on `strata serve --store dynamodb` ([`Store::DynamoDb`]): DynamoDB Local keeps running,
//! only the server is killed (a Lambda instance dying mid-request), and a [`FaultProxy`] between them faults
//! a share of the writes (answers lost or delayed past the SDK's attempt timeout, 500s before and after
//! applying, throttling, connections cut mid-answer).
//!
//! On both stores, `429` and `503` answers mean "outcome unknown" (as a lost answer), never "nothing
//! written": keyed requests (certificate issues, the first counter client's increments) are sent again with
//! the same key until they get a definite answer (by strata-client within its budget, then by a new call
//! with the same key), and must then count exactly once; unkeyed ones widen what the checks allow. Nothing
//! may be applied more often than it was sent (a strong counter's total ≤ the increments sent to it;
//! certificates per class ≤ the issues sent; a KV PUT's version exactly one more than the version before
//! it, give one more per earlier write of unknown outcome), and every error answer must be the contract's
//! error JSON with a documented status (`retry-after` on `429`/`503`): of a strata-client call, the one it
//! ended with (the answers it retried past are not seen). Violations carry a `[tag]` naming the invariant,
//! which [`Report::summary`] counts.
//!
//! The schedule (operations, values, load times, counter modes) comes from one seed, printed by the caller;
//! thread timing still varies between runs, so a replay repeats the schedule, not every interleaving.

mod certificates;
mod counters;
mod http;
mod kv;
mod report;
mod rng;
mod widgets;

pub use report::{PerService, Report, Tally};
pub use rng::Rng;

use crate::fault_proxy::{FaultConfig, FaultKind, FaultProxy};
use crate::server::Server;
use reqwest::StatusCode;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use strata_client::Client;

use certificates::{
    CertClient, Ledger, Settled, XR_AUTHORIZED, certificates, check_certificates, settle_issue,
};
use counters::{CounterClient, check_counters, counters, settle_increment};
use http::{Http, get_json};
use kv::{KvClient, check_kv, kv_http, kv_line};
use widgets::{Registry, WidgetClient, check_widgets, widgets};

/// What to run.
pub struct Options {
    /// The `strata` binary under test.
    pub binary: String,
    pub data_dir: PathBuf,
    pub rounds: u32,
    pub seed: u64,
    /// Load time of a round before the kill, drawn from this range (milliseconds).
    pub load_ms: (u64, u64),
    /// Only for proving that the checks can fail: halfway through each round the data directory is copied
    /// (with the server frozen, so the copy is what a crash at that instant would leave), and the server is
    /// restarted on that copy: everything acknowledged after it is lost, as on a disk that lied about fsync.
    pub rewind_disk: bool,
    pub store: Store,
}

/// Where the server keeps its data.
#[derive(Debug, Clone, PartialEq)]
pub enum Store {
    /// `--store embedded` on `data_dir`.
    Embedded,
    /// `--store dynamodb` on fresh tables in the run's DynamoDB Local (which outlives every kill: only the
    /// server dies, as a Lambda instance does mid-request), reached through a [`FaultProxy`] that faults
    /// this fraction of the writes, split evenly over every [`FaultKind`]. A third of the rounds run
    /// counters in eventual mode, folded by the server's own fold loop (the aggregator's re-scan), whose
    /// writes are faulted too.
    DynamoDb { fault_rate: f64 },
}

impl Store {
    /// DynamoDB, with the fault rate of `STRATA_CRASH_FAULT_RATE` (default `default_rate`).
    pub fn dynamodb_from_env(default_rate: f64) -> Self {
        let fault_rate = std::env::var("STRATA_CRASH_FAULT_RATE")
            .ok()
            .map(|r| r.parse().expect("STRATA_CRASH_FAULT_RATE is a number"))
            .unwrap_or(default_rate);
        Store::DynamoDb { fault_rate }
    }
}

impl Options {
    /// Rounds from `STRATA_CRASH_ROUNDS` (default `default_rounds`), seed from `STRATA_CRASH_SEED` (default:
    /// the clock).
    pub fn from_env(binary: &str, data_dir: &Path, default_rounds: u32) -> Self {
        let rounds = std::env::var("STRATA_CRASH_ROUNDS")
            .ok()
            .map(|r| r.parse().expect("STRATA_CRASH_ROUNDS is a number"))
            .unwrap_or(default_rounds);
        let seed = std::env::var("STRATA_CRASH_SEED")
            .ok()
            .map(|s| s.parse().expect("STRATA_CRASH_SEED is a number"))
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        Self {
            binary: binary.to_owned(),
            data_dir: data_dir.to_owned(),
            rounds,
            seed,
            load_ms: (150, 1500),
            rewind_disk: false,
            store: Store::Embedded,
        }
    }
}

const KV_CLIENTS: usize = 3;
const LINE_CLIENTS: usize = 1;
const CERT_CLIENTS: usize = 3;
const WIDGET_CLIENTS: usize = 3;
/// The first of them keyed, the others not.
const COUNTER_CLIENTS: usize = 3;

fn mode_args(eventual: bool) -> [&'static str; 2] {
    [
        "--counter-mode",
        if eventual { "eventual" } else { "strong" },
    ]
}

/// Waits for the first `200` on `/health` (by hand: strata-client has no call for it).
async fn healthy(http: &Http, base: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Some((StatusCode::OK, _)) = get_json(http, format!("{base}/health")).await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

/// Freezes the server, copies its data directory, lets it go on (see [`Options::rewind_disk`]).
fn snapshot(server: &Server, to: &Path) {
    let signal = |sig: &str| {
        let status = std::process::Command::new("kill")
            .args([sig, &server.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {sig}");
    };
    signal("-STOP");
    let _ = std::fs::remove_dir_all(to);
    let status = std::process::Command::new("cp")
        .args(["-a", "--sparse=always"])
        .arg(&server.data_dir)
        .arg(to)
        .status()
        .unwrap();
    signal("-CONT");
    assert!(status.success(), "copy of the data directory");
}

/// A strata-client for the server at `base` (a new one after each restart: the port changes), with its
/// default retry budget.
fn api(base: &str) -> Client {
    Client::builder(base).build().expect("an http:// base")
}

/// Runs the rounds and reports; the caller decides what fails.
pub async fn run(options: &Options) -> Report {
    let mut rng = Rng::new(options.seed);
    let mut report = Report {
        seed: options.seed,
        rounds: options.rounds,
        ..Report::default()
    };
    let http = Http::new();
    // On DynamoDB: fresh tables in the run's DynamoDB Local, and the fault proxy in front of it (healthy
    // while the share class is set up).
    let mut env: Vec<(String, String)> = Vec::new();
    let mut store_args: Vec<String> = Vec::new();
    let (proxy, faults) = match options.store {
        Store::Embedded => {
            report.store = "embedded".into();
            (None, FaultConfig::healthy())
        }
        Store::DynamoDb { fault_rate } => {
            let endpoint = crate::dynamodb::endpoint();
            let prefix = format!("crash{}-", &uuid::Uuid::new_v4().simple().to_string()[..12]);
            strata::dynamodb_local::create_tables(
                &strata::dynamodb_local::local_client(endpoint).await,
                &prefix,
            )
            .await
            .expect("tables are created");
            let proxy = FaultProxy::start(endpoint, options.seed, FaultConfig::healthy()).await;
            env = [
                ("AWS_ENDPOINT_URL", proxy.url.as_str()),
                ("AWS_REGION", "us-east-1"),
                ("AWS_ACCESS_KEY_ID", "local"),
                ("AWS_SECRET_ACCESS_KEY", "local"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .to_vec();
            store_args = ["--store", "dynamodb", "--table-prefix", &prefix]
                .map(str::to_owned)
                .to_vec();
            report.store = format!(
                "dynamodb through the fault proxy: {:.1}% of writes faulted ({}), tables {prefix}*",
                fault_rate * 100.0,
                FaultKind::ALL.map(|k| k.name()).join(", ")
            );
            (Some(proxy), FaultConfig::split(fault_rate, &FaultKind::ALL))
        }
    };
    let start = |eventual: bool| {
        let mut args: Vec<&str> = mode_args(eventual).to_vec();
        args.extend(store_args.iter().map(String::as_str));
        Server::start_with_env(&options.binary, &options.data_dir, &args, &env)
    };
    // A third of the rounds in eventual counter mode (the mode is a start-up flag; the data directory keeps no
    // trace of it). A strong-mode server folds what an eventual one left in the log, but the checks still wait
    // for the log to be folded before a switch, so each round starts from exact totals.
    let mut eventual = false;
    let mut server = start(eventual);
    api(&server.base)
        .set_share_class("XR", XR_AUTHORIZED)
        .await
        .expect("share class XR created");
    if let Some(proxy) = &proxy {
        proxy.set(faults.clone());
    }

    let mut kv: Vec<KvClient> = (0..KV_CLIENTS).map(|i| KvClient::new(i, false)).collect();
    let mut line: Vec<KvClient> = (0..LINE_CLIENTS).map(|i| KvClient::new(i, true)).collect();
    let mut certs: Vec<CertClient> = (0..CERT_CLIENTS)
        .map(|i| CertClient::new(i, options.seed))
        .collect();
    let mut ledger = Ledger::default();
    let registry: Registry = Arc::default();
    let mut widget_clients: Vec<WidgetClient> =
        (0..WIDGET_CLIENTS).map(WidgetClient::new).collect();
    let mut counter_clients: Vec<CounterClient> = (0..COUNTER_CLIENTS)
        .map(|i| CounterClient::new(i, options.seed, i == 0))
        .collect();
    let rewound = options.data_dir.with_extension("rewound");

    for round in 1..=options.rounds {
        let eventual_now = rng.below(3) == 0;
        if eventual_now != eventual {
            // The server of the last check is idle (and its log folded): start over in the other mode.
            eventual = eventual_now;
            drop(server);
            server = start(eventual);
        }
        if eventual {
            report.eventual_rounds += 1;
        }
        let base = server.base.clone();
        let client = api(&base);
        let kv_tasks: Vec<_> = std::mem::take(&mut kv)
            .into_iter()
            .map(|c| tokio::spawn(kv_http(c, http.clone(), base.clone(), rng.fork(), round)))
            .collect();
        let line_tasks: Vec<_> = std::mem::take(&mut line)
            .into_iter()
            .map(|c| tokio::spawn(kv_line(c, server.line_port, rng.fork(), round)))
            .collect();
        let cert_tasks: Vec<_> = std::mem::take(&mut certs)
            .into_iter()
            .map(|c| {
                tokio::spawn(certificates(
                    c,
                    client.clone(),
                    http.clone(),
                    rng.fork(),
                    round,
                ))
            })
            .collect();
        let widget_tasks: Vec<_> = std::mem::take(&mut widget_clients)
            .into_iter()
            .map(|c| {
                let (registry, client, http) = (registry.clone(), client.clone(), http.clone());
                tokio::spawn(widgets(c, registry, client, http, rng.fork(), round))
            })
            .collect();
        let counter_tasks: Vec<_> = std::mem::take(&mut counter_clients)
            .into_iter()
            .map(|c| {
                let (client, http, base) = (client.clone(), http.clone(), base.clone());
                tokio::spawn(counters(c, client, http, base, rng.fork()))
            })
            .collect();

        let (low, high) = options.load_ms;
        let load = Duration::from_millis(low + rng.below(high - low + 1));
        if options.rewind_disk {
            tokio::time::sleep(load / 2).await;
            snapshot(&server, &rewound);
            tokio::time::sleep(load / 2).await;
        } else {
            tokio::time::sleep(load).await;
        }
        server.kill9();

        for t in kv_tasks {
            kv.push(t.await.unwrap());
        }
        for t in line_tasks {
            line.push(t.await.unwrap());
        }
        for t in cert_tasks {
            certs.push(t.await.unwrap());
        }
        for t in widget_tasks {
            widget_clients.push(t.await.unwrap());
        }
        for t in counter_tasks {
            counter_clients.push(t.await.unwrap());
        }

        if options.rewind_disk {
            std::fs::remove_dir_all(&options.data_dir).unwrap();
            std::fs::rename(&rewound, &options.data_dir).unwrap();
        }
        let restarting = Instant::now();
        server.restart();
        assert!(
            healthy(&http, &server.base).await,
            "round {round}: the restarted server never became healthy"
        );
        report
            .restart_ms
            .push(restarting.elapsed().as_secs_f64() * 1000.0);

        let checking = Instant::now();
        let base = server.base.clone();
        let client = api(&base);
        check_round(
            &mut kv,
            &mut line,
            &mut certs,
            &mut ledger,
            &mut widget_clients,
            &registry,
            &mut counter_clients,
            eventual,
            &client,
            &http,
            &base,
            &mut report,
        )
        .await;
        report
            .check_ms
            .push(checking.elapsed().as_secs_f64() * 1000.0);
        println!(
            "round {round:>3}: {} mode, load {} ms, restart {:.0} ms, {} lost, {} gaps, {} violations",
            if eventual { "eventual" } else { "strong" },
            load.as_millis(),
            report.restart_ms.last().unwrap(),
            report.lost,
            report.gaps,
            report.violations.len()
        );
    }

    // Issues and keyed increments still unsettled: sent again with their keys until they get a definite
    // answer (an idempotency record left in progress by a killed request blocks its key for up to 30 s),
    // then everything checked once more.
    let unsettled = certs.iter().any(|c| c.pending.is_some())
        || counter_clients.iter().any(|c| c.pending.is_some());
    if unsettled {
        let deadline = Instant::now() + Duration::from_secs(45);
        let base = server.base.clone();
        let client = api(&base);
        let cert_tasks: Vec<_> = std::mem::take(&mut certs)
            .into_iter()
            .map(|mut c| {
                let (client, http) = (client.clone(), http.clone());
                tokio::spawn(async move {
                    if let Settled::Gone = settle_issue(&mut c, &client, &http, deadline).await {
                        c.violations
                            .push("a certificate issue never got an answer at the end".into());
                    }
                    c
                })
            })
            .collect();
        let counter_tasks: Vec<_> = std::mem::take(&mut counter_clients)
            .into_iter()
            .map(|mut c| {
                let (client, http) = (client.clone(), http.clone());
                tokio::spawn(async move {
                    settle_increment(&mut c, &client, &http, deadline).await;
                    c
                })
            })
            .collect();
        for t in cert_tasks {
            certs.push(t.await.unwrap());
        }
        for t in counter_tasks {
            counter_clients.push(t.await.unwrap());
        }
        check_round(
            &mut kv,
            &mut line,
            &mut certs,
            &mut ledger,
            &mut widget_clients,
            &registry,
            &mut counter_clients,
            eventual,
            &client,
            &http,
            &base,
            &mut report,
        )
        .await;
        println!(
            "settled: {} lost, {} gaps, {} violations",
            report.lost,
            report.gaps,
            report.violations.len()
        );
    }
    let tally = std::mem::take(&mut *http.tally.lock().unwrap());
    report.tally = tally;
    report.proxy = proxy.as_ref().map(FaultProxy::stats);
    report
}

/// Every check after a restart (or at the end), over everything acknowledged so far.
#[allow(clippy::too_many_arguments)]
async fn check_round(
    kv: &mut [KvClient],
    line: &mut [KvClient],
    certs: &mut [CertClient],
    ledger: &mut Ledger,
    widget_clients: &mut [WidgetClient],
    registry: &Registry,
    counter_clients: &mut [CounterClient],
    eventual: bool,
    client: &Client,
    http: &Http,
    base: &str,
    report: &mut Report,
) {
    for c in kv.iter_mut().chain(line.iter_mut()) {
        let unanswered = u64::from(c.pending.is_some());
        let unknown = std::mem::take(&mut c.unknown);
        if c.line {
            report.acked.line += std::mem::take(&mut c.acked);
            report.unanswered.line += unanswered;
            report.unknown.line += unknown;
        } else {
            report.acked.kv += std::mem::take(&mut c.acked);
            report.unanswered.kv += unanswered;
            report.unknown.kv += unknown;
        }
        report.violations.append(&mut c.violations);
        check_kv(c, http, base, report).await;
    }
    let mut pending = BTreeSet::new();
    let mut sent: BTreeMap<&'static str, u64> = BTreeMap::new();
    for c in certs.iter_mut() {
        report.acked.certificates += c.issued.len() as u64 + std::mem::take(&mut c.refused);
        report.unanswered.certificates += std::mem::take(&mut c.unanswered);
        report.unknown.certificates += std::mem::take(&mut c.unknown);
        report.retried += std::mem::take(&mut c.retried);
        for cert in std::mem::take(&mut c.issued) {
            ledger.record(cert, report);
        }
        report.violations.append(&mut c.violations);
        if let Some((_, issue)) = &c.pending {
            pending.insert(issue.name.clone());
        }
        for (class, n) in &c.sent {
            *sent.entry(class).or_default() += n;
        }
    }
    check_certificates(ledger, &pending, &sent, client, http, report).await;
    for c in widget_clients.iter_mut() {
        report.acked.widgets += std::mem::take(&mut c.acked);
        report.unanswered.widgets += std::mem::take(&mut c.unanswered);
        report.unknown.widgets += std::mem::take(&mut c.unknown);
        report.violations.append(&mut c.violations);
    }
    check_widgets(widget_clients, registry, client, http, report).await;
    // Strong totals are final when read; eventual ones may wait for the fold loop (within a second, and more
    // on a loaded machine: the wait ends as soon as the expected total is there).
    let deadline = Instant::now() + Duration::from_secs(if eventual { 10 } else { 0 });
    for c in counter_clients.iter_mut() {
        report.acked.counters += std::mem::take(&mut c.acked);
        report.unanswered.counters += std::mem::take(&mut c.unanswered);
        report.unknown.counters += std::mem::take(&mut c.unknown);
        report.retried += std::mem::take(&mut c.retried);
        report.violations.append(&mut c.violations);
        check_counters(c, client, http, deadline, report).await;
    }
}
