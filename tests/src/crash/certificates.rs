//! Certificate clients, the ledger of every certificate acknowledged, and their check.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};
use strata_client::{Certificate, CertificateIssue, Client, Error, IdempotencyKey};

use super::http::{Http, RETRY_PAUSE, retry_later};
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
    pub(super) issued: Vec<Certificate>,
    pub(super) refused: u64,
    /// The issue whose outcome is not settled yet (unanswered at a kill, or strata-client's retry budget
    /// spent on `429`/`503`/`409 request_in_progress`): its key and body, sent again with the same key until
    /// it gets a definite answer, first thing in the next round (or at the end of the run).
    pub(super) pending: Option<(IdempotencyKey, CertificateIssue)>,
    /// Whether `pending` went unanswered at a kill (its retry is counted in `retried`).
    pub(super) pending_at_kill: bool,
    /// Calls of strata-client for `pending` so far.
    pub(super) calls: u32,
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
            calls: 0,
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

/// Issues `c.pending` through strata-client with its key until it gets a definite answer (`201`, or `409
/// insufficient_shares`), or until the server goes away or `deadline` passes. Within a call the client
/// retries `429`, `503`, `409 request_in_progress` and lost answers with the key; a call that spent its
/// budget on them leaves the issue pending, and it is called again.
pub(super) async fn settle_issue(
    c: &mut CertClient,
    api: &Client,
    http: &Http,
    deadline: Instant,
) -> Settled {
    let Some((key, issue)) = c.pending.clone() else {
        return Settled::Done;
    };
    loop {
        if c.calls > 0 {
            http.retried(1);
        }
        c.calls += 1;
        let answer = api.issue_certificate_with_key(&issue, &key).await;
        if let Err(e) = &answer {
            http.check_client_error(e);
        }
        let done = |c: &mut CertClient| {
            if c.pending_at_kill {
                c.retried += 1;
            }
            c.pending = None;
            c.pending_at_kill = false;
            c.calls = 0;
        };
        match answer {
            Ok(cert)
                if cert.name == issue.name
                    && cert.amount == issue.amount
                    && cert.class == issue.class =>
            {
                c.issued.push(cert);
                done(c);
                return Settled::Done;
            }
            Err(e) if e.status() == Some(409) && e.code() == Some("insufficient_shares") => {
                c.refused += 1;
                done(c);
                return Settled::Done;
            }
            Err(Error::Api { error, .. }) if retry_later(&error) => {
                if matches!(error.status, 429 | 503) {
                    c.unknown += 1;
                }
                if Instant::now() > deadline {
                    c.violations.push(format!(
                        "certificate issue {issue:?} (key {}): still {} {} after {} calls",
                        key.as_str(),
                        error.status,
                        error.code,
                        c.calls
                    ));
                    return Settled::Broken;
                }
                // The call waited `retry-after` between its attempts; so does the next call.
                tokio::time::sleep(error.retry_after.unwrap_or(RETRY_PAUSE)).await;
            }
            // No answer: the server died with the issue in flight (and the client's retries found it
            // gone). The error's outcome is its last attempt's, a refused connection, not the call's: an
            // earlier attempt may have issued it, so it stays pending, to be settled with its key.
            Err(Error::Transport { .. }) => {
                c.unanswered += 1;
                c.pending_at_kill = true;
                return Settled::Gone;
            }
            other => {
                let what = match other {
                    Ok(cert) => format!("answered {cert:?}"),
                    Err(e) => e.to_string(),
                };
                c.violations.push(format!(
                    "certificate issue {issue:?} (key {}, call {}): {what}",
                    key.as_str(),
                    c.calls
                ));
                // Settled as far as this run goes: the checks still hold the ledger to every invariant.
                c.pending = None;
                c.calls = 0;
                return Settled::Broken;
            }
        }
    }
}

pub(super) async fn certificates(
    mut c: CertClient,
    api: Client,
    http: Http,
    mut rng: Rng,
    round: u32,
) -> CertClient {
    // What the last round left unsettled first, with its key: nothing new before it is settled.
    let far = Instant::now() + Duration::from_secs(3600);
    if !matches!(settle_issue(&mut c, &api, &http, far).await, Settled::Done) {
        return c;
    }
    loop {
        c.seq += 1;
        let class = match rng.below(100) {
            0..60 => "CS",
            60..85 => "PS",
            _ => "XR",
        };
        let issue = CertificateIssue {
            name: format!("r{round} c{} n{}", c.id, c.seq),
            amount: 1 + rng.below(if class == "XR" { 60 } else { 10 }),
            class: class.to_owned(),
        };
        let key = IdempotencyKey::new(format!("crash-{}-c{}-n{}", c.seed, c.id, c.seq))
            .expect("visible ASCII");
        *c.sent.entry(class).or_default() += 1;
        c.pending = Some((key, issue));
        if !matches!(settle_issue(&mut c, &api, &http, far).await, Settled::Done) {
            return c;
        }
    }
}

/// Every certificate acknowledged so far, by id; and by name (names are unique per request).
#[derive(Default)]
pub(super) struct Ledger {
    pub(super) by_id: BTreeMap<String, Certificate>,
    pub(super) by_name: BTreeMap<String, String>,
    /// Every certificate listed at the last check, by name: an issue acknowledged later (a retry of one
    /// whose first attempt issued it) must answer that very certificate.
    pub(super) listed: BTreeMap<String, Certificate>,
}

impl Ledger {
    pub(super) fn record(&mut self, cert: Certificate, report: &mut Report) {
        let (id, name) = (cert.id.clone(), cert.name.clone());
        if let Some(earlier) = self.by_id.get(&id)
            && *earlier != cert
        {
            report.violation(format!("{id} acknowledged twice: {earlier:?} and {cert:?}"));
        }
        if let Some(first) = self.listed.get(&name)
            && *first != cert
        {
            report.violation(format!(
                "[duplicate] the retry of {name:?} answered {cert:?}, but its first attempt had issued {first:?}"
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
    api: &Client,
    http: &Http,
    report: &mut Report,
) {
    let mut listed_names: BTreeMap<String, Certificate> = BTreeMap::new();
    for class in CLASSES {
        let info = match api.share_class(class).await {
            Ok(info) => info,
            Err(e) => {
                http.check_client_error(&e);
                report.violation(format!("share class {class} unreadable after restart: {e}"));
                continue;
            }
        };
        let mut listed: Vec<Certificate> = Vec::new();
        let mut after = 0;
        loop {
            let page = match api.certificates(class, after, 1000).await {
                Ok(page) => page,
                Err(e) => {
                    http.check_client_error(&e);
                    report.violation(format!("listing {class} after {after} failed: {e}"));
                    break;
                }
            };
            listed.extend(page.certificates);
            match page.next_after {
                Some(next) if next > after => after = next,
                _ => break,
            }
        }
        let count = listed.len() as u64;
        // 1..=count exactly, in order: anything else is a hole or a duplicate.
        let mut expect = 1;
        for n in listed.iter().map(|c| c.number) {
            if n != expect {
                report.gap(format!("{class}: number {n} listed where {expect} belongs"));
            }
            expect = n + 1;
        }
        if info.next_number != count + 1 {
            report.gap(format!(
                "{class}: next_number {} with {count} certificates listed",
                info.next_number
            ));
        }
        let sent = sent.get(class).copied().unwrap_or(0);
        if count > sent {
            report.violation(format!(
                "[over-applied] {class}: {count} certificates, but only {sent} issues were ever sent"
            ));
        }
        let issued: u64 = listed.iter().map(|c| c.amount).sum();
        if info.issued != issued || issued + info.remaining != info.authorized {
            report.violation(format!(
                "{class}: {info:?} but the listed certificates hold {issued} shares"
            ));
        }
        for cert in listed {
            if !ledger.by_name.contains_key(&cert.name) && !pending.contains(&cert.name) {
                report.violation(format!("{class}: a certificate nobody asked for: {cert:?}"));
            }
            if let Some(other) = listed_names.insert(cert.name.clone(), cert.clone()) {
                report.violation(format!(
                    "[duplicate] issued twice for one request: {other:?} and {cert:?}"
                ));
            }
        }
    }
    for (id, cert) in &ledger.by_id {
        if listed_names.get(&cert.name) != Some(cert) {
            report.lost(
                "certificates",
                format!(
                    "certificate {id}: acknowledged {cert:?}, now {:?}",
                    listed_names.get(&cert.name)
                ),
            );
        }
    }
    ledger.listed = listed_names;
}
