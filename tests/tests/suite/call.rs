//! `strata call` (README, "Calling the API"): the real binary against a real `strata serve`. Every operation
//! prints its answer's JSON on one line; each exit status of `strata call --help` is reached: a refusal
//! (2), a write whose answer is lost after it ran (3, through a proxy that drops the answer), no server
//! (4), an answer that is not strata's (1), a usage error (64).

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

/// `strata call ARGS` with `env` and no `STRATA_*` variable of the test's own environment.
fn call_env(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut command = Command::new(crate::STRATA);
    command.arg("call").args(args);
    for (name, _) in std::env::vars() {
        if name.starts_with("STRATA_") {
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
