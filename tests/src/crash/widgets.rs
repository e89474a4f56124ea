//! Widget clients (widgets and their associations) and their check.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use strata_client::{Client, Error, NewWidget, Outcome, Widget};

use super::http::{Http, RETRY_PAUSE};
use super::report::Report;
use super::rng::Rng;

pub(super) const PORTS: [&str; 3] = ["P", "R", "Q"];

pub(super) struct WidgetClient {
    pub(super) id: usize,
    pub(super) seq: u64,
    /// Its widgets acknowledged created (and not deleted), with their ports.
    pub(super) live: BTreeMap<String, Vec<String>>,
    pub(super) maybe_created: BTreeMap<String, Vec<String>>,
    pub(super) maybe_deleted: BTreeMap<String, Vec<String>>,
    /// Acknowledged deleted since the last check: they must stay gone.
    pub(super) deleted: BTreeSet<String>,
    /// Associations this client created, acknowledged, not removed by it: (its widget, peer, port).
    pub(super) links: BTreeSet<(String, String, String)>,
    pub(super) acked: u64,
    pub(super) unanswered: u64,
    /// Ended with `429`/`503` (for a create or an association, after strata-client's retries), or with a
    /// refusal after retries an earlier attempt of which may have applied: maybe applied, maybe not.
    pub(super) unknown: u64,
    pub(super) violations: Vec<String>,
}

impl WidgetClient {
    pub(super) fn new(id: usize) -> Self {
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
pub(super) type Registry = Arc<Mutex<BTreeSet<String>>>;

/// Whether an error answer is `429`/`503`.
fn busy(e: &Error) -> bool {
    matches!(e.status(), Some(429 | 503))
}

/// A widget client's load, through strata-client: creates and associations with a key of their own per
/// call (the client retries `429`, `503`, `409 request_in_progress` and lost answers with it), deletes and
/// dissociations without one (retried only when nothing ran).
pub(super) async fn widgets(
    mut c: WidgetClient,
    registry: Registry,
    api: Client,
    http: Http,
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
            let widget = NewWidget {
                serial_number: serial.clone(),
                name: format!("round {round}"),
                ports: ports.clone(),
            };
            let answer = api.create_widget(&widget).await;
            if let Err(e) = &answer {
                http.check_client_error(e);
            }
            match answer {
                Ok(w) if w.ports == ports => {
                    c.acked += 1;
                    c.live.insert(serial.clone(), ports);
                    registry.lock().unwrap().insert(serial);
                }
                // A `5xx` or `429` frees the key (CONTRACT.md, "Idempotency-Key"), so the retry of a create
                // that an attempt applied runs again and finds the serial, unique to this request, taken.
                Err(e)
                    if busy(&e)
                        || (e.code() == Some("duplicate_serial_number") && e.attempts() > 1) =>
                {
                    c.maybe_created.insert(serial, ports);
                    c.unknown += 1;
                }
                // No answer: the server died. The error's outcome is its last attempt's, not the call's (an
                // earlier attempt may have been in flight at the kill): maybe created.
                Err(Error::Transport { .. }) => {
                    c.unanswered += 1;
                    c.maybe_created.insert(serial, ports);
                    return c;
                }
                other => {
                    c.violations
                        .push(format!("widget create {widget:?}: {}", answered(other)));
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
            let answer = api.associate(&a, &b, &port).await;
            if let Err(e) = &answer {
                http.check_client_error(e);
            }
            match answer {
                Ok(_) => {
                    c.acked += 1;
                    if !c.links.insert((a.clone(), b.clone(), port.clone())) {
                        c.violations.push(format!(
                            "{a}–{b} on {port} associated twice on one port type"
                        ));
                    }
                }
                // The peer's owner deleted it, or a slot is taken: the contract's refusals, nothing changed.
                // After retries (a `5xx` or `429` frees the key) an earlier attempt may have made the
                // association the last one is refused for: not tracked either way, as a `503`.
                Err(e) if matches!(e.status(), Some(404 | 409)) && e.attempts() == 1 => {
                    c.acked += 1
                }
                Err(e) if busy(&e) || matches!(e.status(), Some(404 | 409)) => c.unknown += 1,
                // Not tracked: nobody relies on it, and the checks still hold it to every invariant.
                Err(Error::Transport { .. }) => {
                    c.unanswered += 1;
                    return c;
                }
                other => {
                    c.violations
                        .push(format!("associate {a}–{b} on {port}: {}", answered(other)));
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
            let answer = api.dissociate(&a, &port, &b).await;
            if let Err(e) = &answer {
                http.check_client_error(e);
            }
            match answer {
                Ok(()) => c.acked += 1,
                // The peer was deleted by its owner, which released the association.
                Err(e) if e.status() == Some(404) => c.acked += 1,
                // Not retried by strata-client (a `503` of an unkeyed write may have applied).
                Err(e) if busy(&e) => {
                    c.unknown += 1;
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                // Unkeyed, so never sent again once sent: the outcome is exact.
                Err(e @ Error::Transport { .. }) => {
                    if e.outcome() == Outcome::Unknown {
                        c.unanswered += 1;
                    }
                    return c;
                }
                other => {
                    c.violations
                        .push(format!("dissociate {a}–{b} on {port}: {}", answered(other)));
                    return c;
                }
            }
        } else if c.live.len() > 4 {
            let own: Vec<String> = c.live.keys().cloned().collect();
            let a = rng.pick(&own).clone();
            let ports = c.live.remove(&a).unwrap();
            registry.lock().unwrap().remove(&a);
            c.links.retain(|(x, _, _)| *x != a);
            let answer = api.delete_widget(&a).await;
            if let Err(e) = &answer {
                http.check_client_error(e);
            }
            match answer {
                Ok(()) => {
                    c.acked += 1;
                    c.deleted.insert(a);
                }
                // Not retried by strata-client (a `503` of an unkeyed write may have applied).
                Err(e) if busy(&e) => {
                    c.maybe_deleted.insert(a, ports);
                    c.unknown += 1;
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                // Unkeyed, so never sent again once sent: the outcome is exact.
                Err(e @ Error::Transport { .. }) => {
                    if e.outcome() == Outcome::Unknown {
                        c.unanswered += 1;
                        c.maybe_deleted.insert(a, ports);
                    } else {
                        c.live.insert(a, ports);
                    }
                    return c;
                }
                other => {
                    c.violations
                        .push(format!("delete {a}: {}", answered(other)));
                    return c;
                }
            }
        }
    }
}

/// What a call answered, for a violation.
fn answered<T: std::fmt::Debug>(answer: Result<T, Error>) -> String {
    match answer {
        Ok(value) => format!("answered {value:?}"),
        Err(e) => e.to_string(),
    }
}

pub(super) fn links_of(w: &Widget) -> Vec<(String, String)> {
    w.associations
        .iter()
        .map(|l| (l.port.clone(), l.peer.clone()))
        .collect()
}

/// Every acknowledged widget there with its ports, every deleted one gone, every acknowledged association
/// there while both ends live; and over every widget reachable: symmetric, within capacity, no dead peer.
pub(super) async fn check_widgets(
    clients: &mut [WidgetClient],
    registry: &Registry,
    api: &Client,
    http: &Http,
    report: &mut Report,
) {
    let mut fetched: BTreeMap<String, Option<Widget>> = BTreeMap::new();
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
        let w = match api.widget(&serial).await {
            Ok(w) => Some(w),
            Err(e) => {
                http.check_client_error(&e);
                if e.code() != Some("widget_not_found") {
                    report.violation(format!("GET widget {serial}: {e}"));
                }
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
        let links = links_of(w);
        let unique: BTreeSet<&(String, String)> = links.iter().collect();
        if unique.len() != links.len() {
            report.violation(format!(
                "{serial}: associated twice on one port type: {w:?}"
            ));
        }
        for port in PORTS {
            let slots = w.ports.iter().filter(|p| *p == port).count() as u64;
            let used = links.iter().filter(|(p, _)| p == port).count() as u64;
            if used > slots || w.free.get(port).map(|n| n as u64) != Some(slots - used) {
                report.violation(format!(
                    "{serial}: {used} of {slots} {port} slots used: {w:?}"
                ));
            }
        }
        for (port, peer) in &links {
            match fetched.get(peer) {
                Some(Some(p)) if links_of(p).contains(&(port.clone(), serial.clone())) => {}
                Some(Some(p)) => report.violation(format!(
                    "{serial}–{peer} on {port} is one-sided: {w:?} / {p:?}"
                )),
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
                Some(Some(w)) if w.ports == *ports => {}
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
                        format!("association {a}–{b} on {port} acknowledged, now {w:?}"),
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
