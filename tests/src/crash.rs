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
//! The same rounds run on `strata serve --store dynamodb` ([`Store::DynamoDb`]): DynamoDB Local keeps running,
//! only the server is killed (a Lambda instance dying mid-request), and a [`FaultProxy`] between them faults
//! a share of the writes (answers lost or delayed past the SDK's attempt timeout, 500s before and after
//! applying, throttling, connections cut mid-answer).
//!
//! On both stores, `429` and `503` answers mean "outcome unknown" (as a lost answer), never "nothing
//! written": keyed requests (certificate issues, the first counter client's increments) are sent again with
//! the same key until they get a definite answer, and must then count exactly once; unkeyed ones widen what
//! the checks allow. Nothing may be applied more often than it was sent (a strong counter's total ≤ the
//! increments sent to it; certificates per class ≤ the issues sent; a KV PUT's version exactly one more than
//! the version before it, give one more per earlier write of unknown outcome), and every error answer must
//! be the contract's error JSON with a documented status (`retry-after` on `429`/`503`). Violations carry a
//! `[tag]` naming the invariant, which [`Report::summary`] counts.
//!
//! The schedule (operations, values, load times, counter modes) comes from one seed, printed by the caller;
//! thread timing still varies between runs, so a replay repeats the schedule, not every interleaving.

use crate::fault_proxy::{FaultConfig, FaultKind, FaultProxy};
use crate::server::Server;
use reqwest::{Client, RequestBuilder, StatusCode};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Deterministic pseudo-random numbers (splitmix64): a seed always means the same schedule.
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// True `percent` times out of 100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    /// A generator of its own for one client, so clients do not share a sequence.
    fn fork(&mut self) -> Rng {
        Rng::new(self.next_u64())
    }
}

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
    /// counters in eventual mode, folded by the server's own folder (the aggregator's re-scan), whose
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

/// Operations per service.
#[derive(Debug, Default, Clone, Copy)]
pub struct PerService {
    pub kv: u64,
    pub line: u64,
    pub certificates: u64,
    pub widgets: u64,
    pub counters: u64,
}

impl PerService {
    fn total(&self) -> u64 {
        self.kv + self.line + self.certificates + self.widgets + self.counters
    }
}

impl std::fmt::Display for PerService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (kv {}, line protocol {}, certificates {}, widgets {}, counters {})",
            self.total(),
            self.kv,
            self.line,
            self.certificates,
            self.widgets,
            self.counters
        )
    }
}

/// The outcome of a run.
#[derive(Debug, Default)]
pub struct Report {
    /// `embedded`, or `dynamodb` with its fault rate.
    pub store: String,
    pub seed: u64,
    pub rounds: u32,
    pub eventual_rounds: u32,
    /// Requests answered with the outcome they asked for (or a refusal the contract allows, such as
    /// `insufficient_shares`), whose effect the checks then hold the server to.
    pub acked: PerService,
    /// Requests sent whose answer never came: in flight at the kill.
    pub unanswered: PerService,
    /// Requests answered `429`/`503`: applied or not, nobody knows (the keyed ones are sent again).
    pub unknown: PerService,
    /// Error answers by status and code, error-contract violations, client retries.
    pub tally: Tally,
    /// On DynamoDB: what went through the fault proxy.
    pub proxy: Option<crate::fault_proxy::Stats>,
    /// Unanswered certificate issues and keyed increments retried after the restart with their key.
    pub retried: u64,
    /// Acknowledged effects missing (or changed) after a restart.
    pub lost: u64,
    /// The same, by service.
    pub lost_by_service: BTreeMap<&'static str, u64>,
    /// Certificate numbers missing from 1..=issued count of a class (or listed twice).
    pub gaps: u64,
    /// Every other broken invariant, one line each (lost and gaps are listed here too).
    pub violations: Vec<String>,
    /// From spawning the restarted server to its first `200` on `/health`, per round.
    pub restart_ms: Vec<f64>,
    /// Time spent checking after each restart.
    pub check_ms: Vec<f64>,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.lost == 0
            && self.gaps == 0
            && self.violations.is_empty()
            && self.tally.contract_violations == 0
    }

    /// Violations per invariant: the `[tag]` a message starts with (`lost`, `gap`, or `other` without one).
    pub fn by_invariant(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for v in &self.violations {
            let tag = if let Some(rest) = v.strip_prefix('[') {
                rest.split(']').next().unwrap_or("other").to_owned()
            } else if v.starts_with("lost:") {
                "lost".to_owned()
            } else if v.starts_with("gap:") {
                "gap".to_owned()
            } else {
                "other".to_owned()
            };
            *out.entry(tag).or_default() += 1;
        }
        if self.tally.contract_violations > 0 {
            out.insert("error-contract".to_owned(), self.tally.contract_violations);
        }
        out
    }

    fn lost(&mut self, service: &'static str, what: String) {
        self.lost += 1;
        *self.lost_by_service.entry(service).or_default() += 1;
        self.violations.push(format!("lost: {what}"));
    }

    fn gap(&mut self, what: String) {
        self.gaps += 1;
        self.violations.push(format!("gap: {what}"));
    }

    fn violation(&mut self, what: String) {
        self.violations.push(what);
    }

    /// The figures, for people.
    pub fn summary(&self) -> String {
        let stats = |v: &[f64]| {
            let mut v = v.to_vec();
            v.sort_by(f64::total_cmp);
            let median = v.get(v.len() / 2).copied().unwrap_or(0.0);
            let max = v.last().copied().unwrap_or(0.0);
            format!("median {median:.0} ms, max {max:.0} ms")
        };
        let mut out = String::new();
        out.push_str("crash-recovery report\n");
        out.push_str(&format!("  store           {}\n", self.store));
        out.push_str(&format!(
            "  rounds          {} ({} in eventual counter mode)\n",
            self.rounds, self.eventual_rounds
        ));
        out.push_str(&format!(
            "  seed            {} (STRATA_CRASH_SEED={} repeats the schedule)\n",
            self.seed, self.seed
        ));
        out.push_str(&format!("  acknowledged    {}\n", self.acked));
        out.push_str(&format!("  unanswered      {}\n", self.unanswered));
        out.push_str(&format!(
            "  429/503         {} (outcome unknown: keyed ones sent again)\n",
            self.unknown
        ));
        out.push_str(&format!(
            "  client retries  {} (after 429, 503 or 409 request_in_progress, same Idempotency-Key)\n",
            self.tally.retries
        ));
        let errors: Vec<String> = self
            .tally
            .errors
            .iter()
            .map(|(label, n)| format!("{label} ×{n}"))
            .collect();
        out.push_str(&format!(
            "  error answers   {}{}\n",
            self.tally.errors.values().sum::<u64>(),
            if errors.is_empty() {
                String::new()
            } else {
                format!(" ({})", errors.join(", "))
            }
        ));
        out.push_str(&format!(
            "  error contract  {} violations (not the error JSON, undocumented status, 429/503 without retry-after)\n",
            self.tally.contract_violations
        ));
        if let Some(proxy) = &self.proxy {
            for line in proxy.to_string().lines() {
                out.push_str(&format!("  {line}\n"));
            }
        }
        out.push_str(&format!(
            "  retried         {} (unanswered issues and keyed increments, with their Idempotency-Key)\n",
            self.retried
        ));
        let by_service: Vec<String> = self
            .lost_by_service
            .iter()
            .map(|(service, n)| format!("{service} {n}"))
            .collect();
        out.push_str(&format!(
            "  lost            {}{}\n",
            self.lost,
            if by_service.is_empty() {
                String::new()
            } else {
                format!(" ({})", by_service.join(", "))
            }
        ));
        out.push_str(&format!("  gaps            {}\n", self.gaps));
        out.push_str(&format!("  violations      {}\n", self.violations.len()));
        let invariants: Vec<String> = self
            .by_invariant()
            .iter()
            .map(|(tag, n)| format!("{tag} {n}"))
            .collect();
        if !invariants.is_empty() {
            out.push_str(&format!("  by invariant    {}\n", invariants.join(", ")));
        }
        out.push_str(&format!("  restart         {}\n", stats(&self.restart_ms)));
        out.push_str(&format!("  check           {}\n", stats(&self.check_ms)));
        // The first few of each invariant, so that one kind does not hide the others.
        let mut shown: BTreeMap<String, usize> = BTreeMap::new();
        let all: Vec<&String> = self.tally.examples.iter().chain(&self.violations).collect();
        for v in &all {
            let tag = v
                .strip_prefix('[')
                .and_then(|r| r.split(']').next())
                .unwrap_or(if v.starts_with("lost:") {
                    "lost"
                } else {
                    "other"
                })
                .to_owned();
            let n = shown.entry(tag).or_default();
            *n += 1;
            if *n <= 6 {
                out.push_str(&format!("    {v}\n"));
            }
        }
        let hidden: usize = shown.values().map(|n| n.saturating_sub(6)).sum();
        if hidden > 0 {
            out.push_str(&format!("    … and {hidden} more\n"));
        }
        out
    }
}

/// How a request ended.
enum Outcome {
    Answered(StatusCode, Value),
    /// Never reached the server (the connection was refused): certainly no effect.
    NotSent,
    /// Sent, but no answer: the server died with it in flight.
    Unanswered,
}

/// What the answers looked like, over a whole run: error answers by status and code, and the ones that
/// broke the error contract.
#[derive(Debug, Default)]
pub struct Tally {
    /// `"503 store_unavailable"` → answers.
    pub errors: BTreeMap<String, u64>,
    /// Error answers that are not the contract's error JSON with a documented status (and `retry-after`
    /// on `429`/`503`).
    pub contract_violations: u64,
    /// The first few of them, per status and code.
    pub examples: Vec<String>,
    /// Requests a client sent again after an answer that asked for it (`429`, `503`,
    /// `409 request_in_progress`), with the same `Idempotency-Key`.
    pub retries: u64,
}

/// The statuses an error answer may have (CONTRACT.md, "Status codes").
const DOCUMENTED_ERRORS: [u16; 7] = [400, 404, 409, 413, 422, 429, 503];

/// An HTTP client that checks every error answer against the contract and counts them.
#[derive(Clone)]
pub struct Http {
    client: Client,
    tally: Arc<Mutex<Tally>>,
}

impl std::ops::Deref for Http {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

impl Http {
    fn new() -> Self {
        Self {
            client: Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .unwrap(),
            tally: Arc::default(),
        }
    }

    fn retried(&self) {
        self.tally.lock().unwrap().retries += 1;
    }

    async fn send(&self, request: RequestBuilder) -> Outcome {
        match request.send().await {
            Ok(r) => {
                let status = r.status();
                let retry_after = r.headers().contains_key("retry-after");
                match r.bytes().await {
                    Ok(body) => {
                        let json: Option<Value> = serde_json::from_slice(&body).ok();
                        if status.as_u16() >= 400 {
                            self.check_error(status, retry_after, json.as_ref(), &body);
                        }
                        let value = if body.is_empty() {
                            Value::Null
                        } else {
                            json.unwrap_or_else(|| {
                                Value::String(String::from_utf8_lossy(&body).into())
                            })
                        };
                        Outcome::Answered(status, value)
                    }
                    Err(_) => Outcome::Unanswered,
                }
            }
            Err(e) if e.is_connect() => Outcome::NotSent,
            Err(_) => Outcome::Unanswered,
        }
    }

    fn check_error(
        &self,
        status: StatusCode,
        retry_after: bool,
        json: Option<&Value>,
        body: &[u8],
    ) {
        let code = json
            .and_then(|j| j["error"]["code"].as_str())
            .unwrap_or("(no code)");
        let mut tally = self.tally.lock().unwrap();
        let label = format!("{} {code}", status.as_u16());
        let seen = tally.errors.entry(label.clone()).or_default();
        *seen += 1;
        let first = *seen == 1;
        let shaped = json
            .is_some_and(|j| j["error"]["code"].is_string() && j["error"]["message"].is_string());
        let mut wrong = Vec::new();
        if !shaped {
            wrong.push("not the error JSON");
        }
        if !DOCUMENTED_ERRORS.contains(&status.as_u16()) {
            wrong.push("an undocumented status");
        }
        if matches!(status.as_u16(), 429 | 503) && !retry_after {
            wrong.push("no retry-after");
        }
        if !wrong.is_empty() {
            tally.contract_violations += 1;
            if first {
                let body = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
                tally.examples.push(format!(
                    "[error-contract] {label}: {}: {body}",
                    wrong.join(", ")
                ));
            }
        }
    }
}

/// `429` and `503`: the request may or may not have been applied (a store call may have timed out after
/// the store applied it), exactly like a request whose answer never came.
fn outcome_unknown(status: StatusCode) -> bool {
    matches!(status.as_u16(), 429 | 503)
}

/// How long a client waits before sending again after `429`/`503`: shorter than the `retry-after: 1` they
/// carry, to keep the load on during a round's short life.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// Path segments here are plain ASCII except for spaces.
fn encode(segment: &str) -> String {
    segment.replace(' ', "%20")
}

// ---------------------------------------------------------------------------------------------------------
// Key/value: over HTTP and over the line protocol, single writes and transactions.

/// The effect of one write on the keys it touches: `Some(value)` or `None` for a delete.
type Effects = BTreeMap<String, Option<String>>;

enum KvOp {
    Put(String, String),
    Delete(String),
    Transaction { reads: Vec<String>, writes: Effects },
}

struct KvClient {
    id: usize,
    line: bool,
    keys: Vec<String>,
    /// What each key holds after every acknowledged write.
    expected: Effects,
    /// Per key, what writes whose outcome is unknown (answered `429`/`503`, or an error) since the last
    /// acknowledged write or read of it would have left: the key may hold any of these instead.
    unsure: BTreeMap<String, Vec<Option<String>>>,
    /// The highest version seen per key; versions never go backwards.
    versions: BTreeMap<String, u64>,
    /// Per key, the range its version is in: `(low, slack)` is `low..=low + slack`. Exactly known (slack 0)
    /// until a write of unknown outcome, each of which may have taken one more.
    version_range: BTreeMap<String, (u64, u64)>,
    /// The write whose answer never came.
    pending: Option<Effects>,
    seq: u64,
    acked: u64,
    unknown: u64,
    violations: Vec<String>,
}

impl KvClient {
    fn new(id: usize, line: bool) -> Self {
        let prefix = if line { "line" } else { "kv" };
        let keys: Vec<String> = (0..12).map(|k| format!("{prefix}-c{id}-k{k}")).collect();
        Self {
            id,
            line,
            expected: keys.iter().map(|k| (k.clone(), None)).collect(),
            version_range: keys.iter().map(|k| (k.clone(), (0, 0))).collect(),
            keys,
            unsure: BTreeMap::new(),
            versions: BTreeMap::new(),
            pending: None,
            seq: 0,
            acked: 0,
            unknown: 0,
            violations: Vec::new(),
        }
    }

    fn value(&mut self, round: u32) -> String {
        self.seq += 1;
        // Unique per write, so an observed value tells which write it came from; spaces and non-ASCII are
        // kept byte for byte (the line protocol takes the rest of the line).
        format!("r{round} c{} n{} ü", self.id, self.seq)
    }

    fn next_op(&mut self, rng: &mut Rng, round: u32) -> KvOp {
        let key = rng.pick(&self.keys).clone();
        match rng.below(100) {
            0..50 => KvOp::Put(key, self.value(round)),
            50..65 => KvOp::Delete(key),
            _ => {
                let reads = (0..1 + rng.below(2))
                    .map(|_| rng.pick(&self.keys).clone())
                    .collect();
                let mut writes = Effects::new();
                for _ in 0..2 + rng.below(4) {
                    let key = rng.pick(&self.keys).clone();
                    let effect = if rng.chance(80) {
                        Some(self.value(round))
                    } else {
                        None
                    };
                    writes.insert(key, effect);
                }
                KvOp::Transaction { reads, writes }
            }
        }
    }

    /// An acknowledged write; a key it deletes or a commit writes takes one version more (`bumps`).
    fn acknowledge(&mut self, effects: Effects, bumps: bool) {
        self.acked += 1;
        for key in effects.keys() {
            self.unsure.remove(key);
            if bumps {
                let range = self.version_range.get_mut(key).unwrap();
                range.0 += 1;
            }
        }
        self.expected.extend(effects);
    }

    /// A write that may or may not have been applied.
    fn unknown_outcome(&mut self, effects: Effects) {
        self.unknown += 1;
        for (key, effect) in effects {
            self.unsure.entry(key.clone()).or_default().push(effect);
            self.version_range.get_mut(&key).unwrap().1 += 1;
        }
    }

    /// Whether `seen` is a value the key may hold.
    fn possible(&self, key: &str, seen: Option<&str>) -> bool {
        self.expected[key].as_deref() == seen
            || self
                .unsure
                .get(key)
                .is_some_and(|u| u.iter().any(|v| v.as_deref() == seen))
    }

    /// A read outside the writes of its own transaction: what it saw is what the key holds from now on.
    fn check_read(&mut self, key: &str, seen: Option<&str>) {
        if !self.possible(key, seen) {
            let expected = self.expected[key].as_deref();
            self.violations.push(format!(
                "kv {key}: a transaction read {seen:?}, the last acknowledged write left {expected:?} \
                 (or one of {:?} of unknown outcome)",
                self.unsure.get(key).cloned().unwrap_or_default()
            ));
        }
        self.expected
            .insert(key.to_owned(), seen.map(str::to_owned));
        self.unsure.remove(key);
    }

    fn check_version(&mut self, key: &str, version: u64, write: bool) {
        let last = self.versions.get(key).copied().unwrap_or(0);
        // A write of the only writer of a key must move its version past every one seen; a read must not
        // find it below one.
        if version < last || (write && version == last) {
            self.violations.push(format!(
                "kv {key}: version {version} after version {last} (versions went backwards)"
            ));
        }
        self.versions.insert(key.to_owned(), version.max(last));
        // Exactly one more than before (a read: the same), give or take the writes of unknown outcome.
        let (low, slack) = self.version_range[key];
        let low = low + u64::from(write);
        if !(low..=low + slack).contains(&version) {
            let what = if write {
                "an acknowledged PUT"
            } else {
                "a read"
            };
            self.violations.push(if slack == 0 {
                format!(
                    "[kv-version] kv {key}: {what} has version {version}, exactly {low} expected"
                )
            } else {
                format!(
                    "[kv-version] kv {key}: {what} has version {version}, {low}..={} expected \
                     ({slack} writes of unknown outcome before it)",
                    low + slack
                )
            });
        }
        self.version_range.insert(key.to_owned(), (version, 0));
    }
}

async fn kv_http(mut c: KvClient, http: Http, base: String, mut rng: Rng, round: u32) -> KvClient {
    loop {
        let op = c.next_op(&mut rng, round);
        match op {
            KvOp::Put(key, value) => {
                let r = http
                    .put(format!("{base}/kv/keys/{key}"))
                    .json(&json!({ "value": value }));
                let effects = Effects::from([(key.clone(), Some(value.clone()))]);
                match http.send(r).await {
                    Outcome::Answered(StatusCode::OK, body) if body["value"] == *value => {
                        let version = body["version"].as_u64().unwrap_or(0);
                        c.check_version(&key, version, true);
                        c.acknowledge(effects, false);
                    }
                    Outcome::Answered(status, _) if outcome_unknown(status) => {
                        c.unknown_outcome(effects);
                        tokio::time::sleep(RETRY_PAUSE).await;
                    }
                    Outcome::Answered(status, body) => {
                        c.violations.push(format!("kv PUT {key}: {status} {body}"));
                        c.unknown_outcome(effects);
                        return c;
                    }
                    Outcome::NotSent => return c,
                    Outcome::Unanswered => {
                        c.pending = Some(effects);
                        return c;
                    }
                }
            }
            KvOp::Delete(key) => {
                let effects = Effects::from([(key.clone(), None)]);
                match http
                    .send(http.delete(format!("{base}/kv/keys/{key}")))
                    .await
                {
                    Outcome::Answered(StatusCode::OK, body) => {
                        let deleted = body["deleted"] == true;
                        let could_exist = c.expected[&key].is_some()
                            || c.unsure
                                .get(&key)
                                .is_some_and(|u| u.iter().any(Option::is_some));
                        let could_be_absent = c.possible(&key, None);
                        if (deleted && !could_exist) || (!deleted && !could_be_absent) {
                            c.violations.push(format!(
                                "kv DELETE {key}: deleted {} but the key {}",
                                body["deleted"],
                                if deleted { "was absent" } else { "existed" }
                            ));
                        }
                        // Only a delete of a present value takes a version.
                        c.acknowledge(effects, deleted);
                    }
                    Outcome::Answered(status, _) if outcome_unknown(status) => {
                        c.unknown_outcome(effects);
                        tokio::time::sleep(RETRY_PAUSE).await;
                    }
                    Outcome::Answered(status, body) => {
                        c.violations
                            .push(format!("kv DELETE {key}: {status} {body}"));
                        c.unknown_outcome(effects);
                        return c;
                    }
                    Outcome::NotSent => return c,
                    Outcome::Unanswered => {
                        c.pending = Some(effects);
                        return c;
                    }
                }
            }
            KvOp::Transaction { reads, writes } => {
                // Anything before the commit has no effect on the store: a failure there leaves nothing pending.
                let id = match http
                    .send(
                        http.post(format!("{base}/kv/transactions"))
                            .json(&json!({})),
                    )
                    .await
                {
                    Outcome::Answered(StatusCode::CREATED, body) => {
                        body["id"].as_str().unwrap_or_default().to_owned()
                    }
                    Outcome::Answered(status, _) if outcome_unknown(status) => {
                        tokio::time::sleep(RETRY_PAUSE).await;
                        continue;
                    }
                    Outcome::Answered(status, body) => {
                        c.violations.push(format!("kv begin: {status} {body}"));
                        return c;
                    }
                    _ => return c,
                };
                let tx = format!("{base}/kv/transactions/{id}/keys");
                let mut abandoned = false;
                for key in &reads {
                    match http.send(http.get(format!("{tx}/{key}"))).await {
                        Outcome::Answered(StatusCode::OK, body) => {
                            c.check_read(key, body["value"].as_str());
                            c.check_version(key, body["version"].as_u64().unwrap_or(0), false);
                        }
                        Outcome::Answered(StatusCode::NOT_FOUND, _) => c.check_read(key, None),
                        Outcome::Answered(status, _) if outcome_unknown(status) => {
                            abandoned = true;
                            break;
                        }
                        Outcome::Answered(status, body) => {
                            c.violations
                                .push(format!("kv tx GET {key}: {status} {body}"));
                            return c;
                        }
                        _ => return c,
                    }
                }
                for (key, effect) in writes.iter().filter(|_| !abandoned) {
                    let r = match effect {
                        Some(value) => http
                            .put(format!("{tx}/{key}"))
                            .json(&json!({ "value": value })),
                        None => http.delete(format!("{tx}/{key}")),
                    };
                    match http.send(r).await {
                        Outcome::Answered(StatusCode::OK, _) => {}
                        Outcome::Answered(status, _) if outcome_unknown(status) => {
                            abandoned = true;
                            break;
                        }
                        Outcome::Answered(status, body) => {
                            c.violations
                                .push(format!("kv tx write {key}: {status} {body}"));
                            return c;
                        }
                        _ => return c,
                    }
                }
                if abandoned {
                    // Left open, it expires; nothing of it is written.
                    tokio::time::sleep(RETRY_PAUSE).await;
                    continue;
                }
                match http
                    .send(http.post(format!("{base}/kv/transactions/{id}/commit")))
                    .await
                {
                    Outcome::Answered(StatusCode::OK, body)
                        if body["committed"] == true && body["writes"] == writes.len() =>
                    {
                        // Every written key takes a version, deleted or not.
                        c.acknowledge(writes, true)
                    }
                    Outcome::Answered(status, _) if outcome_unknown(status) => {
                        c.unknown_outcome(writes);
                        tokio::time::sleep(RETRY_PAUSE).await;
                    }
                    Outcome::Answered(status, body) => {
                        // The only writer of these keys cannot conflict with anyone.
                        c.violations
                            .push(format!("kv commit of {writes:?}: {status} {body}"));
                        c.unknown_outcome(writes);
                        return c;
                    }
                    Outcome::NotSent => return c,
                    Outcome::Unanswered => {
                        c.pending = Some(writes);
                        return c;
                    }
                }
            }
        }
    }
}

/// One line-protocol command and its reply; `None` if the connection ended.
async fn line_command(
    stream: &mut BufReader<TcpStream>,
    command: &str,
) -> Option<Result<Value, String>> {
    stream
        .get_mut()
        .write_all(format!("{command}\n").as_bytes())
        .await
        .ok()?;
    let mut reply = String::new();
    match stream.read_line(&mut reply).await {
        Ok(0) | Err(_) => None,
        Ok(_) => Some(serde_json::from_str(&reply).map_err(|_| reply)),
    }
}

/// The line protocol's own error messages; any other error reply is the store failing (its outcome
/// unknown, as a `503` over HTTP).
const LINE_PROTOCOL_ERRORS: [&str; 7] = [
    "Key not found!",
    "Usage:",
    "Unknown command",
    "No transaction in progress",
    "Transaction already in progress",
    "Conflict on key",
    "Transaction expired",
];

async fn kv_line(mut c: KvClient, port: u16, mut rng: Rng, round: u32) -> KvClient {
    let Ok(stream) = TcpStream::connect(("127.0.0.1", port)).await else {
        return c;
    };
    let mut stream = BufReader::new(stream);
    let ok = json!({"status": "Ok"});
    loop {
        let op = c.next_op(&mut rng, round);
        // (the commands, the writes they make, whether the last command is the one that makes them)
        let (commands, effects, bumps) = match &op {
            KvOp::Put(key, value) => (
                vec![format!("PUT {key} {value}")],
                Effects::from([(key.clone(), Some(value.clone()))]),
                // The line protocol does not answer the version; a PUT takes one more.
                true,
            ),
            KvOp::Delete(key) => (
                vec![format!("DEL {key}")],
                Effects::from([(key.clone(), None)]),
                // A delete of a present value takes a version, of an absent one not; the line protocol
                // does not say which happened.
                false,
            ),
            KvOp::Transaction { reads, writes } => {
                let mut commands = vec!["START".to_owned()];
                commands.extend(reads.iter().map(|k| format!("GET {k}")));
                commands.extend(writes.iter().map(|(k, effect)| match effect {
                    Some(v) => format!("PUT {k} {v}"),
                    None => format!("DEL {k}"),
                }));
                commands.push("COMMIT".to_owned());
                (commands, writes.clone(), true)
            }
        };
        let last = commands.len() - 1;
        for (i, command) in commands.iter().enumerate() {
            let Some(reply) = line_command(&mut stream, command).await else {
                if i == last {
                    c.pending = Some(effects);
                }
                return c;
            };
            let Ok(reply) = reply else {
                c.violations
                    .push(format!("line {command}: reply is not JSON: {reply:?}"));
                return c;
            };
            let store_error = reply["status"] == "Error"
                && reply["mesg"].as_str().is_some_and(|m| {
                    !LINE_PROTOCOL_ERRORS
                        .iter()
                        .any(|known| m.starts_with(known))
                });
            if store_error {
                // The session ends here (dropping the connection rolls an open transaction back); only the
                // command that makes the writes leaves them unknown.
                if i == last {
                    c.unknown_outcome(effects);
                }
                return c;
            }
            if let Some(key) = command.strip_prefix("GET ") {
                match (&reply["status"], &reply["result"]) {
                    (s, Value::String(v)) if s == "Ok" => c.check_read(key, Some(v)),
                    (s, _) if s == "Error" && reply["mesg"] == "Key not found!" => {
                        c.check_read(key, None)
                    }
                    _ => c.violations.push(format!("line {command}: {reply}")),
                }
            } else if reply != ok {
                c.violations.push(format!("line {command}: {reply}"));
                return c;
            }
        }
        if matches!(op, KvOp::Delete(_)) {
            // Whether it took a version is unknown from here: widen the range instead.
            for key in effects.keys() {
                c.version_range.get_mut(key).unwrap().1 += 1;
            }
        }
        c.acknowledge(effects, bumps);
    }
}

/// After a restart: every key holds what the last acknowledged write left (or what a write of unknown
/// outcome after it left), or (all of it, or none of it) what the unanswered one wrote.
async fn check_kv(c: &mut KvClient, http: &Http, base: &str, report: &mut Report) {
    let mut seen = Effects::new();
    let mut seen_versions = BTreeMap::new();
    for key in &c.keys {
        match http.send(http.get(format!("{base}/kv/keys/{key}"))).await {
            Outcome::Answered(StatusCode::OK, body) => {
                let version = body["version"].as_u64().unwrap_or(0);
                let last = c.versions.get(key).copied().unwrap_or(0);
                if version < last {
                    report.violation(format!(
                        "kv {key}: version {version} after a restart, {last} acknowledged before"
                    ));
                }
                c.versions.insert(key.clone(), version.max(last));
                seen_versions.insert(key.clone(), version);
                seen.insert(key.clone(), body["value"].as_str().map(str::to_owned));
            }
            Outcome::Answered(StatusCode::NOT_FOUND, _) => {
                seen.insert(key.clone(), None);
            }
            Outcome::Answered(status, body) => {
                report.violation(format!("kv GET {key} after restart: {status} {body}"));
                return;
            }
            _ => {
                report.violation(format!(
                    "kv GET {key}: the restarted server does not answer"
                ));
                return;
            }
        }
    }
    let pending = c.pending.take().unwrap_or_default();
    let (mut applied, mut not_applied) = (Vec::new(), Vec::new());
    for key in &c.keys {
        let now = &seen[key];
        let before_ok = c.possible(key, now.as_deref());
        match pending.get(key) {
            Some(effect) if c.possible(key, effect.as_deref()) => {
                if !before_ok && now != effect {
                    report.lost(
                        if c.line { "line protocol" } else { "kv" },
                        format!(
                            "kv {key}: holds {now:?}; acknowledged {:?}, unanswered {effect:?}",
                            c.expected[key]
                        ),
                    );
                }
            }
            Some(effect) if now == effect => applied.push(key.clone()),
            Some(_) if before_ok => not_applied.push(key.clone()),
            _ if before_ok => {}
            Some(effect) => report.lost(
                if c.line { "line protocol" } else { "kv" },
                format!(
                    "kv {key}: holds {now:?}; acknowledged {:?}, unanswered {effect:?}",
                    c.expected[key]
                ),
            ),
            None => report.lost(
                if c.line { "line protocol" } else { "kv" },
                format!(
                    "kv {key}: holds {now:?}, the last acknowledged write left {:?} (or one of {:?} of \
                     unknown outcome)",
                    c.expected[key],
                    c.unsure.get(key).cloned().unwrap_or_default()
                ),
            ),
        }
    }
    if !applied.is_empty() && !not_applied.is_empty() {
        report.violation(format!(
            "kv: an unanswered {} write of client {} is half there: {applied:?} written, {not_applied:?} not",
            if c.line { "line-protocol" } else { "HTTP" },
            c.id
        ));
    }
    // The version of every key is in its range (the unanswered write may have taken one more), and what
    // is there now is the baseline of the next round.
    for key in &c.keys {
        let (low, slack) = c.version_range[key];
        let slack = slack + u64::from(pending.contains_key(key));
        match seen_versions.get(key) {
            Some(&v) if !(low..=low + slack).contains(&v) => {
                report.violation(format!(
                    "[kv-version] kv {key}: version {v} after the restart, {low}..={} expected",
                    low + slack
                ));
                c.version_range.insert(key.clone(), (v, 0));
            }
            Some(&v) => {
                c.version_range.insert(key.clone(), (v, 0));
            }
            // Absent and never written (version 0), or a tombstone whose version GET does not show.
            None => {
                c.version_range.insert(key.clone(), (low, slack));
            }
        }
    }
    c.unsure.clear();
    c.expected = seen;
}

// ---------------------------------------------------------------------------------------------------------
// Certificates.

const CLASSES: [&str; 3] = ["CS", "PS", "XR"];
/// A small class of its own, so that it runs out and `insufficient_shares` is exercised too.
const XR_AUTHORIZED: u64 = 20_000;

struct CertClient {
    id: usize,
    seed: u64,
    seq: u64,
    /// Certificates issued to this client this round, as answered.
    issued: Vec<Value>,
    refused: u64,
    /// The issue whose outcome is not settled yet (unanswered at a kill, or still refused with `429`/`503`
    /// /`409 request_in_progress`): its key and body, sent again with the same key until it gets a definite
    /// answer, first thing in the next round (or at the end of the run).
    pending: Option<(String, Value)>,
    /// Whether `pending` went unanswered at a kill (its retry is counted in `retried`).
    pending_at_kill: bool,
    /// Attempts of `pending` so far.
    attempts: u32,
    /// Unanswered issues settled by a retry with their key.
    retried: u64,
    unknown: u64,
    unanswered: u64,
    /// Distinct issues (by key) sent, per class.
    sent: BTreeMap<&'static str, u64>,
    violations: Vec<String>,
}

impl CertClient {
    fn new(id: usize, seed: u64) -> Self {
        Self {
            id,
            seed,
            seq: 0,
            issued: Vec::new(),
            refused: 0,
            pending: None,
            pending_at_kill: false,
            attempts: 0,
            retried: 0,
            unknown: 0,
            unanswered: 0,
            sent: BTreeMap::new(),
            violations: Vec::new(),
        }
    }
}

/// How the settling of one issue ended.
enum Settled {
    /// A definite answer: issued or refused.
    Done,
    /// The server went away; still pending.
    Gone,
    /// A violation; given up on.
    Broken,
}

/// Sends `c.pending` until it gets a definite answer (`201`, or `409 insufficient_shares`), or until the
/// server goes away or `deadline` passes.
async fn settle_issue(c: &mut CertClient, http: &Http, base: &str, deadline: Instant) -> Settled {
    let Some((key, body)) = c.pending.clone() else {
        return Settled::Done;
    };
    loop {
        if c.attempts > 0 {
            http.retried();
        }
        c.attempts += 1;
        let r = http
            .post(format!("{base}/certificates"))
            .header("idempotency-key", &key)
            .json(&body);
        let outcome = http.send(r).await;
        let done = |c: &mut CertClient| {
            if c.pending_at_kill {
                c.retried += 1;
            }
            c.pending = None;
            c.pending_at_kill = false;
            c.attempts = 0;
        };
        match outcome {
            Outcome::Answered(StatusCode::CREATED, cert)
                if cert["name"] == body["name"] && cert["amount"] == body["amount"] =>
            {
                c.issued.push(cert);
                done(c);
                return Settled::Done;
            }
            Outcome::Answered(StatusCode::CONFLICT, e)
                if e["error"]["code"] == "insufficient_shares" =>
            {
                c.refused += 1;
                done(c);
                return Settled::Done;
            }
            Outcome::Answered(status, e)
                if outcome_unknown(status)
                    || (status == StatusCode::CONFLICT
                        && e["error"]["code"] == "request_in_progress") =>
            {
                if status == StatusCode::CONFLICT && c.attempts == 1 {
                    c.violations.push(format!(
                        "[in-progress-first-try] certificate issue {body} (key {key}): {status} {e} on \
                         its first attempt, with no other request under its key"
                    ));
                }
                if outcome_unknown(status) {
                    c.unknown += 1;
                }
                if Instant::now() > deadline {
                    c.violations.push(format!(
                        "certificate issue {body} (key {key}): still {status} {e} after {} attempts",
                        c.attempts
                    ));
                    return Settled::Broken;
                }
                let pause = if status == StatusCode::CONFLICT {
                    Duration::from_secs(1)
                } else {
                    RETRY_PAUSE
                };
                tokio::time::sleep(pause).await;
            }
            Outcome::Answered(status, e) => {
                c.violations.push(format!(
                    "certificate issue {body} (key {key}, attempt {}): {status} {e}",
                    c.attempts
                ));
                // Settled as far as this run goes: the checks still hold the ledger to every invariant.
                c.pending = None;
                c.attempts = 0;
                return Settled::Broken;
            }
            Outcome::NotSent => return Settled::Gone,
            Outcome::Unanswered => {
                c.unanswered += 1;
                c.pending_at_kill = true;
                return Settled::Gone;
            }
        }
    }
}

async fn certificates(
    mut c: CertClient,
    http: Http,
    base: String,
    mut rng: Rng,
    round: u32,
) -> CertClient {
    // What the last round left unsettled first, with its key: nothing new before it is settled.
    let far = Instant::now() + Duration::from_secs(3600);
    if !matches!(settle_issue(&mut c, &http, &base, far).await, Settled::Done) {
        return c;
    }
    loop {
        c.seq += 1;
        let class = match rng.below(100) {
            0..60 => "CS",
            60..85 => "PS",
            _ => "XR",
        };
        let body = json!({
            "name": format!("r{round} c{} n{}", c.id, c.seq),
            "amount": 1 + rng.below(if class == "XR" { 60 } else { 10 }),
            "class": class,
        });
        let key = format!("crash-{}-c{}-n{}", c.seed, c.id, c.seq);
        *c.sent.entry(class).or_default() += 1;
        c.pending = Some((key, body));
        if !matches!(settle_issue(&mut c, &http, &base, far).await, Settled::Done) {
            return c;
        }
    }
}

/// Every certificate acknowledged so far, by id; and by name (names are unique per request).
#[derive(Default)]
struct Ledger {
    by_id: BTreeMap<String, Value>,
    by_name: BTreeMap<String, String>,
    /// Every certificate listed at the last check, by name: an issue acknowledged later (a retry of one
    /// whose first attempt issued it) must answer that very certificate.
    listed: BTreeMap<String, Value>,
}

impl Ledger {
    fn record(&mut self, cert: Value, report: &mut Report) {
        let id = cert["id"].as_str().unwrap_or_default().to_owned();
        let name = cert["name"].as_str().unwrap_or_default().to_owned();
        if let Some(earlier) = self.by_id.get(&id)
            && *earlier != cert
        {
            report.violation(format!("{id} acknowledged twice: {earlier} and {cert}"));
        }
        if let Some(first) = self.listed.get(&name)
            && *first != cert
        {
            report.violation(format!(
                "[duplicate] the retry of {name:?} answered {cert}, but its first attempt had issued {first}"
            ));
        }
        self.by_name.insert(name, id.clone());
        self.by_id.insert(id, cert);
    }
}

async fn get_json(http: &Http, url: String) -> Option<(StatusCode, Value)> {
    match http.send(http.get(url)).await {
        Outcome::Answered(status, body) => Some((status, body)),
        _ => None,
    }
}

/// Gapless numbering, the shares adding up, every acknowledged certificate there and unchanged, none that
/// nobody asked for, none issued twice for one request, no more per class than issues were sent.
async fn check_certificates(
    ledger: &mut Ledger,
    pending: &BTreeSet<String>,
    sent: &BTreeMap<&'static str, u64>,
    http: &Http,
    base: &str,
    report: &mut Report,
) {
    let mut listed_names: BTreeMap<String, Value> = BTreeMap::new();
    for class in CLASSES {
        let Some((StatusCode::OK, info)) =
            get_json(http, format!("{base}/share-classes/{class}")).await
        else {
            report.violation(format!("share class {class} unreadable after restart"));
            continue;
        };
        let mut listed: Vec<Value> = Vec::new();
        let mut after = 0;
        loop {
            let Some((StatusCode::OK, page)) = get_json(
                http,
                format!("{base}/certificates?class={class}&after={after}&limit=1000"),
            )
            .await
            else {
                report.violation(format!("listing {class} after {after} failed"));
                break;
            };
            listed.extend(page["certificates"].as_array().cloned().unwrap_or_default());
            match page["next_after"].as_u64() {
                Some(next) if next > after => after = next,
                _ => break,
            }
        }
        let numbers: Vec<u64> = listed.iter().filter_map(|c| c["number"].as_u64()).collect();
        let count = numbers.len() as u64;
        // 1..=count exactly, in order: anything else is a hole or a duplicate.
        let mut expect = 1;
        for &n in &numbers {
            if n != expect {
                report.gap(format!("{class}: number {n} listed where {expect} belongs"));
            }
            expect = n + 1;
        }
        let next = info["next_number"].as_u64().unwrap_or(0);
        if next != count + 1 {
            report.gap(format!(
                "{class}: next_number {next} with {count} certificates listed"
            ));
        }
        let sent = sent.get(class).copied().unwrap_or(0);
        if count > sent {
            report.violation(format!(
                "[over-applied] {class}: {count} certificates, but only {sent} issues were ever sent"
            ));
        }
        let issued: u64 = listed.iter().filter_map(|c| c["amount"].as_u64()).sum();
        let (authorized, remaining) = (
            info["authorized"].as_u64().unwrap_or(0),
            info["remaining"].as_u64().unwrap_or(0),
        );
        if info["issued"] != issued || issued + remaining != authorized {
            report.violation(format!(
                "{class}: {info} but the listed certificates hold {issued} shares"
            ));
        }
        for cert in listed {
            let name = cert["name"].as_str().unwrap_or_default().to_owned();
            if !ledger.by_name.contains_key(&name) && !pending.contains(&name) {
                report.violation(format!("{class}: a certificate nobody asked for: {cert}"));
            }
            if let Some(other) = listed_names.insert(name, cert.clone()) {
                report.violation(format!(
                    "[duplicate] issued twice for one request: {other} and {cert}"
                ));
            }
        }
    }
    for (id, cert) in &ledger.by_id {
        let name = cert["name"].as_str().unwrap_or_default();
        if listed_names.get(name) != Some(cert) {
            report.lost(
                "certificates",
                format!(
                    "certificate {id}: acknowledged {cert}, now {}",
                    listed_names.get(name).cloned().unwrap_or(Value::Null)
                ),
            );
        }
    }
    ledger.listed = listed_names;
}

// ---------------------------------------------------------------------------------------------------------
// Widgets.

const PORTS: [&str; 3] = ["P", "R", "Q"];

struct WidgetClient {
    id: usize,
    seq: u64,
    /// Its widgets acknowledged created (and not deleted), with their ports.
    live: BTreeMap<String, Vec<String>>,
    maybe_created: BTreeMap<String, Vec<String>>,
    maybe_deleted: BTreeMap<String, Vec<String>>,
    /// Acknowledged deleted since the last check: they must stay gone.
    deleted: BTreeSet<String>,
    /// Associations this client created, acknowledged, not removed by it: (its widget, peer, port).
    links: BTreeSet<(String, String, String)>,
    acked: u64,
    unanswered: u64,
    /// Answered `429`/`503`: maybe applied, maybe not.
    unknown: u64,
    violations: Vec<String>,
}

impl WidgetClient {
    fn new(id: usize) -> Self {
        Self {
            id,
            seq: 0,
            live: BTreeMap::new(),
            maybe_created: BTreeMap::new(),
            maybe_deleted: BTreeMap::new(),
            deleted: BTreeSet::new(),
            links: BTreeSet::new(),
            acked: 0,
            unanswered: 0,
            unknown: 0,
            violations: Vec::new(),
        }
    }
}

/// Serials of live widgets of every client: the peers to link to.
type Registry = Arc<Mutex<BTreeSet<String>>>;

async fn widgets(
    mut c: WidgetClient,
    registry: Registry,
    http: Http,
    base: String,
    mut rng: Rng,
    round: u32,
) -> WidgetClient {
    loop {
        let roll = rng.below(100);
        if c.live.len() < 3 || roll < 30 {
            c.seq += 1;
            let serial = format!("w-c{}-n{}", c.id, c.seq);
            let ports: Vec<String> = (0..1 + rng.below(3))
                .map(|_| rng.pick(&PORTS).to_string())
                .collect();
            let body =
                json!({"serial_number": serial, "name": format!("round {round}"), "ports": ports});
            match http
                .send(http.post(format!("{base}/widgets")).json(&body))
                .await
            {
                Outcome::Answered(StatusCode::CREATED, w) if w["ports"] == json!(ports) => {
                    c.acked += 1;
                    c.live.insert(serial.clone(), ports);
                    registry.lock().unwrap().insert(serial);
                }
                Outcome::Answered(status, _) if outcome_unknown(status) => {
                    c.maybe_created.insert(serial, ports);
                    c.unknown += 1;
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                Outcome::Answered(status, e) => {
                    c.violations
                        .push(format!("widget create {body}: {status} {e}"));
                    return c;
                }
                Outcome::NotSent => return c,
                Outcome::Unanswered => {
                    c.unanswered += 1;
                    c.maybe_created.insert(serial, ports);
                    return c;
                }
            }
        } else if roll < 70 {
            let own: Vec<&String> = c.live.keys().collect();
            let a = (*rng.pick(&own)).clone();
            let port = rng.pick(&c.live[&a]).clone();
            let peers: Vec<String> = registry
                .lock()
                .unwrap()
                .iter()
                .filter(|s| **s != a)
                .cloned()
                .collect();
            if peers.is_empty() {
                continue;
            }
            let b = rng.pick(&peers).clone();
            let r = http
                .post(format!("{base}/widgets/{a}/associations"))
                .json(&json!({"peer": b, "port": port}));
            match http.send(r).await {
                Outcome::Answered(StatusCode::CREATED, _) => {
                    c.acked += 1;
                    if !c.links.insert((a.clone(), b.clone(), port.clone())) {
                        c.violations.push(format!(
                            "{a}–{b} on {port} associated twice on one port type"
                        ));
                    }
                }
                // The peer's owner deleted it, or a slot is taken: the contract's refusals, nothing changed.
                Outcome::Answered(StatusCode::NOT_FOUND | StatusCode::CONFLICT, _) => c.acked += 1,
                // Not tracked either way, as an unanswered one.
                Outcome::Answered(status, _) if outcome_unknown(status) => {
                    c.unknown += 1;
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                Outcome::Answered(status, e) => {
                    c.violations
                        .push(format!("associate {a}–{b} on {port}: {status} {e}"));
                    return c;
                }
                Outcome::NotSent => return c,
                // Not tracked: nobody relies on it, and the checks still hold it to every invariant.
                Outcome::Unanswered => {
                    c.unanswered += 1;
                    return c;
                }
            }
        } else if roll < 85 {
            let links: Vec<_> = c.links.iter().cloned().collect();
            if links.is_empty() {
                continue;
            }
            let (a, b, port) = rng.pick(&links).clone();
            c.links.remove(&(a.clone(), b.clone(), port.clone()));
            match http
                .send(http.delete(format!("{base}/widgets/{a}/associations/{port}/{b}")))
                .await
            {
                // 404: the peer was deleted by its owner, which released the association.
                Outcome::Answered(StatusCode::NO_CONTENT | StatusCode::NOT_FOUND, _) => {
                    c.acked += 1
                }
                Outcome::Answered(status, _) if outcome_unknown(status) => {
                    c.unknown += 1;
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                Outcome::Answered(status, e) => {
                    c.violations
                        .push(format!("dissociate {a}–{b} on {port}: {status} {e}"));
                    return c;
                }
                Outcome::NotSent => return c,
                Outcome::Unanswered => {
                    c.unanswered += 1;
                    return c;
                }
            }
        } else if c.live.len() > 4 {
            let own: Vec<String> = c.live.keys().cloned().collect();
            let a = rng.pick(&own).clone();
            let ports = c.live.remove(&a).unwrap();
            registry.lock().unwrap().remove(&a);
            c.links.retain(|(x, _, _)| *x != a);
            match http.send(http.delete(format!("{base}/widgets/{a}"))).await {
                Outcome::Answered(StatusCode::NO_CONTENT, _) => {
                    c.acked += 1;
                    c.deleted.insert(a);
                }
                Outcome::Answered(status, _) if outcome_unknown(status) => {
                    c.maybe_deleted.insert(a, ports);
                    c.unknown += 1;
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                Outcome::Answered(status, e) => {
                    c.violations.push(format!("delete {a}: {status} {e}"));
                    return c;
                }
                Outcome::NotSent => {
                    c.live.insert(a, ports);
                    return c;
                }
                Outcome::Unanswered => {
                    c.unanswered += 1;
                    c.maybe_deleted.insert(a, ports);
                    return c;
                }
            }
        }
    }
}

fn ports_of(w: &Value) -> Vec<String> {
    w["ports"]
        .as_array()
        .map(|p| {
            p.iter()
                .filter_map(|p| p.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn links_of(w: &Value) -> Vec<(String, String)> {
    w["associations"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|l| {
                    (
                        l["port"].as_str().unwrap_or_default().to_owned(),
                        l["peer"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Every acknowledged widget there with its ports, every deleted one gone, every acknowledged association
/// there while both ends live; and over every widget reachable: symmetric, within capacity, no dead peer.
async fn check_widgets(
    clients: &mut [WidgetClient],
    registry: &Registry,
    http: &Http,
    base: &str,
    report: &mut Report,
) {
    let mut fetched: BTreeMap<String, Option<Value>> = BTreeMap::new();
    let mut queue: Vec<String> = Vec::new();
    for c in clients.iter() {
        queue.extend(c.live.keys().cloned());
        queue.extend(c.maybe_created.keys().cloned());
        queue.extend(c.maybe_deleted.keys().cloned());
        queue.extend(c.deleted.iter().cloned());
    }
    while let Some(serial) = queue.pop() {
        if fetched.contains_key(&serial) {
            continue;
        }
        let w = match get_json(http, format!("{base}/widgets/{}", encode(&serial))).await {
            Some((StatusCode::OK, w)) => Some(w),
            Some((StatusCode::NOT_FOUND, _)) => None,
            other => {
                report.violation(format!("GET widget {serial}: {other:?}"));
                None
            }
        };
        if let Some(w) = &w {
            queue.extend(links_of(w).into_iter().map(|(_, peer)| peer));
        }
        fetched.insert(serial, w);
    }
    // the invariants, over everything reachable
    for (serial, w) in &fetched {
        let Some(w) = w else { continue };
        let ports = ports_of(w);
        let links = links_of(w);
        let unique: BTreeSet<&(String, String)> = links.iter().collect();
        if unique.len() != links.len() {
            report.violation(format!("{serial}: associated twice on one port type: {w}"));
        }
        for port in PORTS {
            let slots = ports.iter().filter(|p| *p == port).count() as i64;
            let used = links.iter().filter(|(p, _)| p == port).count() as i64;
            if used > slots || w["free"][port] != slots - used {
                report.violation(format!(
                    "{serial}: {used} of {slots} {port} slots used: {w}"
                ));
            }
        }
        for (port, peer) in &links {
            match fetched.get(peer) {
                Some(Some(p)) if links_of(p).contains(&(port.clone(), serial.clone())) => {}
                Some(Some(p)) => {
                    report.violation(format!("{serial}–{peer} on {port} is one-sided: {w} / {p}"))
                }
                _ => report.violation(format!(
                    "{serial} is associated with {peer}, which does not exist"
                )),
            }
        }
    }
    let alive = |serial: &str| matches!(fetched.get(serial), Some(Some(_)));
    let mut live_now = BTreeSet::new();
    for c in clients.iter_mut() {
        for (serial, ports) in &c.live {
            match fetched.get(serial) {
                Some(Some(w)) if ports_of(w) == *ports => {}
                other => report.lost(
                    "widgets",
                    format!(
                        "widget {serial} (ports {ports:?}) acknowledged, now {:?}",
                        other.cloned().flatten()
                    ),
                ),
            }
        }
        for serial in std::mem::take(&mut c.deleted) {
            if alive(&serial) {
                report.lost(
                    "widgets",
                    format!("widget {serial} acknowledged deleted, but it is back"),
                );
            }
        }
        for (serial, ports) in std::mem::take(&mut c.maybe_created)
            .into_iter()
            .chain(std::mem::take(&mut c.maybe_deleted))
        {
            if alive(&serial) {
                c.live.insert(serial, ports);
            }
        }
        for (a, b, port) in &c.links {
            if alive(a) && alive(b) {
                let w = fetched[a].as_ref().unwrap();
                if !links_of(w).contains(&(port.clone(), b.clone())) {
                    report.lost(
                        "widgets",
                        format!("association {a}–{b} on {port} acknowledged, now {w}"),
                    );
                }
            }
        }
        c.links.retain(|(a, b, _)| alive(a) && alive(b));
        c.live.retain(|serial, _| alive(serial));
        live_now.extend(c.live.keys().cloned());
    }
    *registry.lock().unwrap() = live_now;
}

// ---------------------------------------------------------------------------------------------------------
// Counters.

struct CounterClient {
    id: usize,
    seed: u64,
    /// Every increment carries an `Idempotency-Key` and is sent again with it until it gets a definite
    /// answer, so its counters are exact whenever nothing is pending.
    keyed: bool,
    keys: Vec<String>,
    /// Per counter: the total is at least `lo` (acknowledged) and at most `hi` (sent: acknowledged,
    /// unanswered, or answered with an error).
    lo: Vec<u64>,
    hi: Vec<u64>,
    /// The keyed increment not settled yet: counter index, value, key; carried into the next round.
    pending: Option<(usize, u64, String)>,
    pending_at_kill: bool,
    attempts: u32,
    retried: u64,
    seq: u64,
    acked: u64,
    unanswered: u64,
    unknown: u64,
    violations: Vec<String>,
}

impl CounterClient {
    fn new(id: usize, seed: u64, keyed: bool) -> Self {
        let keys: Vec<String> = (0..4).map(|k| format!("crash c{id} k{k}")).collect();
        Self {
            id,
            seed,
            keyed,
            lo: vec![0; keys.len()],
            hi: vec![0; keys.len()],
            keys,
            pending: None,
            pending_at_kill: false,
            attempts: 0,
            retried: 0,
            seq: 0,
            acked: 0,
            unanswered: 0,
            unknown: 0,
            violations: Vec::new(),
        }
    }
}

/// Sends the keyed client's pending increment until it gets a definite answer; true if it did.
async fn settle_increment(
    c: &mut CounterClient,
    http: &Http,
    base: &str,
    deadline: Instant,
) -> bool {
    let Some((i, value, key)) = c.pending.clone() else {
        return true;
    };
    let body = json!({"key": c.keys[i], "value": value});
    loop {
        if c.attempts > 0 {
            http.retried();
        }
        c.attempts += 1;
        let r = http
            .post(format!("{base}/increment"))
            .header("idempotency-key", &key)
            .json(&body);
        let outcome = http.send(r).await;
        let exact = c.hi[i];
        match outcome {
            Outcome::Answered(status @ (StatusCode::OK | StatusCode::ACCEPTED), answer) => {
                // Exactly once: every earlier increment of this client was settled, so the total (in a
                // strong answer; a replay gives the first answer's) is everything sent.
                if status == StatusCode::OK && answer["value"].as_u64() != Some(exact) {
                    c.violations.push(format!(
                        "[exactly-once] counter {:?}: keyed +{value} (key {key}) answered total {}, \
                         exactly {exact} expected",
                        c.keys[i], answer["value"]
                    ));
                }
                if status == StatusCode::ACCEPTED && answer["accepted"] != value {
                    c.violations
                        .push(format!("increment {body}: {status} {answer}"));
                }
                if c.pending_at_kill {
                    c.retried += 1;
                }
                c.acked += 1;
                c.lo[i] = exact;
                c.pending = None;
                c.pending_at_kill = false;
                c.attempts = 0;
                return true;
            }
            Outcome::Answered(status, e)
                if outcome_unknown(status)
                    || (status == StatusCode::CONFLICT
                        && e["error"]["code"] == "request_in_progress") =>
            {
                if status == StatusCode::CONFLICT && c.attempts == 1 {
                    c.violations.push(format!(
                        "[in-progress-first-try] increment {body} (key {key}): {status} {e} on its first \
                         attempt, with no other request under its key"
                    ));
                }
                if outcome_unknown(status) {
                    c.unknown += 1;
                }
                if Instant::now() > deadline {
                    c.violations.push(format!(
                        "increment {body} (key {key}): still {status} {e} after {} attempts",
                        c.attempts
                    ));
                    return false;
                }
                let conflict = status == StatusCode::CONFLICT;
                tokio::time::sleep(if conflict {
                    Duration::from_secs(1)
                } else {
                    RETRY_PAUSE
                })
                .await;
            }
            Outcome::Answered(status, e) => {
                c.violations.push(format!(
                    "increment {body} (key {key}, attempt {}): {status} {e}",
                    c.attempts
                ));
                return false;
            }
            Outcome::NotSent => return false,
            Outcome::Unanswered => {
                c.unanswered += 1;
                c.pending_at_kill = true;
                return false;
            }
        }
    }
}

async fn counters(mut c: CounterClient, http: Http, base: String, mut rng: Rng) -> CounterClient {
    let far = Instant::now() + Duration::from_secs(3600);
    if !settle_increment(&mut c, &http, &base, far).await {
        return c;
    }
    loop {
        c.seq += 1;
        let i = rng.below(c.keys.len() as u64) as usize;
        let value = 1 + rng.below(100);
        let body = json!({"key": c.keys[i], "value": value});
        let key = format!("crash-{}-c{}-n{}", c.seed, c.id, c.seq);
        c.hi[i] += value;
        if c.keyed {
            c.pending = Some((i, value, key));
            if !settle_increment(&mut c, &http, &base, far).await {
                return c;
            }
            continue;
        }
        let r = http.post(format!("{base}/increment")).json(&body);
        match http.send(r).await {
            // strong: the total is in the answer, and only this client adds to this counter
            Outcome::Answered(StatusCode::OK, answer) => {
                let total = answer["value"].as_u64().unwrap_or(0);
                if total > c.hi[i] {
                    c.violations.push(format!(
                        "[over-applied] counter {:?}: total {total} after adding {value}, but only {} was \
                         ever sent",
                        c.keys[i], c.hi[i]
                    ));
                } else if total < c.lo[i] + value {
                    c.violations.push(format!(
                        "counter {:?}: total {total} after adding {value} to at least {}",
                        c.keys[i], c.lo[i]
                    ));
                }
                c.acked += 1;
                c.lo[i] = total.min(c.hi[i]);
            }
            Outcome::Answered(StatusCode::ACCEPTED, answer) if answer["accepted"] == value => {
                c.acked += 1;
                c.lo[i] += value;
            }
            Outcome::Answered(status, _) if outcome_unknown(status) => {
                c.unknown += 1;
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            Outcome::Answered(status, e) => {
                c.violations.push(format!("increment {body}: {status} {e}"));
                return c;
            }
            Outcome::NotSent => {
                c.hi[i] -= value;
                return c;
            }
            Outcome::Unanswered => {
                c.unanswered += 1;
                return c;
            }
        }
    }
}

async fn counter_total(http: &Http, base: &str, key: &str) -> Option<u64> {
    match get_json(http, format!("{base}/increment/{}", encode(key))).await? {
        (StatusCode::OK, body) => body[key].as_u64(),
        (StatusCode::NOT_FOUND, _) => Some(0),
        _ => None,
    }
}

/// Reads a counter until `until` holds for it or `deadline` passes (at least once).
async fn settle(
    http: &Http,
    base: &str,
    key: &str,
    deadline: Instant,
    until: impl Fn(u64) -> bool,
) -> Option<u64> {
    loop {
        let total = counter_total(http, base, key).await;
        if total.is_some_and(&until) || Instant::now() > deadline {
            return total;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Acknowledged ≤ total ≤ sent per counter (for the keyed client, with nothing pending: exactly what was
/// sent). One `deadline` for the whole check, so that a run with losses does not wait for each counter in
/// turn.
async fn check_counters(
    c: &mut CounterClient,
    http: &Http,
    base: &str,
    deadline: Instant,
    report: &mut Report,
) {
    for i in 0..c.keys.len() {
        let (lo, hi) = (c.lo[i], c.hi[i]);
        let Some(total) = settle(http, base, &c.keys[i], deadline, |t| t >= lo).await else {
            report.violation(format!("counter {:?} unreadable after restart", c.keys[i]));
            continue;
        };
        if total < lo {
            report.lost(
                "counters",
                format!(
                    "counter {:?}: {total}, but {lo} was acknowledged",
                    c.keys[i]
                ),
            );
        } else if total > hi {
            report.violation(format!(
                "[over-applied] counter {:?}{}: {total}, but only {hi} was ever sent",
                c.keys[i],
                if c.keyed { " (keyed)" } else { "" }
            ));
        }
        // Totals never go down: what is there now is a lower bound from here on.
        c.lo[i] = lo.max(total.min(hi));
    }
}

// ---------------------------------------------------------------------------------------------------------
// The rounds.

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

/// Waits for the first `200` on `/health`.
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
    let r = http
        .put(server.url("/share-classes/XR"))
        .json(&json!({"authorized": XR_AUTHORIZED}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "share class XR created");
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
                    http.clone(),
                    base.clone(),
                    rng.fork(),
                    round,
                ))
            })
            .collect();
        let widget_tasks: Vec<_> = std::mem::take(&mut widget_clients)
            .into_iter()
            .map(|c| {
                let (registry, http, base) = (registry.clone(), http.clone(), base.clone());
                tokio::spawn(widgets(c, registry, http, base, rng.fork(), round))
            })
            .collect();
        let counter_tasks: Vec<_> = std::mem::take(&mut counter_clients)
            .into_iter()
            .map(|c| tokio::spawn(counters(c, http.clone(), base.clone(), rng.fork())))
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
        check_round(
            &mut kv,
            &mut line,
            &mut certs,
            &mut ledger,
            &mut widget_clients,
            &registry,
            &mut counter_clients,
            eventual,
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
        let cert_tasks: Vec<_> = std::mem::take(&mut certs)
            .into_iter()
            .map(|mut c| {
                let (http, base) = (http.clone(), base.clone());
                tokio::spawn(async move {
                    if let Settled::Gone = settle_issue(&mut c, &http, &base, deadline).await {
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
                let (http, base) = (http.clone(), base.clone());
                tokio::spawn(async move {
                    settle_increment(&mut c, &http, &base, deadline).await;
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
        if let Some((_, body)) = &c.pending {
            pending.insert(body["name"].as_str().unwrap_or_default().to_owned());
        }
        for (class, n) in &c.sent {
            *sent.entry(class).or_default() += n;
        }
    }
    check_certificates(ledger, &pending, &sent, http, base, report).await;
    for c in widget_clients.iter_mut() {
        report.acked.widgets += std::mem::take(&mut c.acked);
        report.unanswered.widgets += std::mem::take(&mut c.unanswered);
        report.unknown.widgets += std::mem::take(&mut c.unknown);
        report.violations.append(&mut c.violations);
    }
    check_widgets(widget_clients, registry, http, base, report).await;
    // Strong totals are final when read; eventual ones may wait for the folder (within a second, and more
    // on a loaded machine: the wait ends as soon as the expected total is there).
    let deadline = Instant::now() + Duration::from_secs(if eventual { 10 } else { 0 });
    for c in counter_clients.iter_mut() {
        report.acked.counters += std::mem::take(&mut c.acked);
        report.unanswered.counters += std::mem::take(&mut c.unanswered);
        report.unknown.counters += std::mem::take(&mut c.unknown);
        report.retried += std::mem::take(&mut c.retried);
        report.violations.append(&mut c.violations);
        check_counters(c, http, base, deadline, report).await;
    }
}
