//! `dynamodb-cost [--ops N] [--clients N] [--strata PATH] [--idle-seconds S] [--verbose]`: what each
//! operation costs on DynamoDB, metered on DynamoDB Local (`strata_tests::cost`): the table, sequential and
//! with `--clients` concurrent clients (20 by default; `--verbose`: each row by DynamoDB operation), then the DynamoDB calls per second an idle `strata serve --store
//! dynamodb` makes in each counter mode over `--idle-seconds` (20 by default; eventual mode re-scans every
//! 5 s when idle) (with `--strata`, the binary to run). Units do not depend on the
//! build profile, so a debug build measures what a release one would.

// Test code: a failed `unwrap` is a failed test.
#![allow(clippy::unwrap_used)]

use std::time::Duration;
use strata_tests::cost::{Case, PRICES_DATE, idle_calls_per_second, measure, table};

fn usage(problem: &str) -> ! {
    eprintln!(
        "dynamodb-cost: {problem}\nusage: dynamodb-cost [--ops N] [--clients N] [--strata PATH] [--idle-seconds S] [--verbose]"
    );
    std::process::exit(2)
}

#[tokio::main]
async fn main() {
    let (mut ops, mut clients, mut strata, mut idle) = (100usize, 20usize, None, 20u64);
    let mut verbose = false;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || {
            args.next()
                .unwrap_or_else(|| usage(&format!("{flag} needs a value")))
        };
        let number = |v: String| v.parse().unwrap_or_else(|_| usage(&format!("{flag} N")));
        match flag.as_str() {
            "--ops" => ops = number(value()),
            "--clients" => clients = number(value()),
            "--idle-seconds" => idle = number(value()) as u64,
            "--strata" => strata = Some(value()),
            "--verbose" => verbose = true,
            other => usage(&format!("unknown argument {other}")),
        }
    }
    let mut rows = Vec::new();
    for case in Case::ALL {
        for c in [1, clients] {
            rows.push(measure(case, ops, c).await);
        }
    }
    println!(
        "DynamoDB per operation, {ops} operations per row on DynamoDB Local; a transaction's units as \
         DynamoDB bills them (each item twice); $ at us-east-1 on-demand prices of {PRICES_DATE} \
         (WRU $0.625/M, RRU $0.125/M, API Gateway HTTP API $1.00/M and Lambda $0.20/M requests, duration \
         not included)\n"
    );
    print!("{}", table(&rows));
    if verbose {
        for r in &rows {
            println!(
                "\n{} ({} clients), per operation:",
                r.case.label(),
                r.clients
            );
            for (op, m) in &r.stats.metered {
                let per = |x: f64| x / r.ops as f64;
                println!(
                    "  {op}: {:.2} calls, {:.2} items, {:.2} WRU, {:.2} RRU",
                    per(m.calls as f64),
                    per(m.items as f64),
                    per(m.wru),
                    per(m.rru)
                );
            }
            if let Some(((table, key), units)) = r.stats.hottest_item() {
                println!("  hot item {table} {key}: {:.2} WRU", units / r.ops as f64);
            }
        }
    }
    for r in rows.iter().filter(|r| r.refused > 0.0) {
        eprintln!(
            "{} ({} clients): {:.2} refused writes per operation, charged the floor",
            r.case.label(),
            r.clients,
            r.refused
        );
    }
    if let Some(strata) = strata {
        println!();
        for mode in ["strong", "eventual"] {
            let (per_second, stats) = idle_calls_per_second(
                &strata,
                &["--counter-mode", mode],
                Duration::from_secs(idle),
            )
            .await;
            let total = stats.metered_total();
            println!(
                "idle `strata serve --store dynamodb --counter-mode {mode}`: {per_second:.1} DynamoDB calls/s, \
                 {:.1} RRU/s ({})",
                total.rru / idle as f64,
                stats
                    .by_operation
                    .iter()
                    .map(|(op, n)| format!("{op} {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
}
