//! `strata bench` against the real server: every workload runs briefly through the library function, and the
//! report must carry the figures (no errors, some throughput, percentiles in order, histogram buckets that add
//! up); the plot must be an SVG. Also: refusals are told apart from errors, the open loop keeps its rate, and
//! the command line writes the report and the plot.

use serde_json::Value;
use std::time::Duration;
use strata_bench::{self as bench, Options, Report, Workload};
use strata_tests::server::Server;

fn short(workload: Workload, target: &str) -> Options {
    let mut options = Options::new(workload, target);
    options.connections = 4;
    options.duration = Duration::from_millis(1000);
    options.warmup = Duration::from_millis(200);
    options.keys = 50;
    options
}

/// The figures every report must have, checked on its JSON form (what `--output` writes).
fn check_report(report: &Report) -> Value {
    let json = serde_json::to_value(report).unwrap();
    let name = report.workload.name();
    assert_eq!(json["error_count"], 0, "{name}: {:#}", json["errors"]);
    assert!(json["errors"].as_object().unwrap().is_empty(), "{name}");
    assert!(
        json["operations"].as_u64().unwrap() > 0,
        "{name}: no operations"
    );
    assert!(json["ops_per_s"].as_f64().unwrap() > 0.0, "{name}");
    let latency = &json["latency_ms"];
    let order: Vec<f64> = ["p50", "p90", "p99", "p999", "max"]
        .iter()
        .map(|p| {
            latency[p]
                .as_f64()
                .unwrap_or_else(|| panic!("{name}: no {p}"))
        })
        .collect();
    assert!(order[0] > 0.0, "{name}: p50 {}", order[0]);
    assert!(order.windows(2).all(|w| w[0] <= w[1]), "{name}: {order:?}");
    let buckets = json["histogram"]["buckets"].as_array().unwrap();
    let counted: u64 = buckets.iter().map(|b| b["count"].as_u64().unwrap()).sum();
    assert_eq!(
        counted,
        json["operations"].as_u64().unwrap(),
        "{name}: buckets"
    );
    assert!(
        !json["histogram"]["percentiles"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert_eq!(json["parameters"]["connections"], 4);
    assert_eq!(json["parameters"]["loop"], "closed");
    assert!(
        json["warmup"]["operations"].as_u64().unwrap() > 0,
        "{name}: warm-up"
    );
    assert!(
        json["coordinated_omission"]
            .as_str()
            .unwrap()
            .contains("not corrected")
    );
    json
}

fn check_svg(path: &std::path::Path) {
    let svg = std::fs::read_to_string(path).unwrap();
    assert!(svg.trim_start().starts_with("<svg"), "{}", &svg[..80]);
    assert!(svg.contains("xmlns=\"http://www.w3.org/2000/svg\""));
    assert!(svg.trim_end().ends_with("</svg>"));
    assert!(svg.contains("<polyline"), "no latency line drawn");
    assert!(svg.contains("99%"), "no percentile axis labels");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_workload_reports_figures_and_a_plot() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(crate::STRATA, data.path(), &[]);
    let plots = tempfile::tempdir().unwrap();
    let line = format!("tcp://127.0.0.1:{}", server.line_port);
    let runs: Vec<(Workload, Option<&str>)> = vec![
        (Workload::Health, None),
        (Workload::Kv, None),
        (Workload::KvTx, None),
        (Workload::Line, None),
        (Workload::Certificates, None),
        (Workload::Widgets, Some("add=1,link=1,get=1")),
        (Workload::Counters, Some("increment=1,get=1")),
    ];
    for (workload, mix) in runs {
        let target = if workload == Workload::Line {
            line.as_str()
        } else {
            server.base.as_str()
        };
        let mut options = short(workload, target);
        if let Some(mix) = mix {
            options.mix = workload.parse_mix(mix).unwrap();
        }
        if workload == Workload::Line {
            // Not an HTTP target: the server's metrics are named.
            assert_eq!(options.metrics, None);
            options.metrics = Some(server.url("/metrics"));
        }
        let report = bench::run(options).await.unwrap();
        let json = check_report(&report);
        // The server's CPU over the measured part, per operation.
        let cpu = &json["server_cpu"];
        assert!(
            cpu["seconds"].as_f64().unwrap() > 0.0,
            "{name}: {cpu}",
            name = workload.name()
        );
        let per_op = cpu["us_per_op"].as_f64().unwrap();
        let expected = cpu["seconds"].as_f64().unwrap() * 1e6 / report.operations as f64;
        assert!((per_op - expected).abs() < 1e-6, "{per_op} {expected}");
        // A mix reports each operation kind it ran.
        let by_operation = json["by_operation"].as_object().unwrap();
        for op in report.parameters.mix.keys() {
            assert!(
                by_operation[op]["operations"].as_u64().unwrap() > 0,
                "{}: no {op}",
                workload.name()
            );
        }
        let path = plots.path().join(format!("{}.svg", workload.name()));
        bench::plot(&[&report], &path).unwrap();
        check_svg(&path);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_not_errors() {
    let data = tempfile::tempdir().unwrap();
    // 20 shares in all: nearly every issue is refused with insufficient_shares.
    let server = Server::start(
        crate::STRATA,
        data.path(),
        &["--default-classes", "CS=15,PS=5"],
    );
    let report = bench::run(short(Workload::Certificates, &server.base))
        .await
        .unwrap();
    assert_eq!(report.error_count, 0, "{:?}", report.errors);
    assert!(report.refusals["insufficient_shares"] > 0);
    // The warm-up may have used some of the 20, never more.
    assert!(report.operations <= 20, "{}", report.operations);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_counted_by_kind() {
    // Nothing listens on this port: every request fails to connect.
    let target = format!("http://127.0.0.1:{}", strata_tests::server::free_port());
    let mut options = short(Workload::Health, &target);
    options.duration = Duration::from_millis(300);
    let report = bench::run(options).await.unwrap();
    assert_eq!(report.operations, 0);
    assert!(
        report.errors["transport connect"] > 0,
        "{:?}",
        report.errors
    );
    assert_eq!(report.error_count, report.errors.values().sum::<u64>());
    // Nor is there a server to read the CPU time of; the report says why.
    assert_eq!(report.server_cpu.us_per_op, None);
    assert!(
        report
            .server_cpu
            .unavailable
            .as_deref()
            .unwrap()
            .contains("transport"),
        "{:?}",
        report.server_cpu
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_keeps_its_rate() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(crate::STRATA, data.path(), &[]);
    let mut options = short(Workload::Health, &server.base);
    options.rate = Some(200.0);
    let report = bench::run(options).await.unwrap();
    // 200/s for 1 s: a closed loop would run thousands.
    assert!(
        (150..=230).contains(&report.operations),
        "{} operations",
        report.operations
    );
    assert_eq!(report.parameters.r#loop, "open");
    assert!(report.coordinated_omission.contains("scheduled send time"));
    assert_eq!(report.error_count, 0);
}

#[test]
fn mixes_are_checked() {
    assert!(Workload::Kv.parse_mix("get=9,put=1").is_ok());
    let unknown = Workload::Kv.parse_mix("issue=1").unwrap_err();
    assert!(unknown.contains("put, get"), "{unknown}");
    assert!(Workload::Widgets.parse_mix("add=0").is_err());
    assert!(Workload::Counters.parse_mix("get=x").is_err());
}

#[test]
fn the_command_prints_and_writes_the_report_and_plot() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(crate::STRATA, data.path(), &[]);
    let out = tempfile::tempdir().unwrap();
    let (report, plot) = (out.path().join("r.json"), out.path().join("r.svg"));
    let baseline = out.path().join("health.json");
    let run = |args: &[&str]| {
        let output = std::process::Command::new(crate::STRATA)
            .arg("bench")
            .args(args)
            .args([
                "--target",
                &server.base,
                "--duration",
                "1",
                "--warmup",
                "0.2",
            ])
            .args(["--connections", "4"])
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        String::from_utf8(output.stdout).unwrap()
    };
    run(&["health", "--output", baseline.to_str().unwrap()]);
    let printed = run(&[
        "certificates",
        "--output",
        report.to_str().unwrap(),
        "--plot",
        plot.to_str().unwrap(),
        "--compare",
        baseline.to_str().unwrap(),
    ]);
    assert!(printed.contains("throughput"), "{printed}");
    assert!(printed.contains("p99 "), "{printed}");
    assert!(printed.contains("µs/op"), "{printed}");
    let json: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(json["workload"], "certificates");
    assert!(json["ops_per_s"].as_f64().unwrap() > 0.0);
    check_svg(&plot);
    // The baseline and the run are both on the plot.
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(svg.contains("health") && svg.contains("certificates"));
}
