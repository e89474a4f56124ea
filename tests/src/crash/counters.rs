//! Counter clients (one keyed, the others not) and their check.

use reqwest::StatusCode;
use serde_json::json;
use std::time::{Duration, Instant};
use strata_client::{Client, Counted, Error, IdempotencyKey};

use super::http::{Http, Outcome, RETRY_PAUSE, outcome_unknown, retry_later};
use super::report::Report;
use super::rng::Rng;

pub(super) struct CounterClient {
    pub(super) id: usize,
    pub(super) seed: u64,
    /// Every increment goes through strata-client with an `Idempotency-Key` and is called again with it
    /// until it gets a definite answer, so its counters are exact whenever nothing is pending.
    pub(super) keyed: bool,
    pub(super) keys: Vec<String>,
    /// Per counter: the total is at least `lo` (acknowledged) and at most `hi` (sent: acknowledged,
    /// unanswered, or answered with an error).
    pub(super) lo: Vec<u64>,
    pub(super) hi: Vec<u64>,
    /// The keyed increment not settled yet: counter index, value, key; carried into the next round.
    pub(super) pending: Option<(usize, u64, IdempotencyKey)>,
    pub(super) pending_at_kill: bool,
    /// Calls of strata-client for `pending` so far.
    pub(super) calls: u32,
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
            calls: 0,
            retried: 0,
            seq: 0,
            acked: 0,
            unanswered: 0,
            unknown: 0,
            violations: Vec::new(),
        }
    }
}

/// Sends the keyed client's pending increment through strata-client until it gets a definite answer; true
/// if it did. Within a call the client retries `429`, `503`, `409 request_in_progress` and lost answers with
/// the key; a call that spent its budget on them leaves the increment pending, and it is called again.
pub(super) async fn settle_increment(
    c: &mut CounterClient,
    api: &Client,
    http: &Http,
    deadline: Instant,
) -> bool {
    let Some((i, value, key)) = c.pending.clone() else {
        return true;
    };
    let counter = c.keys[i].clone();
    loop {
        if c.calls > 0 {
            http.retried(1);
        }
        c.calls += 1;
        let answer = api.increment_with_key(&counter, value, &key).await;
        if let Err(e) = &answer {
            http.check_client_error(e);
        }
        let exact = c.hi[i];
        match answer {
            Ok(counted) => {
                match &counted {
                    // Exactly once: every earlier increment of this client was settled, so the total (in a
                    // strong answer; a replay gives the first answer's) is everything sent.
                    Counted::Total { total, .. } if *total != exact => {
                        c.violations.push(format!(
                            "[exactly-once] counter {counter:?}: keyed +{value} (key {}) answered total \
                             {total}, exactly {exact} expected",
                            key.as_str()
                        ));
                    }
                    Counted::Accepted { accepted, .. } if *accepted != value => {
                        c.violations
                            .push(format!("increment {counter:?} +{value}: {counted:?}"));
                    }
                    _ => {}
                }
                if c.pending_at_kill {
                    c.retried += 1;
                }
                c.acked += 1;
                c.lo[i] = exact;
                c.pending = None;
                c.pending_at_kill = false;
                c.calls = 0;
                return true;
            }
            Err(Error::Api { error, .. }) if retry_later(&error) => {
                if matches!(error.status, 429 | 503) {
                    c.unknown += 1;
                }
                if Instant::now() > deadline {
                    c.violations.push(format!(
                        "increment {counter:?} +{value} (key {}): still {} {} after {} calls",
                        key.as_str(),
                        error.status,
                        error.code,
                        c.calls
                    ));
                    return false;
                }
                // The call waited `retry-after` between its attempts; so does the next call.
                tokio::time::sleep(error.retry_after.unwrap_or(RETRY_PAUSE)).await;
            }
            // No answer: the server died with the increment in flight (and the client's retries found it
            // gone). The error's outcome is its last attempt's, a refused connection, not the call's: an
            // earlier attempt may have counted it, so it stays pending, to be settled with its key.
            Err(Error::Transport { .. }) => {
                c.unanswered += 1;
                c.pending_at_kill = true;
                return false;
            }
            Err(e) => {
                c.violations.push(format!(
                    "increment {counter:?} +{value} (key {}, call {}): {e}",
                    key.as_str(),
                    c.calls
                ));
                return false;
            }
        }
    }
}

pub(super) async fn counters(
    mut c: CounterClient,
    api: Client,
    http: Http,
    base: String,
    mut rng: Rng,
) -> CounterClient {
    let far = Instant::now() + Duration::from_secs(3600);
    if !settle_increment(&mut c, &api, &http, far).await {
        return c;
    }
    loop {
        c.seq += 1;
        let i = rng.below(c.keys.len() as u64) as usize;
        let value = 1 + rng.below(100);
        c.hi[i] += value;
        if c.keyed {
            let key = IdempotencyKey::new(format!("crash-{}-c{}-n{}", c.seed, c.id, c.seq))
                .expect("visible ASCII");
            c.pending = Some((i, value, key));
            if !settle_increment(&mut c, &api, &http, far).await {
                return c;
            }
            continue;
        }
        // Unkeyed, so by hand: strata-client sends every increment with a key, and these clients are the
        // campaign's check that an increment without one is never applied more often than sent.
        let body = json!({"key": c.keys[i], "value": value});
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

pub(super) async fn counter_total(api: &Client, http: &Http, key: &str) -> Option<u64> {
    match api.counter(key).await {
        Ok(total) => Some(total),
        Err(e) => {
            http.check_client_error(&e);
            (e.code() == Some("counter_not_found")).then_some(0)
        }
    }
}

/// Reads a counter until `until` holds for it or `deadline` passes (at least once).
pub(super) async fn settle(
    api: &Client,
    http: &Http,
    key: &str,
    deadline: Instant,
    until: impl Fn(u64) -> bool,
) -> Option<u64> {
    loop {
        let total = counter_total(api, http, key).await;
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
    api: &Client,
    http: &Http,
    deadline: Instant,
    report: &mut Report,
) {
    for i in 0..c.keys.len() {
        let (lo, hi) = (c.lo[i], c.hi[i]);
        let Some(total) = settle(api, http, &c.keys[i], deadline, |t| t >= lo).await else {
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
