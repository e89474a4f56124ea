//! Widget clients (widgets and their associations) and their check.

use reqwest::StatusCode;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use super::http::{Http, Outcome, RETRY_PAUSE, encode, get_json, outcome_unknown};
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
    /// Answered `429`/`503`: maybe applied, maybe not.
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

pub(super) async fn widgets(
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

pub(super) fn ports_of(w: &Value) -> Vec<String> {
    w["ports"]
        .as_array()
        .map(|p| {
            p.iter()
                .filter_map(|p| p.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

pub(super) fn links_of(w: &Value) -> Vec<(String, String)> {
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
pub(super) async fn check_widgets(
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
