//! Crash recovery of the whole local server: rounds of mixed load on all four services, `kill -9` at a random
//! moment, restart on the same data directory, and every invariant of the contract checked over everything
//! acknowledged since the first round (see `strata_tests::crash`).
//!
//! `STRATA_CRASH_ROUNDS` sets the rounds (5 here, 3 on DynamoDB; `infra/scripts/crash [--store dynamodb] 100`
//! runs 100 in release mode), `STRATA_CRASH_SEED` the schedule, `STRATA_CRASH_FAULT_RATE` the share of
//! DynamoDB writes the fault proxy faults (default 0.08).

use strata_tests::crash::{Options, Store, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rounds_of_kill_9_lose_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options::from_env(crate::STRATA, &dir.path().join("data"), 5);
    println!(
        "crash-recovery: {} rounds, seed {} (STRATA_CRASH_SEED={} repeats the schedule)",
        options.rounds, options.seed, options.seed
    );
    let report = run(&options).await;
    println!("{}", report.summary());
    assert!(report.passed(), "{}", report.summary());
    // The load really ran, on every service: a round that acknowledged nothing would prove nothing.
    let acked = report.acked;
    assert!(
        acked.kv > 0
            && acked.line > 0
            && acked.certificates > 0
            && acked.widgets > 0
            && acked.counters > 0,
        "every service acknowledged something: {}",
        report.summary()
    );
}

/// The checks can fail: restarted on a copy of its data directory taken halfway through the load (what a
/// disk that acknowledged before writing would leave), the server has lost acknowledged writes, and the
/// suite must say so.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_disk_rewound_to_mid_round_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = Options::from_env(crate::STRATA, &dir.path().join("data"), 1);
    options.rounds = 1;
    options.load_ms = (1200, 1200);
    options.rewind_disk = true;
    let report = run(&options).await;
    println!("{}", report.summary());
    assert!(
        report.lost > 0,
        "acknowledged writes after the copy were lost, and the checks did not notice: {}",
        report.summary()
    );
}

/// The same rounds on `strata serve --store dynamodb`, through the fault proxy in front of DynamoDB Local
/// (which keeps running across the kills: only the server dies, as a Lambda instance dying mid-request):
/// on top of the kills, 8% of the DynamoDB writes lose their answer, fail with a 500 before or after
/// applying, are throttled or have their connection cut mid-answer (`STRATA_CRASH_FAULT_RATE` changes the
/// rate; 0 runs without faults). Nothing acknowledged may be lost, nothing applied more often than sent,
/// a keyed request exactly once, and every error answer the contract's.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dynamodb_rounds_of_kill_9_with_faults_lose_nothing_and_apply_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = Options::from_env(crate::STRATA, &dir.path().join("data"), 3);
    options.store = Store::dynamodb_from_env(0.08);
    // DynamoDB Local answers in milliseconds, not microseconds: longer rounds for as much load.
    options.load_ms = (1000, 3000);
    println!(
        "crash-recovery on DynamoDB: {} rounds, {:?}, seed {} (STRATA_CRASH_SEED={} repeats the schedule)",
        options.rounds, options.store, options.seed, options.seed
    );
    let started = std::time::Instant::now();
    let report = run(&options).await;
    println!("{}", report.summary());
    println!("took {:.1} s", started.elapsed().as_secs_f64());
    assert!(report.passed(), "{}", report.summary());
    let acked = report.acked;
    assert!(
        acked.kv > 0
            && acked.line > 0
            && acked.certificates > 0
            && acked.widgets > 0
            && acked.counters > 0,
        "every service acknowledged something: {}",
        report.summary()
    );
    let proxy = report.proxy.as_ref().expect("the proxy's counters");
    if matches!(options.store, Store::DynamoDb { fault_rate } if fault_rate > 0.0) {
        assert!(proxy.total_faults() > 0, "faults were injected: {proxy}");
    }
}
