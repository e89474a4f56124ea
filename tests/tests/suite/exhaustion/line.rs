//! Attacks on the line protocol's bounds, each against a real `strata serve`: `POST /kv/commands`
//! amplification (a few kilobytes of `GET a` asking for gigabytes of replies), the same pipelined over TCP
//! by a client that does not read, thousands of idle TCP connections, idle timeouts, and a 64 MiB
//! WebSocket message. The bounds are `strata_core::kv::line`'s constants and the `strata serve` flags.

use futures_util::{SinkExt, StreamExt};
use std::time::{Duration, Instant};
use strata_core::kv::line::{MAX_COMMANDS_PER_REQUEST, MAX_REPLY_BYTES};
use strata_tests::exhaustion::{Bystander, peak_rss_mib, rss_mib};
use strata_tests::server::Server;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Peak resident memory the debug server may reach in any of these attacks. It idles at about 25 MiB;
/// without the bounds, each attack here takes it past 150 MiB (buffered replies, a 64 MiB message).
const PEAK_RSS_MIB: f64 = 64.0;

/// How much the pipelining attack may add to the server's peak: a few replies of 250 KiB. Replies
/// buffered for a client that does not read would add hundreds of them.
const PIPELINE_GROWTH_MIB: f64 = 16.0;

/// The value the amplification attacks read again and again: 250 KiB.
fn big_value() -> String {
    "v".repeat(250 * 1024)
}

const OK: &str = "{\"status\": \"Ok\"}\n";

fn result(value: &str) -> String {
    format!("{{\"status\": \"Ok\", \"result\": \"{value}\"}}\n")
}

async fn put(client: &reqwest::Client, server: &Server, key: &str, value: &str) {
    let r = client
        .put(server.url(&format!("/kv/keys/{key}")))
        .json(&serde_json::json!({ "value": value }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

async fn status_of(client: &reqwest::Client, server: &Server, key: &str) -> u16 {
    client
        .get(server.url(&format!("/kv/keys/{key}")))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn commands(client: &reqwest::Client, server: &Server, body: String) -> (u16, String) {
    let r = client
        .post(server.url("/kv/commands"))
        .header("content-type", "text/plain")
        .body(body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

fn error_json(body: &str) -> serde_json::Value {
    serde_json::from_str::<serde_json::Value>(body).unwrap_or_else(|e| panic!("{e}: {body}"))["error"]
        .clone()
}

fn assert_under_bound(server: &Server, attack: &str) -> f64 {
    let peak = peak_rss_mib(server.pid());
    eprintln!("{attack}: server peak RSS {peak:.1} MiB");
    assert!(
        peak < PEAK_RSS_MIB,
        "{attack}: the server's peak resident memory reached {peak:.1} MiB (bound {PEAK_RSS_MIB} MiB)"
    );
    peak
}

/// A body of 2,000 `GET a` (12 KB) with `a` holding 250 KiB asks for 500 MB of replies: refused whole
/// with `413 too_many_commands` before anything runs; at the cap, the replies stop at 4 MiB with
/// `413 reply_too_large` and `commands_run`, and exactly those commands took effect.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn commands_amplification_is_refused_with_413() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(crate::STRATA, dir.path(), &[]);
    let client = reqwest::Client::new();
    put(&client, &server, "a", &big_value()).await;
    let bystander = Bystander::start(&server.base);

    // Over the command cap: nothing runs, not even the write in front.
    let body = format!("PUT x 1\n{}", "GET a\n".repeat(1999));
    let (status, text) = commands(&client, &server, body).await;
    assert_eq!(status, 413, "{text:.300}");
    let e = error_json(&text);
    assert_eq!(e["code"], "too_many_commands");
    assert_eq!(
        (e["commands"].as_u64(), e["limit"].as_u64()),
        (Some(2000), Some(MAX_COMMANDS_PER_REQUEST as u64))
    );
    assert_eq!(status_of(&client, &server, "x").await, 404, "nothing ran");

    // At the cap (blank lines are not commands) with small replies: all answered.
    let body = format!(
        "PUT s 1\n\n{}",
        "GET s\r\n\n".repeat(MAX_COMMANDS_PER_REQUEST - 1)
    );
    let (status, text) = commands(&client, &server, body).await;
    assert_eq!(status, 200);
    assert_eq!(text, format!("{OK}{}", result("1").repeat(999)));

    // Replies past 4 MiB: the request stops before the first command whose reply would pass it. 16
    // replies of 250 KiB fit after the three `Ok`s, the 17th does not: 19 commands ran, and their
    // effects are exactly those of a body that ended there (the transaction they opened rolled back).
    let reply = result(&big_value()).len();
    let fitting = (MAX_REPLY_BYTES - 3 * OK.len()) / reply;
    assert_eq!(fitting, 16);
    let body = format!(
        "PUT before 1\nSTART\nPUT in-tx 1\n{}PUT after 1\n",
        "GET a\n".repeat(100)
    );
    let (status, text) = commands(&client, &server, body).await;
    assert_eq!(status, 413, "{text:.300}");
    let e = error_json(&text);
    assert_eq!(e["code"], "reply_too_large");
    assert_eq!(e["commands_run"].as_u64(), Some(3 + fitting as u64), "{e}");
    assert_eq!(e["limit"].as_u64(), Some(MAX_REPLY_BYTES as u64));
    assert_eq!(
        status_of(&client, &server, "before").await,
        200,
        "a write that ran stands"
    );
    assert_eq!(
        status_of(&client, &server, "in-tx").await,
        404,
        "the open transaction was rolled back"
    );
    assert_eq!(
        status_of(&client, &server, "after").await,
        404,
        "nothing after the stop ran"
    );

    // The attack itself, from four clients for a few seconds: every answer is one of the two refusals.
    let deadline = Instant::now() + Duration::from_secs(4);
    let attackers = (0..4).map(|i| {
        let (client, url) = (client.clone(), server.url("/kv/commands"));
        tokio::spawn(async move {
            let mut refused = 0u32;
            while Instant::now() < deadline {
                let lines = if i % 2 == 0 { 2000 } else { 1000 };
                let r = client
                    .post(&url)
                    .header("content-type", "text/plain")
                    .body("GET a\n".repeat(lines))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 413);
                let e = error_json(&r.text().await.unwrap());
                let expected = if lines > MAX_COMMANDS_PER_REQUEST {
                    "too_many_commands"
                } else {
                    "reply_too_large"
                };
                assert_eq!(e["code"], expected);
                refused += 1;
            }
            refused
        })
    });
    let mut refused = 0;
    for attacker in attackers.collect::<Vec<_>>() {
        refused += attacker.await.unwrap();
    }
    assert!(refused > 0);
    bystander.assert_served().await;
    assert_under_bound(&server, "commands amplification");
}

/// The same amplification pipelined over TCP by a client that reads nothing for a while: the server
/// writes as it goes and stops reading while its writes wait, so it never holds more than about 64 KiB
/// of replies plus one; once the client reads, every reply is there, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pipelined_commands_over_tcp_stream_with_backpressure() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(crate::STRATA, dir.path(), &[]);
    let client = reqwest::Client::new();
    let value = big_value();
    put(&client, &server, "a", &value).await;
    let bystander = Bystander::start(&server.base);
    let before = peak_rss_mib(server.pid());

    let stream = TcpStream::connect(("127.0.0.1", server.line_port))
        .await
        .unwrap();
    let (read, mut write) = stream.into_split();
    let commands = 1000;
    write
        .write_all("GET a\n".repeat(commands).as_bytes())
        .await
        .unwrap();
    // A slow reader: nothing read for two seconds, while the server would have all it needs.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let now = rss_mib(server.pid());
    eprintln!("while the client does not read: server RSS {now:.1} MiB");
    let peak = assert_under_bound(&server, "pipelined GETs, reader asleep");
    // 64 KiB of pending replies and the one being written; the rest waits in the client's own socket.
    assert!(
        peak - before < PIPELINE_GROWTH_MIB,
        "the server buffered replies: its peak RSS grew from {before:.1} to {peak:.1} MiB"
    );

    let mut reader = BufReader::new(read);
    let expected = result(&value);
    let mut line = String::new();
    for n in 0..commands {
        line.clear();
        tokio::time::timeout(Duration::from_secs(30), reader.read_line(&mut line))
            .await
            .expect("a reply")
            .unwrap();
        assert!(line == expected, "reply {n} is {:.100}", line);
    }
    write.write_all(b"PUT after 1\nGET after\n").await.unwrap();
    for expected in [OK.to_owned(), result("1")] {
        line.clear();
        reader.read_line(&mut line).await.unwrap();
        assert_eq!(line, expected);
    }
    bystander.assert_served().await;
    assert_under_bound(&server, "pipelined GETs");
}

/// What a connection saw within `wait`: the refusal (or any line) and then the end, or nothing yet.
async fn first_line(stream: &mut TcpStream, wait: Duration) -> Option<(String, bool)> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    match tokio::time::timeout(wait, reader.read_line(&mut line)).await {
        Err(_) => None,
        Ok(_) => {
            let mut rest = Vec::new();
            let closed = matches!(
                tokio::time::timeout(Duration::from_secs(5), reader.read_to_end(&mut rest)).await,
                Ok(Ok(0)) | Ok(Err(_))
            );
            Some((line, closed))
        }
    }
}

/// 2,000 idle connections against a cap of 500 (a stranger filling the cap): each new one is served, and the
/// connection idle the longest gives way with the one documented `Error` line, so the last 499 are live
/// sessions beside a working client, whose open transaction keeps its place; HTTP clients go on being
/// answered. Only when every connection is busy (here: a transaction open on each) is a new one refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn at_the_cap_idle_connections_give_way_and_only_busy_ones_refuse() {
    let dir = tempfile::tempdir().unwrap();
    let cap = 500;
    let server = Server::start(
        crate::STRATA,
        dir.path(),
        &["--max-line-connections", &cap.to_string()],
    );
    let gave_way = format!(
        "{{\"status\": \"Error\", \"mesg\": \"Closed to make room for a new connection: the server holds at most {cap}, and this one was idle the longest\"}}\n"
    );
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
        tokio::time::timeout(Duration::from_secs(10), worker.read_line(&mut line))
            .await
            .expect("the working connection is answered")
            .unwrap();
        line
    };
    assert_eq!(call(&mut worker, "PUT w 1").await, OK);
    // A transaction open: the worker never gives way.
    assert_eq!(call(&mut worker, "START").await, OK);
    let bystander = Bystander::start(&server.base);

    let mut idle = Vec::new();
    for _ in 0..2000 {
        idle.push(
            TcpStream::connect(("127.0.0.1", server.line_port))
                .await
                .unwrap(),
        );
    }
    let seen = futures_util::future::join_all(
        idle.iter_mut()
            .map(|s| first_line(s, Duration::from_secs(5))),
    )
    .await;
    let (mut live, mut closed) = (Vec::new(), 0);
    for (stream, seen) in idle.into_iter().zip(seen) {
        match seen {
            None => live.push(stream),
            Some((line, was_closed)) => {
                assert_eq!(line, gave_way);
                assert!(
                    was_closed,
                    "a connection that gave way is closed after its line"
                );
                closed += 1;
            }
        }
    }
    assert_eq!(
        (live.len(), closed),
        (cap - 1, 2000 - (cap - 1)),
        "the newest connections are served, the idlest gave way"
    );
    assert_eq!(call(&mut worker, "PUT w 2").await, OK);
    assert_eq!(
        call(&mut worker, "COMMIT").await,
        OK,
        "the busy connection kept its place and its transaction"
    );
    // The live ones are real sessions.
    for stream in live.iter_mut().step_by(50) {
        stream.write_all(b"GET w\n").await.unwrap();
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line).await.unwrap();
        assert_eq!(line, result("2"));
    }
    bystander.assert_served().await;
    assert_under_bound(&server, "2,000 idle connections");
    drop(live);

    // Every place busy: the new one is refused, and no open transaction is lost.
    let busy_dir = tempfile::tempdir().unwrap();
    let busy = Server::start(
        crate::STRATA,
        busy_dir.path(),
        &["--max-line-connections", "4"],
    );
    let mut holders = Vec::new();
    for _ in 0..4 {
        let mut holder = BufReader::new(
            TcpStream::connect(("127.0.0.1", busy.line_port))
                .await
                .unwrap(),
        );
        assert_eq!(call(&mut holder, "START").await, OK);
        holders.push(holder);
    }
    let mut refused = TcpStream::connect(("127.0.0.1", busy.line_port))
        .await
        .unwrap();
    let (line, was_closed) = first_line(&mut refused, Duration::from_secs(5))
        .await
        .expect("a refusal");
    assert_eq!(
        (line.as_str(), was_closed),
        (
            "{\"status\": \"Error\", \"mesg\": \"Too many connections (limit 4); try again later\"}\n",
            true
        )
    );
    for holder in &mut holders {
        assert_eq!(call(holder, "COMMIT").await, OK);
    }
    // Now idle, the oldest gives way to a newcomer.
    let mut newcomer = BufReader::new(
        TcpStream::connect(("127.0.0.1", busy.line_port))
            .await
            .unwrap(),
    );
    assert_eq!(
        call(&mut newcomer, "GET nothing").await,
        "{\"status\": \"Error\", \"mesg\": \"Key not found!\"}\n"
    );
}

/// With a token, strangers give way first and cannot hold their places: four unauthenticated sockets that
/// each sent a command hold a four-place server, and a client with the right token is served at once
/// (the longest-idle stranger gives way, not an authenticated client); a stranger is closed at its third
/// command that is not `AUTH`.
#[tokio::test]
async fn strangers_give_way_first_and_cannot_hold_a_place() {
    const TOKEN: &str = "give-way-test-token-31c9e0";
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        crate::STRATA,
        dir.path(),
        &["--max-line-connections", "4", "--auth-token", TOKEN],
    );
    let connect = async || {
        BufReader::new(
            TcpStream::connect(("127.0.0.1", server.line_port))
                .await
                .unwrap(),
        )
    };
    let call = async |conn: &mut BufReader<TcpStream>, command: &str| {
        conn.get_mut()
            .write_all(format!("{command}\n").as_bytes())
            .await
            .unwrap();
        let mut line = String::new();
        tokio::time::timeout(Duration::from_secs(10), conn.read_line(&mut line))
            .await
            .expect("an answer")
            .unwrap();
        line
    };
    let required =
        "{\"status\": \"Error\", \"mesg\": \"Authentication required: send AUTH <token> first\"}\n";
    let mut member = connect().await;
    assert_eq!(call(&mut member, &format!("AUTH {TOKEN}")).await, OK);
    let mut strangers = Vec::new();
    for _ in 0..3 {
        let mut stranger = connect().await;
        assert_eq!(call(&mut stranger, "GET x").await, required);
        strangers.push(stranger);
    }
    let mut newcomer = connect().await;
    assert_eq!(call(&mut newcomer, &format!("AUTH {TOKEN}")).await, OK);
    assert_eq!(call(&mut newcomer, "PUT a 1").await, OK);
    // The first stranger gave way; the authenticated member, idle longer, did not.
    let mut line = String::new();
    strangers[0].read_line(&mut line).await.unwrap();
    assert!(line.contains("Closed to make room"), "{line}");
    assert_eq!(call(&mut member, "GET a").await, result("1"));
    // Three commands without AUTH close a stranger.
    let stranger = &mut strangers[1];
    assert_eq!(call(stranger, "GET x").await, required);
    assert_eq!(
        call(stranger, "GET x").await,
        "{\"status\": \"Error\", \"mesg\": \"Authentication required: send AUTH <token> first; closing the connection\"}\n"
    );
    let mut rest = Vec::new();
    assert_eq!(stranger.read_to_end(&mut rest).await.unwrap(), 0, "closed");
}

/// Every line connection's partial line and unwritten replies share one budget (`--line-buffer-mb 4`):
/// eight connections each sending 900 KiB of a line without its end pass it, and those holding the most
/// are closed with the documented line while a new client is served.
#[tokio::test]
async fn partial_lines_share_one_budget() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(crate::STRATA, dir.path(), &["--line-buffer-mb", "4"]);
    let mut hogs = Vec::new();
    for _ in 0..8 {
        let mut hog = TcpStream::connect(("127.0.0.1", server.line_port))
            .await
            .unwrap();
        // A write may block once the server stops reading a closed connection: bounded by a timeout.
        let _ = tokio::time::timeout(
            Duration::from_secs(5),
            hog.write_all(&vec![b'x'; 900 * 1024]),
        )
        .await;
        hogs.push(hog);
    }
    let seen = futures_util::future::join_all(
        hogs.iter_mut()
            .map(|s| first_line(s, Duration::from_secs(5))),
    )
    .await;
    let closed = seen
        .iter()
        .flatten()
        .filter(|(line, closed)| line.contains("the most of all") && *closed)
        .count();
    assert!(closed >= 1, "{seen:?}");
    assert!(closed < 8, "every connection was closed: {seen:?}");
    let mut fresh = BufReader::new(
        TcpStream::connect(("127.0.0.1", server.line_port))
            .await
            .unwrap(),
    );
    fresh.get_mut().write_all(b"PUT a 1\n").await.unwrap();
    let mut line = String::new();
    fresh.read_line(&mut line).await.unwrap();
    assert_eq!(line, OK);
}

/// `--line-idle-timeout`: a connection that sends nothing is told and closed, its open transaction
/// rolled back; one that keeps talking stays; one that never takes its replies is closed too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idle_connections_are_closed_and_their_transactions_rolled_back() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(crate::STRATA, dir.path(), &["--line-idle-timeout", "1"]);
    let client = reqwest::Client::new();
    let connect = async || {
        BufReader::new(
            TcpStream::connect(("127.0.0.1", server.line_port))
                .await
                .unwrap(),
        )
    };
    let mut idle = connect().await;
    idle.get_mut()
        .write_all(b"START\nPUT idle-key 1\n")
        .await
        .unwrap();
    let mut talker = connect().await;

    let mut replies = Vec::new();
    let mut line = String::new();
    for _ in 0..2 {
        line.clear();
        idle.read_line(&mut line).await.unwrap();
        replies.push(line.clone());
    }
    assert_eq!(replies, [OK, OK]);
    // The talker sends a command every 200 ms for 3 s: never idle for its second.
    for _ in 0..15 {
        talker.get_mut().write_all(b"GET nothing\n").await.unwrap();
        line.clear();
        tokio::time::timeout(Duration::from_secs(10), talker.read_line(&mut line))
            .await
            .expect("the talker stays connected")
            .unwrap();
        assert_eq!(
            line,
            "{\"status\": \"Error\", \"mesg\": \"Key not found!\"}\n"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // By now the idle one has been told and closed.
    line.clear();
    tokio::time::timeout(Duration::from_secs(10), idle.read_line(&mut line))
        .await
        .expect("the idle connection was told")
        .unwrap();
    assert_eq!(
        line,
        "{\"status\": \"Error\", \"mesg\": \"Idle for 1 s; closing the connection (an open transaction was rolled back)\"}\n"
    );
    line.clear();
    assert_eq!(idle.read_line(&mut line).await.unwrap(), 0, "then closed");
    assert_eq!(
        status_of(&client, &server, "idle-key").await,
        404,
        "its transaction was rolled back"
    );

    // A client that pipelines reads of a large value and never reads a reply: the write that waits
    // for it times out too, and the connection ends short of its replies.
    put(&client, &server, "a", &big_value()).await;
    let mut deaf = TcpStream::connect(("127.0.0.1", server.line_port))
        .await
        .unwrap();
    deaf.write_all("GET a\n".repeat(1000).as_bytes())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut received = 0usize;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match tokio::time::timeout(Duration::from_secs(10), deaf.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => received += n,
            Err(_) => panic!("a connection that took none of its replies was not closed"),
        }
    }
    let all = 1000 * result(&big_value()).len();
    assert!(received < all, "{received} of {all} bytes");
}

type WsSink = futures_util::stream::SplitSink<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>,
    tokio_tungstenite::tungstenite::Message,
>;

/// Sends one text message of `total` bytes in fragments of `fragment` bytes (errors ignored: the server
/// may close the socket before the last one).
async fn send_fragmented(sink: &mut WsSink, total: usize, fragment: usize) {
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    let mut sent = 0;
    while sent < total {
        let n = fragment.min(total - sent);
        let opcode = OpCode::Data(if sent == 0 {
            Data::Text
        } else {
            Data::Continue
        });
        let mut payload = vec![b'x'; n];
        if sent == 0 {
            payload[..6].copy_from_slice(b"PUT k ");
        }
        sent += n;
        let frame = Frame::message(payload, opcode, sent == total);
        if sink.send(Message::Frame(frame)).await.is_err() {
            return;
        }
    }
}

/// The close code the server sent, if any, within 30 s.
async fn close_code(
    stream: &mut futures_util::stream::SplitStream<
        tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>,
    >,
) -> Option<u16> {
    use tokio_tungstenite::tungstenite::Message;
    let deadline = Instant::now() + Duration::from_secs(30);
    while let Ok(Some(message)) = tokio::time::timeout_at(deadline.into(), stream.next()).await {
        match message {
            Ok(Message::Close(frame)) => return frame.map(|f| f.code.into()),
            Ok(_) => continue,
            Err(_) => return None,
        }
    }
    None
}

/// A 64 MiB WebSocket message (in 4 MiB fragments, as `/kv/ws` used to accept) is refused with close
/// code 1009 as soon as a fragment passes the 1 MiB limit, without the server buffering it; a message of
/// exactly 1 MiB is still taken (and answered as a command), one byte more is refused the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_over_large_websocket_message_closes_the_socket_with_1009() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(crate::STRATA, dir.path(), &[]);
    let url = server.url("/kv/ws").replace("http://", "ws://");
    let bystander = Bystander::start(&server.base);
    let limit = strata_http::MAX_BODY_BYTES;

    // At the limit, in fragments of 256 KiB: one command, answered.
    let (ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let (mut sink, mut stream) = ws.split();
    send_fragmented(&mut sink, limit, 256 * 1024).await;
    let reply = tokio::time::timeout(Duration::from_secs(30), stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        reply
            .to_text()
            .unwrap()
            .starts_with("{\"status\": \"Error\", \"mesg\": \"value is "),
        "{:.200}",
        reply.to_text().unwrap()
    );

    for (total, fragment) in [(limit + 1, 256 * 1024), (64 << 20, 4 << 20)] {
        let (ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
        let (mut sink, mut stream) = ws.split();
        let sending = tokio::spawn(async move {
            send_fragmented(&mut sink, total, fragment).await;
            sink
        });
        assert_eq!(
            close_code(&mut stream).await,
            Some(1009),
            "a {total}-byte message in {fragment}-byte fragments"
        );
        let _ = sending.await;
    }
    bystander.assert_served().await;
    assert_under_bound(&server, "64 MiB WebSocket message");
}

/// Local WebSockets have their own cap (`--max-websockets 5`): five idle sockets, and a sixth is served
/// while the longest idle is closed with code 1001; five busy ones (a transaction open on each) and the
/// upgrade is refused (`503 too_many_connections`). Each message counts against the rate limit.
#[tokio::test]
async fn idle_websockets_give_way_and_messages_are_rate_limited() {
    use tokio_tungstenite::tungstenite::Message;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        crate::STRATA,
        dir.path(),
        &["--max-websockets", "5", "--rate-limit", "20/60"],
    );
    let url = server.url("/kv/ws").replacen("http", "ws", 1);
    let call = async |ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<TcpStream>,
    >,
                      command: &str| {
        ws.send(Message::text(command)).await.unwrap();
        match tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("an answer")
        {
            Some(Ok(Message::Text(text))) => text.as_str().to_owned(),
            other => panic!("{command}: {other:?}"),
        }
    };
    let ok = "{\"status\": \"Ok\"}";
    let mut sockets = Vec::new();
    for _ in 0..5 {
        let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
        assert_eq!(call(&mut ws, "PUT a 1").await, ok);
        sockets.push(ws);
    }
    let (mut sixth, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    assert_eq!(
        call(&mut sixth, "GET a").await,
        "{\"status\": \"Ok\", \"result\": \"1\"}"
    );
    match tokio::time::timeout(Duration::from_secs(10), sockets[0].next())
        .await
        .expect("the idlest socket is closed")
    {
        Some(Ok(Message::Close(Some(frame)))) => {
            assert_eq!(u16::from(frame.code), 1001);
            assert!(frame.reason.contains("make room"), "{}", frame.reason);
        }
        other => panic!("{other:?}"),
    }
    sockets[0] = sixth;
    // All busy: refused.
    for ws in &mut sockets {
        assert_eq!(call(ws, "START").await, ok);
    }
    match tokio_tungstenite::connect_async(&url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 503);
            let body: serde_json::Value =
                serde_json::from_slice(response.body().as_deref().unwrap()).unwrap();
            assert_eq!(body["error"]["code"], "too_many_connections");
        }
        other => panic!("the upgrade was not refused: {:?}", other.map(|_| ())),
    }
    // Messages take from the rate limit of GET /kv/ws (20 a minute, 6 upgrades and 10 messages spent).
    let ws = &mut sockets[1];
    let mut limited = 0;
    for n in 0..10 {
        let reply = call(ws, &format!("PUT limited-{n} x")).await;
        if reply.contains("Rate limited") {
            limited += 1;
        }
    }
    assert!(limited > 0, "ten more messages passed a 20/60 limit");
    assert!(call(ws, "ROLLBACK").await.contains("Rate limited"));
}
