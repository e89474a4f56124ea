//! Attacks on the HTTP listener: slow clients, idle connections, more connections than the cap.

use std::time::{Duration, Instant};
use strata_tests::exhaustion::{Bystander, peak_rss_mib, slow_header_connections};
use strata_tests::server::Server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn start(extra: &[&str]) -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(crate::STRATA, &dir.path().join("data"), extra);
    (dir, server)
}

fn address(server: &Server) -> String {
    server.base.trim_start_matches("http://").to_owned()
}

/// Reads until the server closes the connection (`Ok(bytes read)`) or `within` passes (`Err`).
async fn until_closed(stream: &mut TcpStream, within: Duration) -> Result<Vec<u8>, ()> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Err(_) => return Err(()),
            Ok(Ok(0)) | Ok(Err(_)) => return Ok(got),
            Ok(Ok(n)) => got.extend_from_slice(&chunk[..n]),
        }
    }
}

/// One `GET /health` on an open connection; the status line of the answer.
async fn health_on(stream: &mut TcpStream) -> String {
    stream
        .write_all(b"GET /health HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let mut chunk = [0u8; 1024];
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk))
            .await
            .expect("an answer within 10 s")
            .unwrap();
        assert!(n > 0, "the connection closed before answering");
        answer.extend_from_slice(&chunk[..n]);
    }
    // The body (`{"status":"ok",…}`) is small and follows in the same or the next segment.
    let text = String::from_utf8_lossy(&answer).into_owned();
    text.lines().next().unwrap_or_default().to_owned()
}

/// Slowloris: 1,000 connections that send their headers a few bytes at a time and never finish. Each is
/// closed once the read timeout passes; meanwhile a well-behaved client is served as usual.
#[tokio::test]
async fn slowloris_connections_are_closed_after_the_read_timeout_and_others_are_served() {
    let (_dir, server) = start(&["--read-timeout", "2"]);
    let address = address(&server);
    let bystander = Bystander::start(&server.base);
    let mut slow = slow_header_connections(&address, 1000).await;
    let opened = Instant::now();
    // Keep trickling header lines, a few bytes each, for longer than the timeout.
    for round in 0..3 {
        for stream in &mut slow {
            let _ = stream
                .write_all(format!("x-{round}: y\r\n").as_bytes())
                .await;
        }
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    let mut closed = 0;
    for stream in &mut slow {
        let left = Duration::from_secs(10).saturating_sub(opened.elapsed());
        if let Ok(answer) = until_closed(stream, left.max(Duration::from_millis(100))).await {
            assert!(
                answer.is_empty(),
                "a request whose headers never ended was answered: {}",
                String::from_utf8_lossy(&answer)
            );
            closed += 1;
        }
    }
    assert_eq!(
        closed, 1000,
        "every slow connection is closed by the server"
    );
    let report = bystander.assert_served().await;
    let peak = peak_rss_mib(server.pid());
    println!(
        "slowloris: 1000 connections closed within {:.1} s of opening; bystander {} rounds, slowest {:?}; \
         peak RSS {peak:.0} MiB",
        opened.elapsed().as_secs_f64(),
        report.rounds,
        report.slowest
    );
    assert!(peak < 512.0, "peak RSS {peak:.0} MiB");
}

/// A keep-alive connection left idle after an answer is closed once the read timeout passes.
#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_read_timeout() {
    let (_dir, server) = start(&["--read-timeout", "1"]);
    let mut stream = TcpStream::connect(address(&server)).await.unwrap();
    assert_eq!(health_on(&mut stream).await, "HTTP/1.1 200 OK");
    let idle = Instant::now();
    let rest = until_closed(&mut stream, Duration::from_secs(10))
        .await
        .expect("the idle connection is closed");
    // What is left of the first answer's body may still arrive before the close.
    assert!(!String::from_utf8_lossy(&rest).contains("HTTP/1.1"));
    assert!(
        idle.elapsed() >= Duration::from_millis(900),
        "closed after {:?}, before the timeout",
        idle.elapsed()
    );
}

/// A body that does not arrive within the read timeout: `408 request_timeout`, and nothing is written.
#[tokio::test]
async fn a_body_that_does_not_arrive_in_time_gets_408_and_writes_nothing() {
    let (_dir, server) = start(&["--read-timeout", "1"]);
    let mut stream = TcpStream::connect(address(&server)).await.unwrap();
    stream
        .write_all(
            b"PUT /kv/keys/slow HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n\
              content-length: 100\r\n\r\n{\"value\": \"",
        )
        .await
        .unwrap();
    let answer = until_closed(&mut stream, Duration::from_secs(10))
        .await
        .expect("an answer and a close");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"code\":\"request_timeout\""), "{answer}");
    let client = reqwest::Client::new();
    let absent = client
        .get(server.url("/kv/keys/slow"))
        .send()
        .await
        .unwrap();
    assert_eq!(absent.status(), 404);
}

/// At the cap, the keep-alive connection idle the longest is closed to make room, and the new one is
/// served at once (an idle flood cannot starve a new client). While every connection has a request in
/// flight (here: a body that has not arrived), a new connection waits (it is not accepted) and the others
/// keep being served; once one of them is free again, the waiting one is served.
#[tokio::test]
async fn at_the_connection_cap_idle_ones_give_way_and_busy_ones_make_new_ones_wait() {
    let (_dir, server) = start(&["--max-connections", "20", "--read-timeout", "30"]);
    let address = address(&server);
    let mut inside = Vec::new();
    for _ in 0..20 {
        let mut stream = TcpStream::connect(&address).await.unwrap();
        assert_eq!(health_on(&mut stream).await, "HTTP/1.1 200 OK");
        inside.push(stream);
    }
    let mut newcomer = TcpStream::connect(&address).await.unwrap();
    assert_eq!(health_on(&mut newcomer).await, "HTTP/1.1 200 OK");
    assert!(
        until_closed(&mut inside[0], Duration::from_secs(5))
            .await
            .is_ok(),
        "the idlest connection gave way"
    );
    for stream in inside.iter_mut().skip(1).take(5) {
        assert_eq!(health_on(stream).await, "HTTP/1.1 200 OK");
    }

    let (_dir, server) = start(&["--max-connections", "4", "--read-timeout", "30"]);
    let address = self::address(&server);
    let body = br#"{"value": "x"}"#;
    let mut busy = Vec::new();
    for n in 0..4 {
        let mut stream = TcpStream::connect(&address).await.unwrap();
        stream
            .write_all(
                format!(
                    "PUT /kv/keys/busy-{n} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n\
                     content-length: {}\r\nexpect: 100-continue\r\n\r\n",
                    body.len()
                )
                .as_bytes(),
            )
            .await
            .unwrap();
        // `100 Continue` once the server reads the body: the request is in flight.
        let mut continued = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut continued))
            .await
            .expect("100 Continue")
            .unwrap();
        assert!(String::from_utf8_lossy(&continued[..n]).starts_with("HTTP/1.1 100"));
        busy.push(stream);
    }
    let mut waiting = TcpStream::connect(&address).await.unwrap();
    waiting
        .write_all(b"GET /health HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut chunk = [0u8; 256];
    assert!(
        tokio::time::timeout(Duration::from_millis(1500), waiting.read(&mut chunk))
            .await
            .is_err(),
        "a connection over the cap was served while all were busy"
    );
    // One body arrives: that request is answered, its connection is idle, and the waiting one is served.
    busy[0].write_all(body).await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(10), busy[0].read(&mut chunk))
        .await
        .expect("the busy request is answered")
        .unwrap();
    assert!(String::from_utf8_lossy(&chunk[..n]).starts_with("HTTP/1.1 200"));
    let n = tokio::time::timeout(Duration::from_secs(10), waiting.read(&mut chunk))
        .await
        .expect("served once a connection was free")
        .unwrap();
    assert!(
        String::from_utf8_lossy(&chunk[..n]).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&chunk[..n])
    );
}
