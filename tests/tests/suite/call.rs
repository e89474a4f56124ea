//! `strata call` (README, "Calling the API"): the real binary against a real `strata serve`. Every operation
//! prints its answer's JSON on one line (transactions across calls, the line protocol's reply lines, every
//! keyed write with its `--idempotency-key`); each exit status of `strata call --help` is reached: a refusal
//! (2), a write whose answer is lost after it ran (3, through a proxy that drops the answer), no server
//! (4), an answer that is not strata's (1), a usage error or no credentials (64). A stack closed with IAM
//! is played by a gateway that checks SigV4 as API Gateway does.

use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Output};
use strata_tests::server::{Server, free_port};

const TOKEN: &str = "call-test-token-5be1d04c";

/// How `strata call` ended.
struct Run {
    status: Option<i32>,
    stdout: String,
    stderr: String,
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "status {:?}\nstdout:\n{}\nstderr:\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

impl Run {
    /// The one line of JSON on stdout, after a success.
    fn answer(&self) -> Value {
        assert_eq!(self.status, Some(0), "{self:?}");
        assert_eq!(self.stderr, "", "{self:?}");
        assert_eq!(self.stdout.lines().count(), 1, "{self:?}");
        serde_json::from_str(&self.stdout).unwrap()
    }

    /// The error's JSON on stderr (one line), after exit status `status`; nothing on stdout.
    fn error(&self, status: i32) -> Value {
        assert_eq!(self.status, Some(status), "{self:?}");
        assert_eq!(self.stdout, "", "{self:?}");
        assert_eq!(self.stderr.lines().count(), 1, "{self:?}");
        let body: Value = serde_json::from_str(&self.stderr).unwrap();
        body["error"].clone()
    }
}

/// `strata call ARGS` with `env` and no `STRATA_*` or `AWS_*` variable of the test's own environment.
fn call_env(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut command = Command::new(crate::STRATA);
    command.arg("call").args(args);
    for (name, _) in std::env::vars() {
        if name.starts_with("STRATA_") || name.starts_with("AWS_") {
            command.env_remove(name);
        }
    }
    let Output {
        status,
        stdout,
        stderr,
    } = command.envs(env.iter().copied()).output().unwrap();
    Run {
        status: status.code(),
        stdout: String::from_utf8(stdout).unwrap(),
        stderr: String::from_utf8(stderr).unwrap(),
    }
}

/// `strata call ARGS --endpoint BASE`.
fn call(base: &str, args: &[&str]) -> Run {
    call_env(&[args, &["--endpoint", base]].concat(), &[])
}

fn server(extra: &[&str]) -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(crate::STRATA, dir.path(), extra);
    (server, dir)
}

#[test]
fn call_runs_every_operation_and_prints_its_answer() {
    let (server, _dir) = server(&[]);
    let base = server.base.as_str();

    // Key/value; the endpoint may come before the operation, or from STRATA_ENDPOINT.
    let put = call_env(
        &["--endpoint", base, "kv", "put", "greeting", "3 * 3 = 9"],
        &[],
    );
    assert_eq!(
        put.answer(),
        json!({"key": "greeting", "value": "3 * 3 = 9", "version": 1})
    );
    let get = call_env(&["kv", "get", "greeting"], &[("STRATA_ENDPOINT", base)]);
    assert_eq!(get.stdout, put.stdout);
    let negative = call(base, &["kv", "put", "t", "-5"]);
    assert_eq!(negative.answer()["value"], "-5");
    assert_eq!(
        call(base, &["kv", "delete", "greeting"]).answer(),
        json!({"key": "greeting", "deleted": true})
    );
    assert_eq!(
        call(base, &["kv", "delete", "greeting"]).answer(),
        json!({"key": "greeting", "deleted": false})
    );

    // A 404: refused, nothing written.
    let missing = call(base, &["kv", "get", "greeting"]).error(2);
    assert_eq!(missing["code"], "key_not_found", "{missing}");
    assert_eq!(missing["status"], 404);
    assert_eq!(missing["outcome"], "nothing_written");
    assert_eq!(missing["attempts"], 1);
    assert!(missing["message"].as_str().unwrap().contains("greeting"));

    // Counters.
    assert_eq!(
        call(base, &["counters", "increment", "hello world", "20"]).answer(),
        json!({"key": "hello world", "value": 20})
    );
    assert_eq!(
        call(base, &["counters", "increment", "hello world", "5"]).answer(),
        json!({"key": "hello world", "value": 25})
    );
    assert_eq!(
        call(base, &["counters", "get", "hello world"]).answer(),
        json!({"hello world": 25})
    );
    let never = call(base, &["counters", "get", "never"]).error(2);
    assert_eq!(never["code"], "counter_not_found");

    // Certificates; an error's extra fields are kept.
    let class =
        json!({"class": "EMP", "authorized": 50, "issued": 0, "remaining": 50, "next_number": 1});
    assert_eq!(
        call(base, &["certificates", "class-set", "EMP", "50"]).answer(),
        class
    );
    assert_eq!(
        call(base, &["certificates", "class-get", "EMP"]).answer(),
        class
    );
    let issue = |name: &str, amount: &str| {
        let args = [
            "certificates",
            "issue",
            "--class",
            "EMP",
            "--name",
            name,
            "--amount",
            amount,
        ];
        call(base, &args)
    };
    let first = issue("Salt Bae", "10").answer();
    assert_eq!(first["id"], "EMP-1", "{first}");
    assert_eq!(
        (&first["class"], &first["number"], &first["name"]),
        (&json!("EMP"), &json!(1), &json!("Salt Bae"))
    );
    assert_eq!(first["amount"], 10);
    assert!(first["issued_at"].as_str().unwrap().ends_with('Z'));
    let second = issue("Ada", "30").answer();
    assert_eq!(second["id"], "EMP-2");
    let over = issue("Bob", "11").error(2);
    assert_eq!(over["code"], "insufficient_shares", "{over}");
    assert_eq!(
        (&over["status"], &over["remaining"]),
        (&json!(409), &json!(10))
    );
    assert_eq!(
        call(base, &["certificates", "get", "EMP-1"]).answer(),
        first
    );
    assert_eq!(
        call(base, &["certificates", "list", "EMP"]).answer(),
        json!({"certificates": [first, second], "next_after": null})
    );
    assert_eq!(
        call(base, &["certificates", "list", "EMP", "--limit", "1"]).answer(),
        json!({"certificates": [first], "next_after": 1})
    );
    assert_eq!(
        call(base, &["certificates", "list", "EMP", "--after", "1"]).answer(),
        json!({"certificates": [second], "next_after": null})
    );
    let too_many = call(base, &["certificates", "list", "EMP", "--limit", "1001"]).error(2);
    assert_eq!(too_many["code"], "invalid_field", "{too_many}");

    // Widgets.
    assert_eq!(
        call(base, &["widgets", "create", "A", "alpha", "P", "R"]).answer(),
        json!({"serial_number": "A", "name": "alpha", "ports": ["P", "R"], "associations": [],
               "free": {"P": 1, "R": 1, "Q": 0}})
    );
    call(base, &["widgets", "create", "B", "beta", "P"]).answer();
    assert_eq!(
        call(base, &["widgets", "associate", "A", "B", "P"]).answer(),
        json!({"serial_number": "A", "peer": "B", "port": "P"})
    );
    assert_eq!(
        call(base, &["widgets", "get", "A"]).answer(),
        json!({"serial_number": "A", "name": "alpha", "ports": ["P", "R"],
               "associations": [{"port": "P", "peer": "B"}], "free": {"P": 0, "R": 1, "Q": 0}})
    );
    let full = call(base, &["widgets", "associate", "A", "B", "P"]).error(2);
    assert_eq!(full["code"], "already_associated", "{full}");
    // A 204 prints nothing.
    let dissociated = call(base, &["widgets", "dissociate", "A", "P", "B"]);
    assert_eq!(
        (dissociated.status, dissociated.stdout.as_str()),
        (Some(0), ""),
        "{dissociated:?}"
    );
    assert_eq!(
        call(base, &["widgets", "get", "B"]).answer()["associations"],
        json!([])
    );
    let deleted = call(base, &["widgets", "delete", "A"]);
    assert_eq!(
        (deleted.status, deleted.stdout.as_str()),
        (Some(0), ""),
        "{deleted:?}"
    );
    let gone = call(base, &["widgets", "get", "A"]).error(2);
    assert_eq!(
        (&gone["code"], &gone["serial_number"]),
        (&json!("widget_not_found"), &json!("A"))
    );
}

#[test]
fn call_with_one_idempotency_key_issues_once() {
    let (server, _dir) = server(&[]);
    let base = server.base.as_str();
    let issue = [
        "certificates",
        "issue",
        "--class",
        "CS",
        "--name",
        "Salt Bae",
        "--amount",
        "10",
        "--idempotency-key",
        "order-1138",
    ];
    let first = call(base, &issue).answer();
    let again = call(base, &issue).answer();
    assert_eq!(first, again);
    assert_eq!(first["id"], "CS-1");
    let class = call(base, &["certificates", "class-get", "CS"]).answer();
    assert_eq!(
        (&class["issued"], &class["next_number"]),
        (&json!(10), &json!(2))
    );

    // The same key for another certificate is refused.
    let mut other = issue;
    other[7] = "11";
    let reused = call(base, &other).error(2);
    assert_eq!(reused["code"], "idempotency_key_reused", "{reused}");

    // An increment counts once with its key; without one, each call counts.
    let keyed = [
        "counters",
        "increment",
        "visits",
        "3",
        "--idempotency-key",
        "visit-1",
    ];
    assert_eq!(call(base, &keyed).answer()["value"], 3);
    assert_eq!(call(base, &keyed).answer()["value"], 3);
    let unkeyed = ["counters", "increment", "visits", "3"];
    assert_eq!(call(base, &unkeyed).answer()["value"], 6);
    assert_eq!(call(base, &unkeyed).answer()["value"], 9);
}

#[test]
fn call_runs_transactions_commands_and_health() {
    let (server, _dir) = server(&[]);
    let base = server.base.as_str();
    assert_eq!(
        call(base, &["health"]).answer(),
        json!({"status": "ok", "store": "embedded"})
    );

    // A transaction across calls: its id is what the other operations take.
    call(base, &["kv", "put", "balance", "10"]).answer();
    let begun = call(base, &["kv", "tx", "begin"]).answer();
    let id = begun["id"].as_str().unwrap().to_owned();
    assert!(begun["expires_at"].is_string(), "{begun}");
    let seen = call(base, &["kv", "tx", "get", &id, "balance"]).answer();
    assert_eq!(
        (&seen["value"], &seen["version"]),
        (&json!("10"), &json!(1))
    );
    assert_eq!(
        call(base, &["kv", "tx", "put", &id, "balance", "-7"]).answer(),
        json!({"key": "balance", "value": "-7"})
    );
    assert_eq!(
        call(base, &["kv", "tx", "delete", &id, "other"]).answer(),
        json!({"key": "other"})
    );
    // Invisible to others until it commits.
    assert_eq!(
        call(base, &["kv", "get", "balance"]).answer()["value"],
        "10"
    );
    assert_eq!(
        call(base, &["kv", "tx", "commit", &id]).answer(),
        json!({"id": id, "committed": true, "writes": 2})
    );
    assert_eq!(
        call(base, &["kv", "get", "balance"]).answer()["value"],
        "-7"
    );

    // A conflict: another write between the read and the commit.
    let loser = call(base, &["kv", "tx", "begin"]).answer()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    call(base, &["kv", "tx", "get", &loser, "balance"]).answer();
    call(base, &["kv", "tx", "put", &loser, "balance", "0"]).answer();
    call(base, &["kv", "put", "balance", "1"]).answer();
    let conflict = call(base, &["kv", "tx", "commit", &loser]).error(2);
    assert_eq!(conflict["code"], "conflict", "{conflict}");
    assert_eq!(call(base, &["kv", "get", "balance"]).answer()["value"], "1");

    // A rollback.
    let dropped = call(base, &["kv", "tx", "begin"]).answer()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    call(base, &["kv", "tx", "put", &dropped, "balance", "99"]).answer();
    assert_eq!(
        call(base, &["kv", "tx", "rollback", &dropped]).answer(),
        json!({"id": dropped, "rolled_back": true})
    );
    assert_eq!(call(base, &["kv", "get", "balance"]).answer()["value"], "1");

    // The line protocol over HTTP: the reply lines as they are, from an argument or from stdin.
    let commands = call(base, &["kv", "commands", "PUT a 3 * 3 = 9\nGET a"]);
    assert_eq!(commands.status, Some(0), "{commands:?}");
    assert_eq!(
        commands.stdout,
        "{\"status\": \"Ok\"}\n{\"status\": \"Ok\", \"result\": \"3 * 3 = 9\"}\n"
    );
    let mut piped = Command::new(crate::STRATA)
        .args(["call", "kv", "commands", "-", "--endpoint", base])
        .env_remove("STRATA_AUTH_TOKEN")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    piped
        .stdin
        .take()
        .unwrap()
        .write_all(b"DEL a\nGET a\n")
        .unwrap();
    let output = piped.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(
        String::from_utf8(output.stdout).unwrap(),
        "{\"status\": \"Ok\"}\n{\"status\": \"Error\", \"mesg\": \"Key not found!\"}\n"
    );
}

/// Every keyed write takes `--idempotency-key`: the same key again answers as the first did, and does
/// nothing more.
#[test]
fn call_takes_an_idempotency_key_on_every_keyed_write() {
    let (server, _dir) = server(&[]);
    let base = server.base.as_str();
    let keyed = |args: &[&str], key: &str| {
        call(base, &[args, &["--idempotency-key", key]].concat()).answer()
    };
    let class = keyed(&["certificates", "class-set", "CS", "100"], "class-1");
    assert_eq!(
        keyed(&["certificates", "class-set", "CS", "100"], "class-1"),
        class
    );
    let widget = keyed(&["widgets", "create", "A", "alpha", "P", "R"], "widget-a");
    // A second create without the key is `409 duplicate_serial_number`; with it, the first answer.
    assert_eq!(
        keyed(&["widgets", "create", "A", "alpha", "P", "R"], "widget-a"),
        widget
    );
    let exists = call(base, &["widgets", "create", "A", "alpha", "P", "R"]).error(2);
    assert_eq!(exists["code"], "duplicate_serial_number", "{exists}");
    keyed(&["widgets", "create", "B", "beta", "P"], "widget-b");
    let linked = keyed(&["widgets", "associate", "A", "B", "P"], "link-ab");
    assert_eq!(
        keyed(&["widgets", "associate", "A", "B", "P"], "link-ab"),
        linked
    );
    let a = call(base, &["widgets", "get", "A"]).answer();
    assert_eq!(
        a["associations"],
        json!([{"port": "P", "peer": "B"}]),
        "{a}"
    );
}

/// A stack deployed with `AuthMode=iam`, played by a gateway that checks SigV4 as API Gateway does in
/// front of `strata serve`: `strata call` signs with the credentials of the AWS chain (here the
/// environment) for the region given; without credentials, `--sigv4` stops before sending anything.
#[test]
fn call_signs_for_an_iam_stack() {
    use strata_tests::sigv4::{REGION, SECRET_KEY};
    let (server, _dir) = server(&[]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (gateway, state) = runtime.block_on(strata_tests::sigv4::gateway::gateway(&server.base));
    let signed = |args: &[&str], secret: &'static str| {
        call_env(
            &[args, &["--endpoint", &gateway, "--sigv4-region", REGION]].concat(),
            &strata_tests::sigv4::environment(secret),
        )
    };
    assert_eq!(
        signed(&["kv", "put", "greeting", "signed"], SECRET_KEY).answer()["value"],
        "signed"
    );
    let issued = signed(
        &[
            "certificates",
            "issue",
            "--class",
            "CS",
            "--name",
            "N",
            "--amount",
            "1",
        ],
        SECRET_KEY,
    )
    .answer();
    assert_eq!(issued["id"], "CS-1");
    assert_eq!(signed(&["health"], SECRET_KEY).answer()["status"], "ok");

    // A wrong secret: API Gateway's 403, nothing written.
    let refused = signed(&["kv", "put", "greeting", "forged"], "not/the/secret").error(2);
    assert_eq!(refused["status"], 403, "{refused}");
    assert_eq!(refused["code"], Value::Null);
    assert_eq!(
        signed(&["kv", "get", "greeting"], SECRET_KEY).answer()["value"],
        "signed"
    );
    // Unsigned, the gateway refuses it too.
    let unsigned = call(&gateway, &["kv", "get", "greeting"]).error(2);
    assert_eq!(unsigned["status"], 403, "{unsigned}");

    // --sigv4 with no credentials anywhere: nothing is sent.
    let before = state.lock().unwrap().received.len();
    let none = call_env(
        &[
            "kv",
            "get",
            "greeting",
            "--endpoint",
            &gateway,
            "--sigv4",
            "--sigv4-region",
            REGION,
        ],
        &strata_tests::sigv4::NO_OTHER_CREDENTIALS,
    );
    assert_eq!(none.status, Some(64), "{none:?}");
    assert!(none.stderr.contains("no AWS credentials"), "{none:?}");
    assert_eq!(state.lock().unwrap().received.len(), before);
    // A region is needed where the host does not name one.
    let no_region = call_env(
        &["kv", "get", "greeting", "--endpoint", &gateway, "--sigv4"],
        &strata_tests::sigv4::environment(SECRET_KEY),
    );
    assert_eq!(no_region.status, Some(64), "{no_region:?}");
    assert!(no_region.stderr.contains("--sigv4-region"), "{no_region:?}");
}

#[test]
fn call_sends_the_token_of_a_protected_server() {
    let (server, _dir) = server(&["--auth-token", TOKEN]);
    let base = server.base.as_str();

    let refused = call(base, &["kv", "put", "a", "1"]).error(2);
    assert_eq!(
        (&refused["code"], &refused["status"]),
        (&json!("unauthorized"), &json!(401))
    );
    assert_eq!(refused["outcome"], "nothing_written");
    let wrong = call(
        base,
        &["kv", "get", "a", "--auth-token", "not-this-servers-token"],
    )
    .error(2);
    assert_eq!(wrong["code"], "unauthorized");

    let put = call(base, &["kv", "put", "a", "1", "--auth-token", TOKEN]).answer();
    assert_eq!(put["value"], "1");
    let env = [("STRATA_AUTH_TOKEN", TOKEN), ("STRATA_ENDPOINT", base)];
    assert_eq!(call_env(&["kv", "get", "a"], &env).answer(), put);
}

#[test]
fn call_without_a_server_is_no_answer() {
    // A port nothing listens on: refused at once.
    let base = format!("http://127.0.0.1:{}", free_port());
    let run = call(&base, &["kv", "put", "a", "1", "--max-attempts", "2"]);
    let error = run.error(4);
    assert_eq!(
        (&error["code"], &error["status"]),
        (&Value::Null, &Value::Null)
    );
    assert_eq!(error["outcome"], "nothing_written");
    // Nothing was sent, so even an unkeyed write is tried again.
    assert_eq!(error["attempts"], 2);
    let message = error["message"].as_str().unwrap();
    assert!(message.to_lowercase().contains("refused"), "{message}");
}

#[test]
fn call_of_a_write_whose_answer_is_lost_is_an_unknown_outcome() {
    let (server, _dir) = server(&[]);
    let proxy = lose_answers(server.base.trim_start_matches("http://").to_owned());

    // The write ran, its answer was lost: not retried (no key), status 3.
    let lost = call(&proxy, &["kv", "put", "a", "ran"]).error(3);
    assert_eq!(lost["outcome"], "unknown", "{lost}");
    assert_eq!(
        (&lost["status"], &lost["attempts"]),
        (&Value::Null, &json!(1))
    );
    assert_eq!(
        call(&server.base, &["kv", "get", "a"]).answer()["value"],
        "ran"
    );

    // A read's answer lost wrote nothing: retried, then no answer (4).
    let read = call(&proxy, &["kv", "get", "a", "--max-attempts", "2"]).error(4);
    assert_eq!(
        (&read["outcome"], &read["attempts"]),
        (&json!("nothing_written"), &json!(2))
    );
}

#[test]
fn call_of_something_that_is_not_strata_is_an_unreadable_answer() {
    // A server of something else that answers 200 with a body that is not the contract's.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let mut stream = stream.unwrap();
            read_request(&mut stream);
            let _ = stream.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: 6\r\nconnection: close\r\n\r\n<html>",
            );
        }
    });
    let error = call(&base, &["kv", "get", "a"]).error(1);
    assert_eq!(
        (&error["status"], &error["outcome"]),
        (&json!(200), &json!("unknown"))
    );
}

#[test]
fn call_usage_errors_exit_64_and_help_lists_the_exit_statuses() {
    let base = format!("http://127.0.0.1:{}", free_port());
    let usage = [
        vec![],
        vec!["kv"],
        vec!["kv", "put", "only-a-key"],
        vec!["kv", "scan"],
        vec!["counters", "increment", "k", "-1"],
        vec!["certificates", "issue", "--class", "CS", "--name", "A"],
        vec!["widgets", "create", "A", "alpha"],
        vec![
            "counters",
            "increment",
            "k",
            "1",
            "--idempotency-key",
            "two words",
        ],
        vec!["kv", "get", "a", "--max-attempts", "0"],
        vec!["kv", "get", "a", "--endpoint", "ftp://127.0.0.1:1"],
    ];
    for args in usage {
        let run = call_env(&args, &[("STRATA_ENDPOINT", &base)]);
        assert_eq!(run.status, Some(64), "{args:?}: {run:?}");
        assert_eq!(run.stdout, "", "{args:?}: {run:?}");
        assert!(!run.stderr.is_empty(), "{args:?}: {run:?}");
    }

    let help = call_env(&["--help"], &[]);
    assert_eq!(help.status, Some(0), "{help:?}");
    for line in [
        "  0   success",
        "  2   refused",
        "  3   outcome unknown",
        "  4   no answer",
        "  64  usage error",
    ] {
        assert!(help.stdout.contains(line), "{line:?} in {help:?}");
    }

    // The other commands keep clap's status 2.
    let serve = Command::new(crate::STRATA)
        .args(["serve", "--no-such-option"])
        .output()
        .unwrap();
    assert_eq!(serve.status.code(), Some(2));
}

/// Reads one request (its head, and a body of `content-length` bytes); `None` if the connection ended
/// first.
fn read_request(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut request = Vec::new();
    let mut buf = [0; 4096];
    loop {
        if let Some(end) = request.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&request[..end]).to_lowercase();
            let length: usize = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length:"))
                .map_or(0, |n| n.trim().parse().unwrap());
            if request.len() >= end + 4 + length {
                return Some(request);
            }
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return None,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
}

/// A proxy in front of `upstream` (HOST:PORT) that forwards each request, waits for the first bytes of
/// strata's answer (so the request ran), then closes the client's connection without answering.
fn lose_answers(upstream: String) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let mut client = stream.unwrap();
            if let Some(request) = read_request(&mut client) {
                let mut strata = TcpStream::connect(&upstream).unwrap();
                strata.write_all(&request).unwrap();
                let mut first = [0; 1];
                strata.read_exact(&mut first).unwrap();
                // Dropping both: the answer is lost.
            }
        }
    });
    base
}
