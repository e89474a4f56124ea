//! The workloads: their operations and mixes, what they prepare (through strata-client), and one operation
//! of each over the generator's own HTTP client.

use hyper::Method;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use strata_client::{Client, NewWidget};

use super::client::{Http, LineClient, Outcome, call};
use super::*;

/// What to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// `GET /health`: the baseline (no store work).
    Health,
    /// Single-key `PUT /kv/keys/…` (durable) and `GET /kv/keys/…`; mix of `put`, `get` (default 1:1).
    Kv,
    /// 2-key read-modify-write transactions (begin, 2 reads, 2 writes, commit); a commit conflict is a refusal.
    KvTx,
    /// The key/value line protocol over TCP (`--target tcp://HOST:PORT`), one command in flight per
    /// connection (no pipelining); mix of `put`, `get` (default 1:1).
    Line,
    /// `POST /certificates` of 1 share, 3 in 4 to class CS, 1 in 4 to PS (`issue`).
    Certificates,
    /// Widgets: `add` (create a new widget), `link` (associate two of the first `--keys` widgets on a random
    /// port, then dissociate), `get` (`GET /widgets/{serial}`); default `add` only. Missing widgets
    /// `w1-0000000000`… are created first (the serials `strata widgets load --seed 1` makes).
    Widgets,
    /// `POST /increment` of 1 over `--keys` counters (`increment`) and `GET /increment/{key}` (`get`);
    /// default `increment` only.
    Counters,
}

impl Workload {
    /// The operations `--mix` may weight, and their default weights.
    pub(super) fn operations(self) -> &'static [(&'static str, u32)] {
        match self {
            Workload::Health => &[("health", 1)],
            Workload::Kv | Workload::Line => &[("put", 1), ("get", 1)],
            Workload::KvTx => &[("transaction", 1)],
            Workload::Certificates => &[("issue", 1)],
            Workload::Widgets => &[("add", 1), ("link", 0), ("get", 0)],
            Workload::Counters => &[("increment", 1), ("get", 0)],
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Workload::Health => "health",
            Workload::Kv => "kv",
            Workload::KvTx => "kv-tx",
            Workload::Line => "line",
            Workload::Certificates => "certificates",
            Workload::Widgets => "widgets",
            Workload::Counters => "counters",
        }
    }

    /// The workload's default mix (operations of weight 0 left out).
    pub fn default_mix(self) -> Mix {
        self.operations()
            .iter()
            .filter(|(_, w)| *w > 0)
            .map(|(op, w)| (op.to_string(), *w))
            .collect()
    }

    /// Parses `op=weight,op=weight` (a bare `op` weighs 1); operations left out weigh 0.
    pub fn parse_mix(self, text: &str) -> Result<Mix, String> {
        let mut mix = Mix::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (op, weight) = match part.split_once('=') {
                Some((op, w)) => (
                    op.trim(),
                    w.trim()
                        .parse::<u32>()
                        .map_err(|_| format!("mix weight of {op:?} must be a whole number"))?,
                ),
                None => (part, 1),
            };
            mix.insert(op.to_owned(), weight);
        }
        self.check_mix(&mix)?;
        Ok(mix)
    }

    pub(super) fn check_mix(self, mix: &Mix) -> Result<(), String> {
        let known: Vec<&str> = self.operations().iter().map(|(op, _)| *op).collect();
        if let Some(op) = mix.keys().find(|op| !known.contains(&op.as_str())) {
            return Err(format!(
                "{} has no operation {op:?} (it has: {})",
                self.name(),
                known.join(", ")
            ));
        }
        if mix.values().all(|w| *w == 0) {
            return Err("the mix needs at least one operation of weight above 0".into());
        }
        Ok(())
    }
}

/// Operation name → relative weight.
pub type Mix = BTreeMap<String, u32>;

/// The operations a worker can run, resolved from the mix once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Op {
    Health,
    KvPut,
    KvGet,
    KvTx,
    LinePut,
    LineGet,
    Issue,
    WidgetAdd,
    WidgetLink,
    WidgetGet,
    Increment,
    CounterGet,
}

impl Op {
    pub(super) fn of(workload: Workload, name: &str) -> Op {
        match (workload, name) {
            (Workload::Health, _) => Op::Health,
            (Workload::Kv, "put") => Op::KvPut,
            (Workload::Kv, _) => Op::KvGet,
            (Workload::KvTx, _) => Op::KvTx,
            (Workload::Line, "put") => Op::LinePut,
            (Workload::Line, _) => Op::LineGet,
            (Workload::Certificates, _) => Op::Issue,
            (Workload::Widgets, "add") => Op::WidgetAdd,
            (Workload::Widgets, "link") => Op::WidgetLink,
            (Workload::Widgets, _) => Op::WidgetGet,
            (Workload::Counters, "increment") => Op::Increment,
            (Workload::Counters, _) => Op::CounterGet,
        }
    }
}

pub(super) async fn prepare(
    context: &Arc<Context>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let o = &context.options;
    let has = |op: Op| context.table.iter().any(|(_, o, _)| *o == op);
    let mut jobs = tokio::task::JoinSet::new();
    let parallel = o.connections.min(16);
    if has(Op::KvGet)
        || has(Op::KvTx)
        || has(Op::CounterGet)
        || has(Op::WidgetLink)
        || has(Op::WidgetGet)
    {
        // Set-up is not measured: strata-client sends it, retrying what the contract lets it retry.
        let client = Client::builder(o.target.as_str()).build()?;
        if (has(Op::WidgetLink) || has(Op::WidgetGet)) && widgets_present(&client, o.keys).await {
            return Ok(());
        }
        for part in 0..parallel {
            let (context, client) = (context.clone(), client.clone());
            jobs.spawn(async move {
                let o = &context.options;
                for k in (part..o.keys).step_by(parallel) {
                    let seeded = match o.workload {
                        Workload::Counters => {
                            client.increment(&format!("bench-{k}"), 1).await.map(drop)
                        }
                        Workload::Widgets => {
                            let widget = NewWidget {
                                serial_number: crate::widgets_load::serial(1, k as u64),
                                name: format!("widget {k}"),
                                ports: ["P", "R", "Q"].map(str::to_owned).to_vec(),
                            };
                            match client.create_widget(&widget).await {
                                // Made by an earlier run or `strata widgets load --seed 1`.
                                Err(e) if e.code() == Some("duplicate_serial_number") => Ok(()),
                                other => other.map(drop),
                            }
                        }
                        _ => client.put(&format!("bench-{k}"), "0").await.map(drop),
                    };
                    seeded.map_err(|e| format!("preparing {} failed: {e}", o.workload.name()))?;
                }
                Ok(())
            });
        }
    }
    if has(Op::LineGet) {
        for part in 0..parallel {
            let context = context.clone();
            jobs.spawn(async move {
                let o = &context.options;
                let mut line = LineClient::connect(&o.target).await?;
                for k in (part..o.keys).step_by(parallel) {
                    match line.call(&format!("PUT bench-{k} benchmark value\n")).await {
                        Outcome::Done => {}
                        Outcome::Refused(kind) | Outcome::Failed(kind) => {
                            return Err(format!("preparing line keys failed: {kind}"));
                        }
                    }
                }
                Ok(())
            });
        }
    }
    while let Some(done) = jobs.join_next().await {
        done??;
    }
    Ok(())
}

/// Whether the first and last of the widgets the mix uses exist already (loaded by `strata widgets load
/// --seed 1`, or by an earlier run), so that a large loaded store is not walked again.
pub(super) async fn widgets_present(client: &Client, keys: usize) -> bool {
    for i in [0, keys - 1] {
        let serial = crate::widgets_load::serial(1, i as u64);
        if client.widget(&serial).await.is_err() {
            return false;
        }
    }
    true
}

pub(super) async fn http_operation(
    context: &Context,
    http: &mut Http,
    op: Op,
    key: u64,
    worker: usize,
    sent: u64,
    pick: &mut impl FnMut(u64) -> u64,
) -> Outcome {
    let widget = |i: u64| crate::widgets_load::serial(1, i);
    let (get, post) = (Method::GET, Method::POST);
    match op {
        Op::Health => call(http, get, "/health", None, &[]).await.0,
        Op::KvPut => {
            let body = json!({"value": "benchmark value"});
            let path = format!("/kv/keys/bench-{key}");
            call(http, Method::PUT, &path, Some(&body), &[]).await.0
        }
        Op::KvGet => {
            call(http, get, &format!("/kv/keys/bench-{key}"), None, &[])
                .await
                .0
        }
        Op::KvTx => {
            let other = pick(context.options.keys as u64 - 1);
            // Two distinct keys: `other` skips over `key`.
            let b = if other >= key { other + 1 } else { other };
            read_modify_write(http, key, b).await
        }
        Op::Issue => {
            let class = if pick(4) == 0 { "PS" } else { "CS" };
            let body = json!({"name": "Bench Holder", "amount": 1, "class": class});
            let refusable = ["insufficient_shares"];
            call(http, post, "/certificates", Some(&body), &refusable)
                .await
                .0
        }
        Op::WidgetAdd => {
            let ports: Vec<&str> = (0..1 + pick(3))
                .map(|_| ["P", "R", "Q"][pick(3) as usize])
                .collect();
            let body = json!({
                "serial_number": format!("bench-{}-{worker}-{sent}", context.run_id),
                "name": "bench widget",
                "ports": ports,
            });
            call(http, post, "/widgets", Some(&body), &[]).await.0
        }
        Op::WidgetLink => {
            let other = pick(context.options.keys as u64 - 1);
            let (a, b) = (
                widget(key),
                widget(if other >= key { other + 1 } else { other }),
            );
            let port = ["P", "R", "Q"][pick(3) as usize];
            let body = json!({"peer": b, "port": port});
            let path = format!("/widgets/{a}/associations");
            let refusable = ["no_free_slot", "already_associated"];
            match call(http, post, &path, Some(&body), &refusable).await.0 {
                Outcome::Done => {
                    let path = format!("/widgets/{a}/associations/{port}/{b}");
                    call(http, Method::DELETE, &path, None, &[]).await.0
                }
                other => other,
            }
        }
        Op::WidgetGet => {
            call(http, get, &format!("/widgets/{}", widget(key)), None, &[])
                .await
                .0
        }
        Op::Increment => {
            let body = json!({"key": format!("bench-{key}"), "value": 1});
            call(http, post, "/increment", Some(&body), &[]).await.0
        }
        Op::CounterGet => {
            call(http, get, &format!("/increment/bench-{key}"), None, &[])
                .await
                .0
        }
        Op::LinePut | Op::LineGet => Outcome::Failed("line operation without a connection".into()),
    }
}

pub(super) async fn read_modify_write(http: &mut Http, a: u64, b: u64) -> Outcome {
    let began = match call(
        http,
        Method::POST,
        "/kv/transactions",
        Some(&json!({})),
        &[],
    )
    .await
    {
        (Outcome::Done, Some(body)) => body,
        (Outcome::Done, None) => {
            return Outcome::Failed("protocol transaction without an id".into());
        }
        (other, _) => return other,
    };
    let Some(tx) = began["id"].as_str() else {
        return Outcome::Failed("protocol transaction without an id".into());
    };
    for k in [a, b] {
        let path = format!("/kv/transactions/{tx}/keys/bench-{k}");
        let n: u64 = match call(http, Method::GET, &path, None, &[]).await {
            (Outcome::Done, Some(got)) => got["value"]
                .as_str()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            (Outcome::Done, None) => 0,
            (other, _) => return other,
        };
        let body = json!({"value": (n + 1).to_string()});
        if let (outcome @ (Outcome::Refused(_) | Outcome::Failed(_)), _) =
            call(http, Method::PUT, &path, Some(&body), &[]).await
        {
            return outcome;
        }
    }
    let commit = format!("/kv/transactions/{tx}/commit");
    call(http, Method::POST, &commit, None, &["conflict"])
        .await
        .0
}
