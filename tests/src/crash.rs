//! Crash-recovery rounds against the real `strata serve`: concurrent clients of all four services, `kill -9` at
//! a random moment, a restart on the same data directory, and a check of every invariant of API.md over
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
//! The schedule (operations, values, load times, counter modes) comes from one seed, printed by the caller;
//! thread timing still varies between runs, so a replay repeats the schedule, not every interleaving.

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
    pub seed: u64,
    pub rounds: u32,
    pub eventual_rounds: u32,
    /// Requests answered with the outcome they asked for (or a refusal the contract allows, such as
    /// `insufficient_shares`), whose effect the checks then hold the server to.
    pub acked: PerService,
    /// Requests sent whose answer never came: in flight at the kill.
    pub unanswered: PerService,
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
        self.lost == 0 && self.gaps == 0 && self.violations.is_empty()
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
        out.push_str(&format!("  restart         {}\n", stats(&self.restart_ms)));
        out.push_str(&format!("  check           {}\n", stats(&self.check_ms)));
        for v in self.violations.iter().take(40) {
            out.push_str(&format!("    {v}\n"));
        }
        if self.violations.len() > 40 {
            out.push_str(&format!("    … and {} more\n", self.violations.len() - 40));
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

async fn send(request: RequestBuilder) -> Outcome {
    match request.send().await {
        Ok(r) => {
            let status = r.status();
            match r.bytes().await {
                Ok(body) if body.is_empty() => Outcome::Answered(status, Value::Null),
                Ok(body) => Outcome::Answered(
                    status,
                    serde_json::from_slice(&body)
                        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into())),
                ),
                Err(_) => Outcome::Unanswered,
            }
        }
        Err(e) if e.is_connect() => Outcome::NotSent,
        Err(_) => Outcome::Unanswered,
    }
}

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
    /// The highest version seen per key; versions never go backwards.
    versions: BTreeMap<String, u64>,
    /// The write whose answer never came.
    pending: Option<Effects>,
    seq: u64,
    acked: u64,
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
            keys,
            versions: BTreeMap::new(),
            pending: None,
            seq: 0,
            acked: 0,
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

    fn acknowledge(&mut self, effects: Effects) {
        self.acked += 1;
        self.expected.extend(effects);
    }

    fn check_read(&mut self, key: &str, seen: Option<&str>) {
        let expected = self.expected[key].as_deref();
        if seen != expected {
            self.violations.push(format!(
                "kv {key}: a transaction read {seen:?}, the last acknowledged write left {expected:?}"
            ));
        }
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
    }
}

async fn kv_http(
    mut c: KvClient,
    http: Client,
    base: String,
    mut rng: Rng,
    round: u32,
) -> KvClient {
    loop {
        let op = c.next_op(&mut rng, round);
        match op {
            KvOp::Put(key, value) => {
                let r = http
                    .put(format!("{base}/kv/keys/{key}"))
                    .json(&json!({ "value": value }));
                match send(r).await {
                    Outcome::Answered(StatusCode::OK, body) if body["value"] == *value => {
                        let version = body["version"].as_u64().unwrap_or(0);
                        c.check_version(&key, version, true);
                        c.acknowledge(Effects::from([(key, Some(value))]));
                    }
                    Outcome::Answered(status, body) => {
                        c.violations.push(format!("kv PUT {key}: {status} {body}"));
                        return c;
                    }
                    Outcome::NotSent => return c,
                    Outcome::Unanswered => {
                        c.pending = Some(Effects::from([(key, Some(value))]));
                        return c;
                    }
                }
            }
            KvOp::Delete(key) => match send(http.delete(format!("{base}/kv/keys/{key}"))).await {
                Outcome::Answered(StatusCode::OK, body) => {
                    let existed = c.expected[&key].is_some();
                    if body["deleted"] != existed {
                        c.violations.push(format!(
                            "kv DELETE {key}: deleted {} but the key {}",
                            body["deleted"],
                            if existed { "existed" } else { "was absent" }
                        ));
                    }
                    c.acknowledge(Effects::from([(key, None)]));
                }
                Outcome::Answered(status, body) => {
                    c.violations
                        .push(format!("kv DELETE {key}: {status} {body}"));
                    return c;
                }
                Outcome::NotSent => return c,
                Outcome::Unanswered => {
                    c.pending = Some(Effects::from([(key, None)]));
                    return c;
                }
            },
            KvOp::Transaction { reads, writes } => {
                // Anything before the commit has no effect on the store: a failure there leaves nothing pending.
                let id = match send(
                    http.post(format!("{base}/kv/transactions"))
                        .json(&json!({})),
                )
                .await
                {
                    Outcome::Answered(StatusCode::CREATED, body) => {
                        body["id"].as_str().unwrap_or_default().to_owned()
                    }
                    Outcome::Answered(status, body) => {
                        c.violations.push(format!("kv begin: {status} {body}"));
                        return c;
                    }
                    _ => return c,
                };
                let tx = format!("{base}/kv/transactions/{id}/keys");
                for key in &reads {
                    match send(http.get(format!("{tx}/{key}"))).await {
                        Outcome::Answered(StatusCode::OK, body) => {
                            c.check_read(key, body["value"].as_str());
                            c.check_version(key, body["version"].as_u64().unwrap_or(0), false);
                        }
                        Outcome::Answered(StatusCode::NOT_FOUND, _) => c.check_read(key, None),
                        Outcome::Answered(status, body) => {
                            c.violations
                                .push(format!("kv tx GET {key}: {status} {body}"));
                            return c;
                        }
                        _ => return c,
                    }
                }
                for (key, effect) in &writes {
                    let r = match effect {
                        Some(value) => http
                            .put(format!("{tx}/{key}"))
                            .json(&json!({ "value": value })),
                        None => http.delete(format!("{tx}/{key}")),
                    };
                    match send(r).await {
                        Outcome::Answered(StatusCode::OK, _) => {}
                        Outcome::Answered(status, body) => {
                            c.violations
                                .push(format!("kv tx write {key}: {status} {body}"));
                            return c;
                        }
                        _ => return c,
                    }
                }
                match send(http.post(format!("{base}/kv/transactions/{id}/commit"))).await {
                    Outcome::Answered(StatusCode::OK, body)
                        if body["committed"] == true && body["writes"] == writes.len() =>
                    {
                        c.acknowledge(writes)
                    }
                    Outcome::Answered(status, body) => {
                        // The only writer of these keys cannot conflict with anyone.
                        c.violations
                            .push(format!("kv commit of {writes:?}: {status} {body}"));
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

async fn kv_line(mut c: KvClient, port: u16, mut rng: Rng, round: u32) -> KvClient {
    let Ok(stream) = TcpStream::connect(("127.0.0.1", port)).await else {
        return c;
    };
    let mut stream = BufReader::new(stream);
    let ok = json!({"status": "Ok"});
    loop {
        let op = c.next_op(&mut rng, round);
        // (the commands, the writes they make, whether the last command is the one that makes them)
        let (commands, effects) = match &op {
            KvOp::Put(key, value) => (
                vec![format!("PUT {key} {value}")],
                Effects::from([(key.clone(), Some(value.clone()))]),
            ),
            KvOp::Delete(key) => (
                vec![format!("DEL {key}")],
                Effects::from([(key.clone(), None)]),
            ),
            KvOp::Transaction { reads, writes } => {
                let mut commands = vec!["START".to_owned()];
                commands.extend(reads.iter().map(|k| format!("GET {k}")));
                commands.extend(writes.iter().map(|(k, effect)| match effect {
                    Some(v) => format!("PUT {k} {v}"),
                    None => format!("DEL {k}"),
                }));
                commands.push("COMMIT".to_owned());
                (commands, writes.clone())
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
        c.acknowledge(effects);
    }
}

/// After a restart: every key holds what the last acknowledged write left, or (all of it, or none of it)
/// what the unanswered one wrote.
async fn check_kv(c: &mut KvClient, http: &Client, base: &str, report: &mut Report) {
    let mut seen = Effects::new();
    for key in &c.keys {
        match send(http.get(format!("{base}/kv/keys/{key}"))).await {
            Outcome::Answered(StatusCode::OK, body) => {
                let version = body["version"].as_u64().unwrap_or(0);
                let last = c.versions.get(key).copied().unwrap_or(0);
                if version < last {
                    report.violation(format!(
                        "kv {key}: version {version} after a restart, {last} acknowledged before"
                    ));
                }
                c.versions.insert(key.clone(), version.max(last));
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
        let (now, before) = (&seen[key], &c.expected[key]);
        match pending.get(key) {
            Some(effect) if effect == before => {} // either way the same
            Some(effect) if now == effect => applied.push(key.clone()),
            Some(_) if now == before => not_applied.push(key.clone()),
            _ if now == before => {}
            Some(effect) => report.lost(
                if c.line { "line protocol" } else { "kv" },
                format!("kv {key}: holds {now:?}; acknowledged {before:?}, unanswered {effect:?}"),
            ),
            None => report.lost(
                if c.line { "line protocol" } else { "kv" },
                format!("kv {key}: holds {now:?}, the last acknowledged write left {before:?}"),
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
    // What is there now is the baseline of the next round.
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
    /// The unanswered issue: its key and body, retried after the restart.
    pending: Option<(String, Value)>,
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
            violations: Vec::new(),
        }
    }
}

async fn certificates(
    mut c: CertClient,
    http: Client,
    base: String,
    mut rng: Rng,
    round: u32,
) -> CertClient {
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
        let r = http
            .post(format!("{base}/certificates"))
            .header("idempotency-key", &key)
            .json(&body);
        match send(r).await {
            Outcome::Answered(StatusCode::CREATED, cert)
                if cert["name"] == body["name"] && cert["amount"] == body["amount"] =>
            {
                c.issued.push(cert)
            }
            Outcome::Answered(StatusCode::CONFLICT, e)
                if e["error"]["code"] == "insufficient_shares" =>
            {
                c.refused += 1
            }
            Outcome::Answered(status, e) => {
                c.violations
                    .push(format!("certificate issue {body}: {status} {e}"));
                return c;
            }
            Outcome::NotSent => return c,
            Outcome::Unanswered => {
                c.pending = Some((key, body));
                return c;
            }
        }
    }
}

/// Every certificate acknowledged so far, by id; and by name (names are unique per request).
#[derive(Default)]
struct Ledger {
    by_id: BTreeMap<String, Value>,
    by_name: BTreeMap<String, String>,
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
        self.by_name.insert(name, id.clone());
        self.by_id.insert(id, cert);
    }
}

async fn get_json(http: &Client, url: String) -> Option<(StatusCode, Value)> {
    match send(http.get(url)).await {
        Outcome::Answered(status, body) => Some((status, body)),
        _ => None,
    }
}

/// Gapless numbering, the shares adding up, every acknowledged certificate there and unchanged, none that
/// nobody asked for; then the unanswered issues retried with their key.
async fn check_certificates(
    ledger: &mut Ledger,
    pending: Vec<(String, Value)>,
    http: &Client,
    base: &str,
    report: &mut Report,
) -> u64 {
    let pending_names: BTreeSet<String> = pending
        .iter()
        .map(|(_, b)| b["name"].as_str().unwrap_or_default().to_owned())
        .collect();
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
            if !ledger.by_name.contains_key(&name) && !pending_names.contains(&name) {
                report.violation(format!("{class}: a certificate nobody asked for: {cert}"));
            }
            if let Some(other) = listed_names.insert(name, cert.clone()) {
                report.violation(format!("issued twice for one request: {other} and {cert}"));
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
    let mut retried = 0;
    for (key, body) in pending {
        let r = http
            .post(format!("{base}/certificates"))
            .header("idempotency-key", &key)
            .json(&body);
        let before = listed_names.get(body["name"].as_str().unwrap_or_default());
        match send(r).await {
            Outcome::Answered(StatusCode::CREATED, cert) => {
                retried += 1;
                if let Some(first) = before
                    && *first != cert
                {
                    report.violation(format!(
                        "the retry of {body} issued {cert}, but its first attempt had issued {first}"
                    ));
                }
                ledger.record(cert, report);
            }
            Outcome::Answered(StatusCode::CONFLICT, e)
                if e["error"]["code"] == "insufficient_shares" && before.is_none() =>
            {
                retried += 1
            }
            Outcome::Answered(status, e) => {
                report.violation(format!("retry of {body} (key {key}): {status} {e}"))
            }
            _ => report.violation(format!("retry of {body}: no answer")),
        }
    }
    retried
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
            violations: Vec::new(),
        }
    }
}

/// Serials of live widgets of every client: the peers to link to.
type Registry = Arc<Mutex<BTreeSet<String>>>;

async fn widgets(
    mut c: WidgetClient,
    registry: Registry,
    http: Client,
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
            match send(http.post(format!("{base}/widgets")).json(&body)).await {
                Outcome::Answered(StatusCode::CREATED, w) if w["ports"] == json!(ports) => {
                    c.acked += 1;
                    c.live.insert(serial.clone(), ports);
                    registry.lock().unwrap().insert(serial);
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
            match send(r).await {
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
            match send(http.delete(format!("{base}/widgets/{a}/associations/{port}/{b}"))).await {
                // 404: the peer was deleted by its owner, which released the association.
                Outcome::Answered(StatusCode::NO_CONTENT | StatusCode::NOT_FOUND, _) => {
                    c.acked += 1
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
            match send(http.delete(format!("{base}/widgets/{a}"))).await {
                Outcome::Answered(StatusCode::NO_CONTENT, _) => {
                    c.acked += 1;
                    c.deleted.insert(a);
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
    http: &Client,
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
    /// Every increment carries an `Idempotency-Key`, so its counters can be made exact after a crash.
    keyed: bool,
    keys: Vec<String>,
    /// Per counter: the total is at least `lo` (acknowledged) and at most `hi` (sent).
    lo: Vec<u64>,
    hi: Vec<u64>,
    /// The unanswered keyed increment: counter index, value, key.
    pending: Option<(usize, u64, String)>,
    seq: u64,
    acked: u64,
    unanswered: u64,
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
            seq: 0,
            acked: 0,
            unanswered: 0,
            violations: Vec::new(),
        }
    }
}

async fn counters(mut c: CounterClient, http: Client, base: String, mut rng: Rng) -> CounterClient {
    loop {
        c.seq += 1;
        let i = rng.below(c.keys.len() as u64) as usize;
        let value = 1 + rng.below(100);
        let body = json!({"key": c.keys[i], "value": value});
        let key = format!("crash-{}-c{}-n{}", c.seed, c.id, c.seq);
        let mut r = http.post(format!("{base}/increment")).json(&body);
        if c.keyed {
            r = r.header("idempotency-key", &key);
        }
        match send(r).await {
            // strong: the total is in the answer, and only this client adds to this counter
            Outcome::Answered(StatusCode::OK, answer) => {
                let total = answer["value"].as_u64().unwrap_or(0);
                if total < c.lo[i] + value || total > c.hi[i] + value {
                    c.violations.push(format!(
                        "counter {:?}: total {total} after adding {value} to between {} and {}",
                        c.keys[i], c.lo[i], c.hi[i]
                    ));
                }
                c.acked += 1;
                c.lo[i] = total;
                c.hi[i] += value;
            }
            Outcome::Answered(StatusCode::ACCEPTED, answer) if answer["accepted"] == value => {
                c.acked += 1;
                c.lo[i] += value;
                c.hi[i] += value;
            }
            Outcome::Answered(status, e) => {
                c.violations.push(format!("increment {body}: {status} {e}"));
                return c;
            }
            Outcome::NotSent => return c,
            Outcome::Unanswered => {
                c.unanswered += 1;
                c.hi[i] += value;
                if c.keyed {
                    c.pending = Some((i, value, key));
                }
                return c;
            }
        }
    }
}

async fn counter_total(http: &Client, base: &str, key: &str) -> Option<u64> {
    match get_json(http, format!("{base}/increment/{}", encode(key))).await? {
        (StatusCode::OK, body) => body[key].as_u64(),
        (StatusCode::NOT_FOUND, _) => Some(0),
        _ => None,
    }
}

/// Reads a counter until `until` holds for it or `deadline` passes (at least once).
async fn settle(
    http: &Client,
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

/// Acknowledged ≤ total ≤ sent per counter; then the unanswered keyed increment is retried and the
/// counter must be exact. One `deadline` for the whole check, so that a run with losses does not wait for
/// each counter in turn.
async fn check_counters(
    c: &mut CounterClient,
    http: &Client,
    base: &str,
    deadline: Instant,
    report: &mut Report,
) -> u64 {
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
                "counter {:?}: {total}, but only {hi} was ever sent",
                c.keys[i]
            ));
        }
        // Totals never go down: what is there now is a lower bound from here on.
        c.lo[i] = lo.max(total.min(hi));
    }
    let Some((i, value, key)) = c.pending.take() else {
        return 0;
    };
    let key_name = c.keys[i].clone();
    // Exact: everything before it was acknowledged, so the total is the acknowledged sum plus this one.
    let exact = c.hi[i];
    let body = json!({"key": key_name, "value": value});
    let r = http
        .post(format!("{base}/increment"))
        .header("idempotency-key", &key)
        .json(&body);
    match send(r).await {
        Outcome::Answered(StatusCode::OK | StatusCode::ACCEPTED, _) => {}
        other => {
            let said = match other {
                Outcome::Answered(s, b) => format!("{s} {b}"),
                _ => "no answer".into(),
            };
            report.violation(format!("retry of increment {body} (key {key}): {said}"));
            return 0;
        }
    }
    match settle(http, base, &key_name, deadline, |t| t == exact).await {
        Some(total) if total == exact => {}
        total => report.lost("counters", format!(
            "counter {key_name:?}: {total:?} after retrying the unanswered +{value}, exactly {exact} expected"
        )),
    }
    c.lo[i] = exact;
    1
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
async fn healthy(http: &Client, base: &str) -> bool {
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
    let http = Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    // A third of the rounds in eventual counter mode (the mode is a start-up flag; the data directory keeps no
    // trace of it). A strong-mode server folds what an eventual one left in the log, but the checks still wait
    // for the log to be folded before a switch, so each round starts from exact totals.
    let mut eventual = false;
    let mut server = Server::start(&options.binary, &options.data_dir, &mode_args(eventual));
    let r = http
        .put(server.url("/share-classes/XR"))
        .json(&json!({"authorized": XR_AUTHORIZED}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "share class XR created");

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
            server = Server::start(&options.binary, &options.data_dir, &mode_args(eventual));
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
        for c in kv.iter_mut().chain(line.iter_mut()) {
            let unanswered = u64::from(c.pending.is_some());
            if c.line {
                report.acked.line += std::mem::take(&mut c.acked);
                report.unanswered.line += unanswered;
            } else {
                report.acked.kv += std::mem::take(&mut c.acked);
                report.unanswered.kv += unanswered;
            }
            report.violations.append(&mut c.violations);
            check_kv(c, &http, &base, &mut report).await;
        }
        let mut pending = Vec::new();
        for c in certs.iter_mut() {
            report.acked.certificates += c.issued.len() as u64 + std::mem::take(&mut c.refused);
            for cert in std::mem::take(&mut c.issued) {
                ledger.record(cert, &mut report);
            }
            report.violations.append(&mut c.violations);
            if let Some(p) = c.pending.take() {
                report.unanswered.certificates += 1;
                pending.push(p);
            }
        }
        report.retried += check_certificates(&mut ledger, pending, &http, &base, &mut report).await;
        for c in widget_clients.iter_mut() {
            report.acked.widgets += std::mem::take(&mut c.acked);
            report.unanswered.widgets += std::mem::take(&mut c.unanswered);
            report.violations.append(&mut c.violations);
        }
        check_widgets(&mut widget_clients, &registry, &http, &base, &mut report).await;
        // Strong totals are final when read; eventual ones may wait for the folder (within a second, and more
        // on a loaded machine: the wait ends as soon as the expected total is there).
        let deadline = Instant::now() + Duration::from_secs(if eventual { 10 } else { 0 });
        for c in counter_clients.iter_mut() {
            report.acked.counters += std::mem::take(&mut c.acked);
            report.unanswered.counters += std::mem::take(&mut c.unanswered);
            report.violations.append(&mut c.violations);
            report.retried += check_counters(c, &http, &base, deadline, &mut report).await;
        }
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
    report
}
