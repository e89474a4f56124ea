//! Certificate clients, the ledger of every certificate acknowledged, and their check.

use reqwest::StatusCode;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::http::{Http, Outcome, RETRY_PAUSE, get_json, outcome_unknown};
use super::report::Report;
use super::rng::Rng;

pub(super) const CLASSES: [&str; 3] = ["CS", "PS", "XR"];
/// A small class of its own, so that it runs out and `insufficient_shares` is exercised too.
pub(super) const XR_AUTHORIZED: u64 = 20_000;

pub(super) struct CertClient {
    pub(super) id: usize,
    pub(super) seed: u64,
    pub(super) seq: u64,
    /// Certificates issued to this client this round, as answered.
    pub(super) issued: Vec<Value>,
    pub(super) refused: u64,
    /// The issue whose outcome is not settled yet (unanswered at a kill, or still refused with `429`/`503`
    /// /`409 request_in_progress`): its key and body, sent again with the same key until it gets a definite
    /// answer, first thing in the next round (or at the end of the run).
    pub(super) pending: Option<(String, Value)>,
    /// Whether `pending` went unanswered at a kill (its retry is counted in `retried`).
    pub(super) pending_at_kill: bool,
    /// Attempts of `pending` so far.
    pub(super) attempts: u32,
    /// Unanswered issues settled by a retry with their key.
    pub(super) retried: u64,
    pub(super) unknown: u64,
    pub(super) unanswered: u64,
    /// Distinct issues (by key) sent, per class.
    pub(super) sent: BTreeMap<&'static str, u64>,
    pub(super) violations: Vec<String>,
}

impl CertClient {
    pub(super) fn new(id: usize, seed: u64) -> Self {
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
pub(super) enum Settled {
    /// A definite answer: issued or refused.
    Done,
    /// The server went away; still pending.
    Gone,
    /// A violation; given up on.
    Broken,
}

/// Sends `c.pending` until it gets a definite answer (`201`, or `409 insufficient_shares`), or until the
/// server goes away or `deadline` passes.
pub(super) async fn settle_issue(
    c: &mut CertClient,
    http: &Http,
    base: &str,
    deadline: Instant,
) -> Settled {
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

pub(super) async fn certificates(
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
pub(super) struct Ledger {
    pub(super) by_id: BTreeMap<String, Value>,
    pub(super) by_name: BTreeMap<String, String>,
    /// Every certificate listed at the last check, by name: an issue acknowledged later (a retry of one
    /// whose first attempt issued it) must answer that very certificate.
    pub(super) listed: BTreeMap<String, Value>,
}

impl Ledger {
    pub(super) fn record(&mut self, cert: Value, report: &mut Report) {
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

/// Gapless numbering, the shares adding up, every acknowledged certificate there and unchanged, none that
/// nobody asked for, none issued twice for one request, no more per class than issues were sent.
pub(super) async fn check_certificates(
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
