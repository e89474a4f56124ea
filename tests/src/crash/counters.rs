//! Counter clients (one keyed, the others not) and their check.

use reqwest::StatusCode;
use serde_json::json;
use std::time::{Duration, Instant};

use super::http::{Http, Outcome, RETRY_PAUSE, encode, get_json, outcome_unknown};
use super::report::Report;
use super::rng::Rng;

pub(super) struct CounterClient {
    pub(super) id: usize,
    pub(super) seed: u64,
    /// Every increment carries an `Idempotency-Key` and is sent again with it until it gets a definite
    /// answer, so its counters are exact whenever nothing is pending.
    pub(super) keyed: bool,
    pub(super) keys: Vec<String>,
    /// Per counter: the total is at least `lo` (acknowledged) and at most `hi` (sent: acknowledged,
    /// unanswered, or answered with an error).
    pub(super) lo: Vec<u64>,
    pub(super) hi: Vec<u64>,
    /// The keyed increment not settled yet: counter index, value, key; carried into the next round.
    pub(super) pending: Option<(usize, u64, String)>,
    pub(super) pending_at_kill: bool,
    pub(super) attempts: u32,
    pub(super) retried: u64,
    pub(super) seq: u64,
    pub(super) acked: u64,
    pub(super) unanswered: u64,
    pub(super) unknown: u64,
    pub(super) violations: Vec<String>,
}

impl CounterClient {
    pub(super) fn new(id: usize, seed: u64, keyed: bool) -> Self {
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
pub(super) async fn settle_increment(
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

pub(super) async fn counters(
    mut c: CounterClient,
    http: Http,
    base: String,
    mut rng: Rng,
) -> CounterClient {
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

pub(super) async fn counter_total(http: &Http, base: &str, key: &str) -> Option<u64> {
    match get_json(http, format!("{base}/increment/{}", encode(key))).await? {
        (StatusCode::OK, body) => body[key].as_u64(),
        (StatusCode::NOT_FOUND, _) => Some(0),
        _ => None,
    }
}

/// Reads a counter until `until` holds for it or `deadline` passes (at least once).
pub(super) async fn settle(
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
pub(super) async fn check_counters(
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
