//! `strata connect` (README, the line protocol's examples): a session piped in, as to `nc`, gets its
//! replies over TCP to a `strata serve` with a token (`AUTH` first), over the local `/kv/ws` with the
//! bearer token, and over a WebSocket whose upgrade must carry a valid SigV4 signature. That last one
//! plays API Gateway's part in front of the Lambda WebSocket handlers (`$connect`, `$default`,
//! `$disconnect`): the signature of the upgrade is recomputed from the request received, with the
//! credentials it should have been made with, and a tampered upgrade is refused.

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::process::{ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::Duration;
use strata_core::Stores;
use strata_tests::fixture::Fixture;
use strata_tests::server::Server;
use strata_tests::sigv4::{self, REGION, SECRET_KEY};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::{self, Message, client::IntoClientRequest};

const TOKEN: &str = "connect-test-token-8c2e41a7";

/// A session as one would pipe it into `nc`: single keys, a transaction, a delete, and a blank line (which
/// gets no reply).
const SESSION: &str =
    "PUT a 3 * 3 = 9\nGET a\nSTART\nPUT a 10\nGET a\nCOMMIT\n\nGET a\nDEL a\nGET a\n";

const REPLIES: &str = concat!(
    "{\"status\": \"Ok\"}\n",
    "{\"status\": \"Ok\", \"result\": \"3 * 3 = 9\"}\n",
    "{\"status\": \"Ok\"}\n",
    "{\"status\": \"Ok\"}\n",
    "{\"status\": \"Ok\", \"result\": \"10\"}\n",
    "{\"status\": \"Ok\"}\n",
    "{\"status\": \"Ok\", \"result\": \"10\"}\n",
    "{\"status\": \"Ok\"}\n",
    "{\"status\": \"Error\", \"mesg\": \"Key not found!\"}\n",
);

/// How `strata connect` ended.
struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}\nstdout:\n{}\nstderr:\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// `strata connect ARGS` with `stdin` piped in, in an environment with no token and no AWS settings but
/// `env`.
async fn connect(args: &[&str], env: &[(&str, &str)], stdin: &str) -> Run {
    let mut command = tokio::process::Command::new(crate::STRATA);
    command.arg("connect").args(args);
    for (name, _) in std::env::vars() {
        if name == "STRATA_AUTH_TOKEN" || name.starts_with("AWS_") {
            command.env_remove(name);
        }
    }
    let mut child = command
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).await.unwrap();
    drop(input);
    let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("strata connect ends")
        .unwrap();
    Run {
        status: output.status,
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

fn protected() -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(crate::STRATA, dir.path(), &["--auth-token", TOKEN]);
    (server, dir)
}

/// A server that answers with a line that never ends is cut off at `MAX_REPLY_LINE` bytes: `strata
/// connect` says so and exits 1, holding no more than that.
#[tokio::test]
async fn connect_refuses_a_reply_line_longer_than_any_strata_sends() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let endless = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let chunk = vec![b'x'; 64 * 1024];
        // Until the client hangs up; the bytes sent are the proof it read no more than the cap.
        let mut sent = 0usize;
        while stream.write_all(&chunk).await.is_ok() {
            sent += chunk.len();
            if sent > 64 * strata::connect::MAX_REPLY_LINE {
                break;
            }
        }
        sent
    });
    let run = connect(&[&address], &[], "GET a\n").await;
    assert_eq!(run.status.code(), Some(1), "{run:?}");
    assert!(
        run.stderr.contains(&format!(
            "longer than {} bytes",
            strata::connect::MAX_REPLY_LINE
        )),
        "{run:?}"
    );
    let sent = endless.await.unwrap();
    assert!(sent <= 64 * strata::connect::MAX_REPLY_LINE, "{sent}");
}

#[tokio::test]
async fn connect_pipes_a_session_over_tcp_with_auth() {
    let (server, _dir) = protected();
    let url = format!("tcp://127.0.0.1:{}", server.line_port);
    let run = connect(&[&url, "--auth-token", TOKEN], &[], SESSION).await;
    assert!(run.status.success(), "{run:?}");
    assert_eq!(run.stdout, REPLIES, "{run:?}");

    // A bare HOST:PORT is TCP; the token may come from the environment.
    let bare = format!("127.0.0.1:{}", server.line_port);
    let run = connect(
        &[&bare],
        &[("STRATA_AUTH_TOKEN", TOKEN)],
        "PUT b two words\nGET b\n",
    )
    .await;
    assert!(run.status.success(), "{run:?}");
    assert_eq!(
        run.stdout, "{\"status\": \"Ok\"}\n{\"status\": \"Ok\", \"result\": \"two words\"}\n",
        "{run:?}"
    );

    // A refused token stops before any command is sent.
    let run = connect(
        &[&bare, "--auth-token", "not-the-token-of-this-server"],
        &[],
        "PUT c 1\n",
    )
    .await;
    assert!(!run.status.success(), "{run:?}");
    assert!(
        run.stderr.contains("refused AUTH")
            && run.stderr.contains("Authentication failed: wrong token"),
        "{run:?}"
    );
    assert_eq!(run.stdout, "", "{run:?}");

    // Without a token the server answers twice, closes on the third command: the fourth has no reply,
    // and the input was not all answered.
    let required =
        "{\"status\": \"Error\", \"mesg\": \"Authentication required: send AUTH <token> first\"}\n";
    let run = connect(&[&bare], &[], "GET a\nGET a\nGET a\nGET a\n").await;
    assert!(!run.status.success(), "{run:?}");
    assert!(
        run.stdout.starts_with(&format!("{required}{required}")),
        "{run:?}"
    );
    assert!(run.stderr.contains("closed the connection"), "{run:?}");
}

#[tokio::test]
async fn connect_pipes_a_session_over_the_local_websocket_with_the_token() {
    let (server, _dir) = protected();
    let url = server.base.replace("http://", "ws://") + "/kv/ws";
    let run = connect(&[&url], &[("STRATA_AUTH_TOKEN", TOKEN)], SESSION).await;
    assert!(run.status.success(), "{run:?}");
    assert_eq!(run.stdout, REPLIES, "{run:?}");

    let run = connect(
        &[&url, "--auth-token", "not-the-token-of-this-server"],
        &[],
        "GET a\n",
    )
    .await;
    assert!(!run.status.success(), "{run:?}");
    assert!(
        run.stderr.contains("refused: 401") && run.stderr.contains("unauthorized"),
        "{run:?}"
    );
    assert_eq!(run.stdout, "", "{run:?}");
}

/// What API Gateway checks of a signed `$connect` (an upgrade has no body).
fn verify_sigv4(request: &Request) -> Result<(), String> {
    let uri = request.uri().to_string();
    sigv4::verify(request.method().as_str(), &uri, request.headers(), &[])
}

/// An API Gateway WebSocket event of `function`'s file for this connection, with this message body.
fn ws_event(function: &str, connection: &str, body: Option<&str>) -> lambda_http::Request {
    let mut event: Value = strata_tests::events::json(function);
    event["requestContext"]["connectionId"] = json!(connection);
    if let Some(body) = body {
        event["body"] = json!(body);
    }
    lambda_http::request::from_str(&event.to_string()).unwrap()
}

/// API Gateway's part for one connection: refuses an upgrade whose signature does not verify (`403`),
/// otherwise runs `$connect`, each message through `$default` (its reply, if any, sent back) and
/// `$disconnect` at the end. Keeps the headers of the upgrade in `seen`.
async fn gateway(
    listener: &TcpListener,
    stores: &Stores,
    seen: &Mutex<Option<http::HeaderMap>>,
) -> Result<(), String> {
    let (stream, _) = listener.accept().await.unwrap();
    let connection = uuid::Uuid::new_v4().to_string();
    // The refusal's type is the one tungstenite's `Callback` takes.
    #[allow(clippy::result_large_err)]
    let check = |request: &Request, response: Response| {
        *seen.lock().unwrap() = Some(request.headers().clone());
        verify_sigv4(request).map(|()| response).map_err(|why| {
            let mut refusal = ErrorResponse::new(Some(json!({ "message": why }).to_string()));
            *refusal.status_mut() = http::StatusCode::FORBIDDEN;
            refusal
        })
    };
    let mut socket = tokio_tungstenite::accept_hdr_async(stream, check)
        .await
        .map_err(|e| e.to_string())?;
    let connect = strata_http::handler!(strata_kv::websocket::connect);
    let default = strata_http::handler!(strata_kv::websocket::default);
    let disconnect = strata_http::handler!(strata_kv::websocket::disconnect);
    let connected = connect(stores, ws_event("ws-connect", &connection, None)).await;
    assert_eq!(connected.status(), 200);
    while let Some(Ok(message)) = socket.next().await {
        let body = match message {
            Message::Text(text) => text.to_string(),
            Message::Binary(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Message::Close(_) => break,
            _ => continue,
        };
        let reply = default(stores, ws_event("ws-default", &connection, Some(&body))).await;
        let reply = String::from_utf8(reply.body().to_vec()).unwrap();
        if !reply.is_empty() {
            socket.send(Message::text(reply)).await.unwrap();
        }
    }
    disconnect(stores, ws_event("ws-disconnect", &connection, None)).await;
    Ok(())
}

#[tokio::test]
async fn connect_signs_the_websocket_upgrade_for_the_lambda_handlers() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let url = format!("ws://127.0.0.1:{port}/live");
    let seen = Mutex::new(None);
    // An execute-api host implies the region; this one is on loopback, so it is named.
    let args = [url.as_str(), "--sigv4-region", REGION];

    // On DynamoDB too, the store of the deployed handlers: the transaction lives in its table between
    // messages.
    let env = sigv4::environment(SECRET_KEY);
    for f in [Fixture::dynamodb().await, Fixture::embedded().await] {
        let (served, run) = tokio::join!(
            gateway(&listener, &f.stores, &seen),
            connect(&args, &env, SESSION)
        );
        assert_eq!(served, Ok(()), "{}: {run:?}", f.name);
        assert!(run.status.success(), "{}: {run:?}", f.name);
        assert_eq!(run.stdout, REPLIES, "{}: {run:?}", f.name);
    }
    let upgrade = seen.lock().unwrap().take().expect("an upgrade");
    let f = Fixture::embedded().await;

    // Signed with another secret: refused, and `strata connect` says so.
    let env = sigv4::environment("not/the/secret");
    let (served, run) = tokio::join!(
        gateway(&listener, &f.stores, &seen),
        connect(&args, &env, "GET a\n")
    );
    assert!(served.is_err(), "{run:?}");
    assert!(!run.status.success(), "{run:?}");
    assert!(
        run.stderr.contains("refused: 403") && run.stderr.contains("signature"),
        "{run:?}"
    );

    // The upgrade that passed, sent again as it was, passes; sent to another stage, or with its date
    // changed, it does not.
    let replay = async |path: &str, tamper: &dyn Fn(&mut http::HeaderMap)| {
        let mut request = format!("ws://127.0.0.1:{port}{path}")
            .into_client_request()
            .unwrap();
        let mut headers = upgrade.clone();
        tamper(&mut headers);
        for name in ["authorization", "x-amz-date", "x-amz-security-token"] {
            request.headers_mut().insert(name, headers[name].clone());
        }
        let client = async {
            let outcome = tokio_tungstenite::connect_async(request).await;
            if let Ok((mut socket, _)) = outcome {
                socket.close(None).await.unwrap();
                while let Some(Ok(_)) = socket.next().await {}
                return None;
            }
            match outcome {
                Err(tungstenite::Error::Http(response)) => Some(response.status().as_u16()),
                other => panic!("{other:?}"),
            }
        };
        let (served, refused) = tokio::join!(gateway(&listener, &f.stores, &seen), client);
        (served.is_ok(), refused)
    };
    assert_eq!(replay("/live", &|_| {}).await, (true, None));
    assert_eq!(replay("/other", &|_| {}).await, (false, Some(403)));
    let later = |headers: &mut http::HeaderMap| {
        let date = headers["x-amz-date"].to_str().unwrap().to_owned();
        let changed = format!(
            "{}{}Z",
            &date[..14],
            if date.as_bytes()[14] == b'0' {
                '1'
            } else {
                '0'
            }
        );
        headers.insert("x-amz-date", changed.parse().unwrap());
    };
    assert_eq!(replay("/live", &later).await, (false, Some(403)));
}
