//! Key/value clients (over HTTP and over the line protocol, single writes and transactions) and their check.

use reqwest::StatusCode;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::http::{Http, Outcome, RETRY_PAUSE, outcome_unknown};
use super::report::Report;
use super::rng::Rng;

/// The effect of one write on the keys it touches: `Some(value)` or `None` for a delete.
pub(super) type Effects = BTreeMap<String, Option<String>>;

pub(super) enum KvOp {
    Put(String, String),
    Delete(String),
    Transaction { reads: Vec<String>, writes: Effects },
}

pub(super) struct KvClient {
    pub(super) id: usize,
    pub(super) line: bool,
    pub(super) keys: Vec<String>,
    /// What each key holds after every acknowledged write.
    pub(super) expected: Effects,
    /// Per key, what writes whose outcome is unknown (answered `429`/`503`, or an error) since the last
    /// acknowledged write or read of it would have left: the key may hold any of these instead.
    pub(super) unsure: BTreeMap<String, Vec<Option<String>>>,
    /// The highest version seen per key; versions never go backwards.
    pub(super) versions: BTreeMap<String, u64>,
    /// Per key, the range its version is in: `(low, slack)` is `low..=low + slack`. Exactly known (slack 0)
    /// until a write of unknown outcome, each of which may have taken one more.
    pub(super) version_range: BTreeMap<String, (u64, u64)>,
    /// The write whose answer never came.
    pub(super) pending: Option<Effects>,
    pub(super) seq: u64,
    pub(super) acked: u64,
    pub(super) unknown: u64,
    pub(super) violations: Vec<String>,
}

impl KvClient {
    pub(super) fn new(id: usize, line: bool) -> Self {
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

    pub(super) fn value(&mut self, round: u32) -> String {
        self.seq += 1;
        // Unique per write, so an observed value tells which write it came from; spaces and non-ASCII are
        // kept byte for byte (the line protocol takes the rest of the line).
        format!("r{round} c{} n{} ü", self.id, self.seq)
    }

    pub(super) fn next_op(&mut self, rng: &mut Rng, round: u32) -> KvOp {
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
    pub(super) fn acknowledge(&mut self, effects: Effects, bumps: bool) {
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
    pub(super) fn unknown_outcome(&mut self, effects: Effects) {
        self.unknown += 1;
        for (key, effect) in effects {
            self.unsure.entry(key.clone()).or_default().push(effect);
            self.version_range.get_mut(&key).unwrap().1 += 1;
        }
    }

    /// Whether `seen` is a value the key may hold.
    pub(super) fn possible(&self, key: &str, seen: Option<&str>) -> bool {
        self.expected[key].as_deref() == seen
            || self
                .unsure
                .get(key)
                .is_some_and(|u| u.iter().any(|v| v.as_deref() == seen))
    }

    /// A read outside the writes of its own transaction: what it saw is what the key holds from now on.
    pub(super) fn check_read(&mut self, key: &str, seen: Option<&str>) {
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

    pub(super) fn check_version(&mut self, key: &str, version: u64, write: bool) {
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

pub(super) async fn kv_http(
    mut c: KvClient,
    http: Http,
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
pub(super) async fn line_command(
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
pub(super) const LINE_PROTOCOL_ERRORS: [&str; 7] = [
    "Key not found!",
    "Usage:",
    "Unknown command",
    "No transaction in progress",
    "Transaction already in progress",
    "Conflict on key",
    "Transaction expired",
];

pub(super) async fn kv_line(mut c: KvClient, port: u16, mut rng: Rng, round: u32) -> KvClient {
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
pub(super) async fn check_kv(c: &mut KvClient, http: &Http, base: &str, report: &mut Report) {
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
