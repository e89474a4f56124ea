//! Crash recovery of the whole local server: rounds of mixed load on all four services, `kill -9` at a random
//! moment, restart on the same data directory, and every invariant of the contract checked over everything
//! acknowledged since the first round (see `strata_tests::crash`).
//!
//! `STRATA_CRASH_ROUNDS` sets the rounds (5 here; `infra/scripts/crash 100` runs 100 in release mode) and
//! `STRATA_CRASH_SEED` the schedule.

use strata_tests::crash::{Options, run};

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
