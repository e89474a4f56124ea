//! The key/value line protocol (CONTRACT.md §1 "Line protocol"), compatible with the classic Haus KV servers: one
//! command per line, one JSON reply line per command, byte for byte what Python's `json.dumps` writes.
//!
//! Parsing and reply encoding live here, and every bound of the protocol, declared once: the session
//! (which store calls a command makes, transactions) is in `strata_kv::line`, shared by the TCP listener,
//! `POST /kv/commands` and the WebSocket routes, which apply these bounds.
//!
//! # Bounds
//!
//! - A line: at most [`MAX_LINE_BYTES`]; a longer one is answered with an error and skipped.
//! - A request of `POST /kv/commands`: at most [`MAX_COMMANDS_PER_REQUEST`] commands (counted before any
//!   runs), and at most [`MAX_REPLY_BYTES`] of replies, spent as [`ReplyBudget`] says. Both keep a request
//!   within one Lambda invocation's time and its 6 MB response limit.
//! - A WebSocket message is one command, so its reply is one command's: at most [`MAX_ONE_REPLY_BYTES`].
//! - A TCP connection holds at most [`MAX_PENDING_REPLY_BYTES`] of replies before writing them (plus the
//!   one reply that passes it), and writes before it reads more, so a client that does not read its
//!   replies stops the server from reading its commands (TCP flow control), instead of making it buffer.
//! - TCP connections: at most [`crate::defaults::LINE_MAX_CONNECTIONS`] at once and [`crate::defaults::LINE_IDLE_TIMEOUT`] idle,
//!   unless `strata serve` is told otherwise.

use crate::Error;
use crate::kv::tx::TxId;
use async_trait::async_trait;

/// Where a WebSocket connection's open transaction is kept between messages (on AWS each message is its own
/// Lambda invocation, so the session cannot live in memory).
#[async_trait]
pub trait Connections: Send + Sync {
    /// The connection's open transaction, if any.
    async fn transaction(&self, connection: &str) -> Result<Option<TxId>, Error>;
    /// Records the connection's open transaction (`None`: it has none).
    async fn set_transaction(&self, connection: &str, tx: Option<&TxId>) -> Result<(), Error>;
    /// Records `new` as the connection's open transaction only if it is still `expected`, in one atomic
    /// step; `Ok(false)`, changing nothing, if another message of the connection changed it meanwhile
    /// (API Gateway runs the messages of one connection without waiting for the one before).
    async fn replace_transaction(
        &self,
        connection: &str,
        expected: Option<&TxId>,
        new: Option<&TxId>,
    ) -> Result<bool, Error>;
    /// Forgets the connection (it closed) and returns the transaction it left open.
    async fn forget(&self, connection: &str) -> Result<Option<TxId>, Error>;
}

/// Longest accepted line, in bytes (terminator excluded).
pub const MAX_LINE_BYTES: usize = 1024 * 1024;

/// Most commands (non-blank lines) in one `POST /kv/commands` request; over it the request is refused
/// with `413 too_many_commands` before any command runs. A thousand single-key commands take about as
/// long on DynamoDB as one Lambda invocation may run.
pub const MAX_COMMANDS_PER_REQUEST: usize = 1000;

/// Most bytes of replies one `POST /kv/commands` request may produce (4 MiB): under the 6 MB a Lambda
/// response may carry, with room for API Gateway's framing. See [`ReplyBudget`].
pub const MAX_REPLY_BYTES: usize = 4 * 1024 * 1024;

/// The most any reply but a `GET`'s can take: errors name at most a key (1 KiB, escaped at most 3×: keys
/// hold no control characters) or 64 characters of an unknown command.
pub const MAX_SMALL_REPLY_BYTES: usize = 8 * 1024;

/// The most one reply can take: a `GET` of the largest value, each byte escaped as `\u00XX` (6 bytes).
pub const MAX_ONE_REPLY_BYTES: usize = 6 * crate::kv::MAX_VALUE_BYTES + 64;

/// A TCP connection writes its pending replies once they pass this (64 KiB), and always before it reads.
pub const MAX_PENDING_REPLY_BYTES: usize = 64 * 1024;

// One reply always fits in a request's budget, so a request can always answer its first command.
const _: () = assert!(MAX_ONE_REPLY_BYTES < MAX_REPLY_BYTES);

/// The commands of a request: its non-blank lines (blank lines get no reply and run nothing).
pub fn count_commands(text: &str) -> usize {
    text.split('\n').filter(|raw| !is_blank(raw)).count()
}

/// A line with nothing but whitespace: no command, no reply.
pub fn is_blank(raw: &str) -> bool {
    raw.trim().is_empty()
}

/// How `POST /kv/commands` spends its [`MAX_REPLY_BYTES`], so that a request that would pass it stops
/// *before* a command with effects: a `GET` runs and its reply is taken if it fits in what is left (a
/// read changes nothing, so one that does not fit is as if it never ran); any other command runs only
/// while [`MAX_SMALL_REPLY_BYTES`] are left, the most its reply can take.
#[derive(Debug)]
pub struct ReplyBudget {
    left: usize,
}

impl ReplyBudget {
    /// A budget of `limit` reply bytes for one request.
    pub fn new(limit: usize) -> Self {
        Self { left: limit }
    }

    /// Whether the command on `raw` may run now.
    pub fn admits(&self, raw: &str) -> bool {
        is_read(raw) || self.left >= MAX_SMALL_REPLY_BYTES
    }

    /// Spends `reply`'s bytes. `false`, spending nothing, if they do not fit: the request stops there.
    pub fn spend(&mut self, reply: &str) -> bool {
        match self.left.checked_sub(reply.len()) {
            Some(left) => {
                self.left = left;
                true
            }
            None => false,
        }
    }
}

/// A `GET`: the one command whose reply can be large, and which changes nothing.
fn is_read(raw: &str) -> bool {
    matches!(parse(raw), Ok(Some(Command::Get { .. })))
}

/// The reply to a TCP connection over [`crate::defaults::LINE_MAX_CONNECTIONS`] (or the configured cap), before it is
/// closed.
pub fn too_many_connections(limit: usize) -> String {
    error(&format!(
        "Too many connections (limit {limit}); try again later"
    ))
}

/// The reply to an idle connection closed to make room for a new one at the connection cap.
pub fn gave_way(limit: usize) -> String {
    error(&format!(
        "Closed to make room for a new connection: the server holds at most {limit}, and this one was \
         idle the longest"
    ))
}

/// The reply to a TCP connection idle past its timeout, before it is closed.
pub fn idle_timeout(timeout: std::time::Duration) -> String {
    error(&format!(
        "Idle for {} s; closing the connection (an open transaction was rolled back)",
        timeout.as_secs()
    ))
}

/// One parsed command. Keys and values are raw here; the session validates them with the key/value rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command<'a> {
    /// `PUT key value`: writes the value.
    Put {
        /// The key, unvalidated.
        key: &'a str,
        /// The value, unvalidated.
        value: &'a str,
    },
    /// `GET key`: reads the value.
    Get {
        /// The key, unvalidated.
        key: &'a str,
    },
    /// `DEL key` (or `DELETE key`): deletes the key.
    Del {
        /// The key, unvalidated.
        key: &'a str,
    },
    /// `START`: opens a transaction.
    Start,
    /// `COMMIT`: commits the open transaction.
    Commit,
    /// `ROLLBACK`: drops the open transaction.
    Rollback,
}

/// Parses one line (without its `\n`; a trailing `\r` is ignored). `Ok(None)`: a blank line, which gets no
/// reply. `Err`: the message of the error reply.
pub fn parse(line: &str) -> Result<Option<Command<'_>>, String> {
    let line = line.strip_suffix('\r').unwrap_or(line);
    let rest = line.trim_start();
    if rest.trim_end().is_empty() {
        return Ok(None);
    }
    let (word, rest) = next_word(rest);
    let usage = |text: &str| Err(format!("Usage: {text}"));
    match word.to_ascii_uppercase().as_str() {
        "PUT" => {
            let (key, rest) = next_word(rest);
            // Everything after the whitespace that follows the key is the value, inner spaces kept and
            // trailing ones dropped: spaces are significant only inside the value, as the seed server's
            // documentation reads `PUT   a    3 * 3 = 9 ` (the value is `3 * 3 = 9`).
            let value = rest.trim();
            if key.is_empty() || value.is_empty() {
                return usage("PUT key value");
            }
            Ok(Some(Command::Put { key, value }))
        }
        "GET" | "DEL" | "DELETE" => {
            let (key, rest) = next_word(rest);
            if key.is_empty() || !rest.trim().is_empty() {
                return usage(if word.eq_ignore_ascii_case("GET") {
                    "GET key"
                } else {
                    "DEL key"
                });
            }
            Ok(Some(if word.eq_ignore_ascii_case("GET") {
                Command::Get { key }
            } else {
                Command::Del { key }
            }))
        }
        keyword @ ("START" | "COMMIT" | "ROLLBACK") => {
            if !rest.trim().is_empty() {
                return usage(keyword);
            }
            Ok(Some(match keyword {
                "START" => Command::Start,
                "COMMIT" => Command::Commit,
                _ => Command::Rollback,
            }))
        }
        _ => Err(format!("Unknown command: {}", truncate(word, 64))),
    }
}

fn next_word(s: &str) -> (&str, &str) {
    let s = s.trim_start();
    match s.find(char::is_whitespace) {
        Some(end) => (&s[..end], &s[end..]),
        None => (s, ""),
    }
}

fn truncate(s: &str, chars: usize) -> String {
    match s.char_indices().nth(chars) {
        Some((end, _)) => format!("{}…", &s[..end]),
        None => s.to_owned(),
    }
}

/// `{"status": "Ok"}`
pub fn ok() -> String {
    "{\"status\": \"Ok\"}\n".to_owned()
}

/// `{"status": "Ok", "result": "<value>"}`
pub fn result(value: &str) -> String {
    format!(
        "{{\"status\": \"Ok\", \"result\": {}}}\n",
        python_json_string(value)
    )
}

/// `{"status": "Error", "mesg": "<message>"}`
pub fn error(message: &str) -> String {
    format!(
        "{{\"status\": \"Error\", \"mesg\": {}}}\n",
        python_json_string(message)
    )
}

/// A JSON string exactly as Python's `json.dumps` (with its default `ensure_ascii=True`) writes it:
/// `"` and `\` escaped, `\n \r \t \b \f` by name, other control characters and everything outside ASCII
/// as lowercase `\uXXXX` (UTF-16, so surrogate pairs beyond the BMP), DEL (0x7f) included; `/` as it is.
pub fn python_json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_case_insensitive_and_values_keep_inner_spaces() {
        // The seed's documented example: spaces matter only inside the value, trailing ones are dropped.
        assert_eq!(
            parse("PUT   a    3 * 3 = 9 ").unwrap(),
            Some(Command::Put {
                key: "a",
                value: "3 * 3 = 9"
            })
        );
        assert_eq!(
            parse("PUT a  x  y \t\r").unwrap(),
            Some(Command::Put {
                key: "a",
                value: "x  y"
            })
        );
        assert_eq!(
            parse("put a {\"x\": 1}\r").unwrap(),
            Some(Command::Put {
                key: "a",
                value: "{\"x\": 1}"
            })
        );
        assert_eq!(parse("get a").unwrap(), Some(Command::Get { key: "a" }));
        assert_eq!(parse("  Get a  ").unwrap(), Some(Command::Get { key: "a" }));
        assert_eq!(parse("DEL a").unwrap(), Some(Command::Del { key: "a" }));
        assert_eq!(parse("delete a").unwrap(), Some(Command::Del { key: "a" }));
        assert_eq!(parse("start").unwrap(), Some(Command::Start));
        assert_eq!(parse("Commit").unwrap(), Some(Command::Commit));
        assert_eq!(parse("ROLLBACK\r").unwrap(), Some(Command::Rollback));
        assert_eq!(
            parse("GET Key").unwrap(),
            Some(Command::Get { key: "Key" }),
            "keys keep their case"
        );
        for blank in ["", "   ", "\r", " \t "] {
            assert_eq!(parse(blank).unwrap(), None);
        }
    }

    #[test]
    fn wrong_arity_and_unknown_commands_are_errors() {
        for (line, message) in [
            ("PUT", "Usage: PUT key value"),
            ("PUT a", "Usage: PUT key value"),
            ("PUT a   ", "Usage: PUT key value"),
            ("GET", "Usage: GET key"),
            ("GET a b", "Usage: GET key"),
            ("DEL", "Usage: DEL key"),
            ("DELETE a b", "Usage: DEL key"),
            ("START now", "Usage: START"),
            ("COMMIT x", "Usage: COMMIT"),
            ("FLY a", "Unknown command: FLY"),
        ] {
            assert_eq!(parse(line).unwrap_err(), message, "{line:?}");
        }
    }

    #[test]
    fn commands_are_the_non_blank_lines() {
        assert_eq!(count_commands(""), 0);
        assert_eq!(count_commands("GET a\n\n  \r\nPUT a 1\nGET a"), 3);
        assert_eq!(count_commands(&"GET a\n".repeat(2000)), 2000);
    }

    #[test]
    fn the_reply_budget_stops_before_a_command_with_effects() {
        let mut budget = ReplyBudget::new(MAX_SMALL_REPLY_BYTES + 10);
        assert!(budget.admits("PUT a 1") && budget.admits("GET a"));
        assert!(budget.spend(&"x".repeat(11)));
        // Under 8 KiB left: no write may run (its reply might not fit), a read still may.
        assert!(!budget.admits("PUT a 1") && !budget.admits("START") && !budget.admits("FLY"));
        assert!(budget.admits("get a"));
        assert!(!budget.spend(&"x".repeat(MAX_SMALL_REPLY_BYTES)));
        assert!(budget.spend(&"x".repeat(MAX_SMALL_REPLY_BYTES - 1)));
        assert!(!budget.spend("x"));
    }

    #[test]
    fn the_longest_small_replies_fit_their_bound() {
        // A conflict names a key of 1024 bytes of 3-byte characters, each escaped as 6 bytes.
        let key = "说".repeat(MAX_KEY_CHARS);
        let conflict = error(&format!(
            "Conflict on key {key}: the transaction was rolled back"
        ));
        let unknown = error(&format!(
            "Unknown command: {}",
            truncate(&"🚀".repeat(100), 64)
        ));
        for reply in [conflict, unknown] {
            assert!(reply.len() <= MAX_SMALL_REPLY_BYTES, "{}", reply.len());
        }
        let value = "\u{1}".repeat(crate::kv::MAX_VALUE_BYTES);
        assert!(result(&value).len() <= MAX_ONE_REPLY_BYTES);
    }

    const MAX_KEY_CHARS: usize = crate::kv::MAX_KEY_BYTES / 3;

    #[test]
    fn replies_are_the_bytes_python_writes() {
        assert_eq!(ok(), "{\"status\": \"Ok\"}\n");
        assert_eq!(result("1"), "{\"status\": \"Ok\", \"result\": \"1\"}\n");
        assert_eq!(
            error("Key not found!"),
            "{\"status\": \"Error\", \"mesg\": \"Key not found!\"}\n"
        );
        // json.dumps('{"a": 1}'), json.dumps('说 é 🚀'), json.dumps('a\\b/c\x7f\x01\t')
        assert_eq!(python_json_string("{\"a\": 1}"), r#""{\"a\": 1}""#);
        assert_eq!(
            python_json_string("说 é 🚀"),
            r#""\u8bf4 \u00e9 \ud83d\ude80""#
        );
        assert_eq!(
            python_json_string("a\\b/c\u{7f}\u{1}\t\u{8}\u{c}\r\n"),
            r#""a\\b/c\u007f\u0001\t\b\f\r\n""#
        );
    }
}
