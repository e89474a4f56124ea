//! `exhaust`: the long variants of the exhaustion suite, against a `strata serve` started here with its
//! default flags (`infra/scripts/exhaust` builds a release one). Each case is one attack, run with a
//! well-behaved HTTP client beside it, and prints a small report: the refusals by kind, what the
//! bystander saw, timings, and the server's peak resident memory (`VmHWM`), which must stay under
//! 512 MiB. Exits non-zero if any check fails.
//!
//! ```text
//! exhaust --strata target/release/strata commands line-pipeline line-idle ws-message
//! ```
//!
//! A new case is a function `async fn(&Server) -> Report` and one line in [`CASES`].

// Test code: a failed `unwrap` is a failed test.
#![allow(clippy::unwrap_used)]

use futures_util::{SinkExt, StreamExt};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};
use strata_tests::exhaustion::{Bystander, peak_rss_mib, rss_mib, slow_header_connections};
use strata_tests::server::Server;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Peak resident memory every case must stay under, with default flags.
const PEAK_RSS_LIMIT_MIB: f64 = 512.0;

type Case = fn(&Server) -> Pin<Box<dyn Future<Output = Report> + '_>>;

/// Every case: its name, what it does, and the attack.
const CASES: &[(&str, &str, Case)] = &[
    (
        "commands",
        "8 clients for 20 s: POST /kv/commands of 2,000 and of 1,000 `GET a` (a: 250 KiB), and one 1 MiB body of 174,762 `GET a`",
        |s| Box::pin(commands(s)),
    ),
    (
        "line-pipeline",
        "50 TCP connections each pipeline 2,000 `GET a` (a: 250 KiB) and read nothing for 10 s, then read 100 replies",
        |s| Box::pin(line_pipeline(s)),
    ),
    (
        "line-idle",
        "10,000 idle TCP connections against the default cap, beside one working connection in a transaction, then a new client",
        |s| Box::pin(line_idle(s)),
    ),
    (
        "ws-idle",
        "3,000 idle WebSockets against the default cap of 1,024, then a new one",
        |s| Box::pin(ws_idle(s)),
    ),
    (
        "line-partial",
        "1,023 TCP connections each holding 1 MiB of a line without its end, then a new client",
        |s| Box::pin(line_partial(s)),
    ),
    (
        "http-slowloris",
        "1,000 HTTP connections send their headers a line at a time and never finish them, past the read timeout",
        |s| Box::pin(http_slowloris(s)),
    ),
    (
        "ws-message",
        "20 WebSockets, 4 at a time, each sending one 64 MiB message in 4 MiB fragments to /kv/ws",
        |s| Box::pin(ws_message(s)),
    ),
];

/// What a case saw: ordered lines of the report, and the checks that failed.
#[derive(Default)]
struct Report {
    lines: Vec<(String, String)>,
    failures: Vec<String>,
}

impl Report {
    fn line(&mut self, what: &str, value: impl std::fmt::Display) {
        self.lines.push((what.to_owned(), value.to_string()));
    }

    fn check(&mut self, ok: bool, failure: impl FnOnce() -> String) {
        if !ok {
            self.failures.push(failure());
        }
    }
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let mut strata = None;
    let mut cases = Vec::new();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--strata" => strata = args.next(),
            "--list" | "--help" | "-h" => {
                println!("usage: exhaust --strata PATH CASE...\ncases:");
                for (name, what, _) in CASES {
                    println!("  {name:14} {what}");
                }
                return;
            }
            name => cases.push(name.to_owned()),
        }
    }
    let strata = strata.expect("--strata PATH: the strata binary to attack");
    let mut failed = false;
    for name in &cases {
        let Some((_, what, case)) = CASES.iter().find(|(n, _, _)| n == name) else {
            eprintln!("unknown case {name:?} (exhaust --list)");
            std::process::exit(2);
        };
        let dir = tempfile::tempdir().unwrap();
        let server = Server::start(&strata, dir.path(), &[]);
        let idle = peak_rss_mib(server.pid());
        let bystander = Bystander::start(&server.base);
        let started = Instant::now();
        let mut report = case(&server).await;
        let elapsed = started.elapsed();
        let seen = bystander.stop().await;
        let peak = peak_rss_mib(server.pid());
        report.line("attack time", format!("{:.1} s", elapsed.as_secs_f64()));
        report.line(
            "bystander",
            format!(
                "{} rounds, {} failed, slowest {} ms",
                seen.rounds,
                seen.failures.len(),
                seen.slowest.as_millis()
            ),
        );
        report.check(seen.failures.is_empty(), || {
            format!(
                "the bystander was failed: {:?}",
                &seen.failures[..seen.failures.len().min(3)]
            )
        });
        report.line(
            "server peak RSS",
            format!("{peak:.1} MiB (idle before: {idle:.1} MiB; limit {PEAK_RSS_LIMIT_MIB} MiB)"),
        );
        report.check(peak < PEAK_RSS_LIMIT_MIB, || {
            format!("peak RSS {peak:.1} MiB is over {PEAK_RSS_LIMIT_MIB} MiB")
        });
        println!("## {name}: {what}");
        for (what, value) in &report.lines {
            println!("  {what:24} {value}");
        }
        for failure in &report.failures {
            println!("  FAILED: {failure}");
        }
        println!(
            "  {}",
            if report.failures.is_empty() {
                "ok"
            } else {
                "FAILED"
            }
        );
        failed |= !report.failures.is_empty();
    }
    if failed {
        std::process::exit(1);
    }
}

fn big_value() -> String {
    "v".repeat(250 * 1024)
}

async fn put_big(server: &Server) {
    let r = reqwest::Client::new()
        .put(server.url("/kv/keys/a"))
        .json(&serde_json::json!({ "value": big_value() }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

fn get_a_reply() -> String {
    format!("{{\"status\": \"Ok\", \"result\": \"{}\"}}\n", big_value())
}

async fn commands(server: &Server) -> Report {
    put_big(server).await;
    let mut report = Report::default();
    let client = reqwest::Client::new();
    // The largest body there is: 1 MiB of `GET a` lines, 174,762 commands (44 GB of replies unbounded).
    let huge = "GET a\n".repeat(strata_http::MAX_BODY_BYTES / 6);
    let started = Instant::now();
    let r = client
        .post(server.url("/kv/commands"))
        .body(huge)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let body: serde_json::Value = r.json().await.unwrap();
    report.line(
        "1 MiB body",
        format!(
            "{status} {} in {} ms",
            body["error"]["code"],
            started.elapsed().as_millis()
        ),
    );
    report.check(
        status == 413 && body["error"]["code"] == "too_many_commands",
        || format!("1 MiB body answered {status} {body}"),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let attackers: Vec<_> = (0..8)
        .map(|i| {
            let (client, url) = (client.clone(), server.url("/kv/commands"));
            tokio::spawn(async move {
                let mut seen: BTreeMap<String, u64> = BTreeMap::new();
                let mut slowest = Duration::ZERO;
                while Instant::now() < deadline {
                    let lines = if i % 2 == 0 { 2000 } else { 1000 };
                    let started = Instant::now();
                    let answer = match client.post(&url).body("GET a\n".repeat(lines)).send().await
                    {
                        Ok(r) => {
                            let status = r.status().as_u16();
                            let body: serde_json::Value = r.json().await.unwrap_or_default();
                            format!("{status} {}", body["error"]["code"].as_str().unwrap_or("?"))
                        }
                        Err(e) => format!("transport error {e}"),
                    };
                    slowest = slowest.max(started.elapsed());
                    *seen.entry(answer).or_default() += 1;
                }
                (seen, slowest)
            })
        })
        .collect();
    let mut seen: BTreeMap<String, u64> = BTreeMap::new();
    let mut slowest = Duration::ZERO;
    for attacker in attackers {
        let (s, slow) = attacker.await.unwrap();
        slowest = slowest.max(slow);
        for (answer, n) in s {
            *seen.entry(answer).or_default() += n;
        }
    }
    for (answer, n) in &seen {
        report.line("answers", format!("{n} × {answer}"));
        report.check(
            answer == "413 too_many_commands" || answer == "413 reply_too_large",
            || format!("{n} answers were {answer}"),
        );
    }
    report.line("slowest refusal", format!("{} ms", slowest.as_millis()));
    report
}

async fn line_pipeline(server: &Server) -> Report {
    put_big(server).await;
    let mut report = Report::default();
    let mut connections = Vec::new();
    for _ in 0..50 {
        let mut stream = TcpStream::connect(("127.0.0.1", server.line_port))
            .await
            .unwrap();
        stream
            .write_all("GET a\n".repeat(2000).as_bytes())
            .await
            .unwrap();
        connections.push(BufReader::new(stream));
    }
    tokio::time::sleep(Duration::from_secs(10)).await;
    report.line(
        "peak RSS, readers asleep",
        format!("{:.1} MiB", peak_rss_mib(server.pid())),
    );
    let expected = get_a_reply();
    let started = Instant::now();
    // All readers at once, as 50 clients would be: one read at a time would leave the others' replies
    // unread long enough for the idle timeout to close them.
    let counts = futures_util::future::join_all(connections.iter_mut().map(|reader| {
        let expected = &expected;
        async move {
            let (mut right, mut wrong) = (0u64, 0u64);
            let mut line = String::new();
            for _ in 0..100 {
                line.clear();
                match tokio::time::timeout(Duration::from_secs(60), reader.read_line(&mut line))
                    .await
                {
                    Ok(Ok(_)) if &line == expected => right += 1,
                    _ => wrong += 1,
                }
            }
            (right, wrong)
        }
    }))
    .await;
    let (right, wrong) = counts
        .iter()
        .fold((0, 0), |(r, w), (right, wrong)| (r + right, w + wrong));
    report.line(
        "replies read",
        format!(
            "{right} right, {wrong} wrong or missing, in {:.1} s",
            started.elapsed().as_secs_f64()
        ),
    );
    report.check(wrong == 0, || format!("{wrong} replies wrong or missing"));
    report
}

async fn line_idle(server: &Server) -> Report {
    let mut report = Report::default();
    let mut worker = BufReader::new(
        TcpStream::connect(("127.0.0.1", server.line_port))
            .await
            .unwrap(),
    );
    let call = async |worker: &mut BufReader<TcpStream>, command: &str| {
        worker
            .get_mut()
            .write_all(format!("{command}\n").as_bytes())
            .await
            .unwrap();
        let mut line = String::new();
        let answered =
            tokio::time::timeout(Duration::from_secs(10), worker.read_line(&mut line)).await;
        (answered.is_ok(), line)
    };
    call(&mut worker, "PUT w 1").await;
    // A transaction open: the working connection never gives way.
    call(&mut worker, "START").await;
    let started = Instant::now();
    let mut idle = Vec::new();
    let mut connect_errors = 0;
    for _ in 0..10_000 {
        match TcpStream::connect(("127.0.0.1", server.line_port)).await {
            Ok(stream) => idle.push(stream),
            Err(_) => connect_errors += 1,
        }
    }
    report.line(
        "opened",
        format!(
            "{} connections in {:.1} s ({connect_errors} connect errors)",
            idle.len(),
            started.elapsed().as_secs_f64()
        ),
    );
    // A new client right after the flood: served at once, an idle one giving way to it.
    let started = Instant::now();
    let mut newcomer = BufReader::new(
        TcpStream::connect(("127.0.0.1", server.line_port))
            .await
            .unwrap(),
    );
    let (answered, line) = call(&mut newcomer, "GET w").await;
    let waited = started.elapsed();
    report.line(
        "new client after the flood",
        format!("{} in {} ms", line.trim_end(), waited.as_millis()),
    );
    report.check(
        answered
            && line == "{\"status\": \"Ok\", \"result\": \"1\"}\n"
            && waited < Duration::from_secs(1),
        || format!("the new client answered {line:?} after {waited:?}"),
    );
    let seen = futures_util::future::join_all(idle.iter_mut().map(|s| async move {
        let mut reader = BufReader::new(s);
        let mut line = String::new();
        match tokio::time::timeout(Duration::from_secs(10), reader.read_line(&mut line)).await {
            Err(_) => None,
            Ok(_) => Some(line),
        }
    }))
    .await;
    let mut answers: BTreeMap<String, u64> = BTreeMap::new();
    for seen in seen {
        *answers
            .entry(seen.unwrap_or_else(|| "(nothing: still open)".to_owned()))
            .or_default() += 1;
    }
    let gave_way = strata_core::kv::line::gave_way(strata_core::defaults::LINE_MAX_CONNECTIONS);
    for (answer, n) in &answers {
        report.line("connections", format!("{n} × {}", answer.trim_end()));
        report.check(
            answer == &gave_way || answer.starts_with("(nothing"),
            || format!("{n} connections saw {answer:?}"),
        );
    }
    let open = answers.get("(nothing: still open)").copied().unwrap_or(0);
    report.check(
        open as usize == strata_core::defaults::LINE_MAX_CONNECTIONS - 2,
        || format!("{open} idle ones still open beside the working one and the new client"),
    );
    let started = Instant::now();
    let (answered, line) = call(&mut worker, "COMMIT").await;
    report.line(
        "working connection",
        format!(
            "COMMIT: {} in {} ms",
            line.trim_end(),
            started.elapsed().as_millis()
        ),
    );
    report.check(answered && line == "{\"status\": \"Ok\"}\n", || {
        format!("the working connection answered {line:?}")
    });
    report
}

async fn ws_idle(server: &Server) -> Report {
    use tokio_tungstenite::tungstenite::Message;
    let mut report = Report::default();
    let url = server.url("/kv/ws").replace("http://", "ws://");
    let started = Instant::now();
    let mut idle = Vec::new();
    let mut errors = BTreeMap::<String, u64>::new();
    for _ in 0..3_000 {
        match tokio_tungstenite::connect_async(&url).await {
            Ok((ws, _)) => idle.push(ws),
            Err(e) => *errors.entry(e.to_string()).or_default() += 1,
        }
    }
    report.line(
        "opened",
        format!(
            "{} WebSockets in {:.1} s (errors: {errors:?})",
            idle.len(),
            started.elapsed().as_secs_f64()
        ),
    );
    report.check(errors.is_empty(), || {
        format!("upgrades refused: {errors:?}")
    });
    let started = Instant::now();
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    ws.send(Message::text("GET nothing")).await.unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(10), ws.next()).await;
    let waited = started.elapsed();
    let text = match reply {
        Ok(Some(Ok(Message::Text(text)))) => text.as_str().to_owned(),
        other => format!("{other:?}"),
    };
    report.line(
        "new WebSocket after the flood",
        format!("{text} in {} ms", waited.as_millis()),
    );
    report.check(
        text == "{\"status\": \"Error\", \"mesg\": \"Key not found!\"}"
            && waited < Duration::from_secs(1),
        || format!("the new WebSocket got {text:?} after {waited:?}"),
    );
    let mut closed = 0;
    for ws in idle.iter_mut() {
        if let Ok(Some(Ok(Message::Close(_)))) =
            tokio::time::timeout(Duration::from_millis(20), ws.next()).await
        {
            closed += 1;
        }
    }
    report.line("idle WebSockets that gave way", closed);
    report.check(
        closed >= 3_000 + 1 - strata_core::defaults::WS_MAX_CONNECTIONS,
        || format!("only {closed} gave way"),
    );
    report
}

async fn line_partial(server: &Server) -> Report {
    let mut report = Report::default();
    let started = Instant::now();
    let mut hogs = Vec::new();
    let partial = vec![b'x'; 1024 * 1024 - 1];
    for _ in 0..strata_core::defaults::LINE_MAX_CONNECTIONS - 1 {
        let Ok(mut hog) = TcpStream::connect(("127.0.0.1", server.line_port)).await else {
            continue;
        };
        let _ = tokio::time::timeout(Duration::from_millis(200), hog.write_all(&partial)).await;
        hogs.push(hog);
    }
    report.line(
        "sent",
        format!(
            "{} connections, 1 MiB of a line each, in {:.1} s",
            hogs.len(),
            started.elapsed().as_secs_f64()
        ),
    );
    let rss = rss_mib(server.pid());
    report.line("RSS with them open", format!("{rss:.0} MiB"));
    let started = Instant::now();
    let mut newcomer = BufReader::new(
        TcpStream::connect(("127.0.0.1", server.line_port))
            .await
            .unwrap(),
    );
    newcomer.get_mut().write_all(b"PUT a 1\n").await.unwrap();
    let mut line = String::new();
    let answered =
        tokio::time::timeout(Duration::from_secs(10), newcomer.read_line(&mut line)).await;
    report.line(
        "new client",
        format!(
            "{} in {} ms",
            line.trim_end(),
            started.elapsed().as_millis()
        ),
    );
    report.check(answered.is_ok() && line == "{\"status\": \"Ok\"}\n", || {
        format!("the new client answered {line:?}")
    });
    report
}

async fn http_slowloris(server: &Server) -> Report {
    let mut report = Report::default();
    let address = server.base.trim_start_matches("http://").to_owned();
    let started = Instant::now();
    let mut slow = slow_header_connections(&address, 1000).await;
    report.line(
        "opened",
        format!(
            "1000 connections in {:.1} s",
            started.elapsed().as_secs_f64()
        ),
    );
    // One header line per connection every 2 s, for longer than the default read timeout (10 s).
    let trickle = Instant::now();
    let mut round = 0;
    while trickle.elapsed() < Duration::from_secs(14) {
        for stream in &mut slow {
            let _ = stream
                .write_all(format!("x-{round}: y\r\n").as_bytes())
                .await;
        }
        round += 1;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let closed = futures_util::future::join_all(slow.iter_mut().map(|s| async move {
        let mut buffer = [0u8; 256];
        match tokio::time::timeout(
            Duration::from_secs(10),
            tokio::io::AsyncReadExt::read(s, &mut buffer),
        )
        .await
        {
            Err(_) => Some(false),
            Ok(Ok(0)) | Ok(Err(_)) => Some(true),
            // Bytes from the server: an answer to a request whose headers never ended.
            Ok(Ok(_)) => None,
        }
    }))
    .await;
    let (shut, open, answered) = closed.iter().fold((0, 0, 0), |(c, o, a), x| match x {
        Some(true) => (c + 1, o, a),
        Some(false) => (c, o + 1, a),
        None => (c, o, a + 1),
    });
    report.line(
        "slow connections",
        format!("{shut} closed by the server, {open} still open, {answered} answered, {:.1} s after opening", started.elapsed().as_secs_f64()),
    );
    report.check(shut == 1000, || {
        format!("{open} still open, {answered} answered")
    });
    report
}

async fn ws_message(server: &Server) -> Report {
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    let mut report = Report::default();
    let url = server.url("/kv/ws").replace("http://", "ws://");
    let mut codes: BTreeMap<String, u64> = BTreeMap::new();
    let started = Instant::now();
    for _ in 0..5 {
        let sockets = (0..4).map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                let (ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
                let (mut sink, mut stream) = ws.split();
                let sending = tokio::spawn(async move {
                    let fragment = 4 << 20;
                    for i in 0..16 {
                        let opcode = OpCode::Data(if i == 0 { Data::Text } else { Data::Continue });
                        let frame = Frame::message(vec![b'x'; fragment], opcode, i == 15);
                        if sink.send(Message::Frame(frame)).await.is_err() {
                            return;
                        }
                    }
                });
                let code = match tokio::time::timeout(Duration::from_secs(60), stream.next()).await
                {
                    Ok(Some(Ok(Message::Close(Some(frame))))) => {
                        format!("close {} ({})", u16::from(frame.code), frame.reason)
                    }
                    other => format!("{other:?}"),
                };
                sending.abort();
                code
            })
        });
        for socket in sockets.collect::<Vec<_>>() {
            *codes.entry(socket.await.unwrap()).or_default() += 1;
        }
    }
    report.line(
        "20 sockets",
        format!("in {:.1} s", started.elapsed().as_secs_f64()),
    );
    for (code, n) in &codes {
        report.line("answers", format!("{n} × {code}"));
        report.check(code.starts_with("close 1009"), || {
            format!("{n} sockets ended with {code}")
        });
    }
    report
}
