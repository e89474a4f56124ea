//! The key/value line protocol (CONTRACT.md §1 "Line protocol"), compatible with the classic Haus KV servers: one
//! command per line, one JSON reply line per command, byte for byte what Python's `json.dumps` writes.
//!
//! Parsing and reply encoding live here; the session (which store calls a command makes, transactions)
//! is in `strata_kv::line`, shared by the TCP listener, `POST /kv/commands` and the WebSocket routes.

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

/// One parsed command. Keys and values are raw here; the session validates them with the key/value rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command<'a> {
    Put { key: &'a str, value: &'a str },
    Get { key: &'a str },
    Del { key: &'a str },
    Start,
    Commit,
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
            // Everything after the whitespace that follows the key is the value, inner spaces kept.
            let value = rest.trim_start();
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
        assert_eq!(
            parse("PUT   a    3 * 3 = 9 ").unwrap(),
            Some(Command::Put {
                key: "a",
                value: "3 * 3 = 9 "
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
