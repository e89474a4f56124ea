//! `fault-proxy --upstream http://127.0.0.1:PORT [--seed N] [--write-fault-rate 0.08] [--kinds a,b,…]
//! [--delay-ms 3500] [--listen 127.0.0.1:0]`: the fault-injecting DynamoDB endpoint of
//! `strata_tests::fault_proxy` as a process, for any server or Lambda binary (`AWS_ENDPOINT_URL=<its URL>`).
//! The rate is split evenly across the kinds (default: all five). Prints `listening on http://…`, serves
//! until killed, and prints its counters on Ctrl-C or SIGTERM.

// Test code: a failed `unwrap` is a failed test.
#![allow(clippy::unwrap_used)]

use strata_tests::fault_proxy::{FaultConfig, FaultKind, FaultProxy};

fn usage(problem: &str) -> ! {
    eprintln!(
        "fault-proxy: {problem}\nusage: fault-proxy --upstream URL [--seed N] [--write-fault-rate R] \
         [--kinds {}] [--delay-ms MS] [--listen ADDR]",
        FaultKind::ALL.map(|k| k.name()).join(",")
    );
    std::process::exit(2)
}

#[tokio::main]
async fn main() {
    let (mut upstream, mut seed, mut rate, mut delay_ms) = (None, 1u64, 0.0f64, 3500u64);
    let mut kinds: Vec<FaultKind> = FaultKind::ALL.to_vec();
    let mut listen = "127.0.0.1:0".to_owned();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || {
            args.next()
                .unwrap_or_else(|| usage(&format!("{flag} needs a value")))
        };
        match flag.as_str() {
            "--upstream" => upstream = Some(value()),
            "--seed" => seed = value().parse().unwrap_or_else(|_| usage("--seed N")),
            "--write-fault-rate" => {
                rate = value()
                    .parse()
                    .unwrap_or_else(|_| usage("--write-fault-rate R"))
            }
            "--delay-ms" => delay_ms = value().parse().unwrap_or_else(|_| usage("--delay-ms MS")),
            "--listen" => listen = value(),
            "--kinds" => {
                kinds = value()
                    .split(',')
                    .map(|k| FaultKind::parse(k).unwrap_or_else(|| usage(&format!("kind {k}"))))
                    .collect()
            }
            other => usage(&format!("unknown argument {other}")),
        }
    }
    let upstream = upstream.unwrap_or_else(|| usage("--upstream is required"));
    let listen = listen
        .parse()
        .unwrap_or_else(|_| usage("--listen takes an address such as 127.0.0.1:0"));
    let config =
        FaultConfig::split(rate, &kinds).with_delay(std::time::Duration::from_millis(delay_ms));
    let proxy = FaultProxy::start_on(listen, &upstream, seed, config)
        .await
        .unwrap_or_else(|e| usage(&format!("cannot listen on {listen}: {e}")));
    println!("listening on {}", proxy.url);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler installs");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    eprintln!("{}", proxy.stats());
}
