//! `AUTH <token>` on a line-protocol connection, and what the connection may do before it.

use crate::auth::AuthToken;
use std::time::Duration;
use strata_core::kv::line;

/// Wrong `AUTH` tokens a connection may send; the last one closes it.
pub const MAX_AUTH_FAILURES: u32 = 3;

/// Commands other than `AUTH` a connection may send before it authenticates; the last one closes it.
pub const MAX_UNAUTHENTICATED_COMMANDS: u32 = 3;

/// How long a connection has to authenticate (with a token configured), however many bytes it sends.
pub const AUTH_DEADLINE: Duration = Duration::from_secs(10);

/// The longest line of a connection that has not authenticated: room for `AUTH` and the longest token.
pub const UNAUTHENTICATED_LINE_BYTES: usize = 8 * 1024;

/// The reply to a command before a successful `AUTH`.
pub const AUTH_REQUIRED: &str = "Authentication required: send AUTH <token> first";

/// The reply, before closing, to `AUTH` from an address that sends wrong tokens too fast.
pub const AUTH_THROTTLED: &str =
    "Too many wrong tokens from this address; closing the connection (retry later)";

/// The reply, before closing, to a connection whose first line is an HTTP request.
pub const HTTP_ON_LINE_PORT: &str =
    "This is the key/value line protocol, not HTTP; closing the connection";

/// `METHOD target HTTP/version`: what a browser (or any HTTP client) sends first.
fn is_http_request_line(text: &str) -> bool {
    let mut words = text.split_ascii_whitespace();
    let (Some(method), Some(_target), Some(version), None) =
        (words.next(), words.next(), words.next(), words.next())
    else {
        return false;
    };
    !method.is_empty()
        && method.bytes().all(|b| b.is_ascii_uppercase())
        && version
            .strip_prefix("HTTP/")
            .is_some_and(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit() || b == b'.'))
}

/// The `AUTH <token>` command of one connection, handled before the session sees a line:
///
/// - with a token configured, every other command before a successful `AUTH` is refused
///   ([`AUTH_REQUIRED`]) and runs nothing; `AUTH` with the right token answers `Ok`, with a wrong one an
///   `Error`, and the [`MAX_AUTH_FAILURES`]th wrong one closes the connection. `AUTH` on a connection that
///   is already authenticated checks the token again (a wrong one counts as a failure, and leaves the
///   connection authenticated);
/// - without a token, `AUTH` answers an `Error` saying so (like Redis without a password), so that a
///   client that expected a protected server notices it is not; every other command runs.
///
/// It also closes a TCP connection whose first line is an HTTP request line (`POST / HTTP/1.1`): a web
/// page's request sent to the line port, whose body would otherwise run as commands (as Redis does).
#[derive(Debug)]
pub struct Gate {
    token: Option<AuthToken>,
    authenticated: bool,
    failures: u32,
    /// The client's address, whose wrong tokens are slowed with those of its HTTP requests.
    client: Option<std::net::IpAddr>,
    /// No line has been seen yet (blank ones aside).
    first: bool,
    /// Commands refused before authentication.
    strangers: u32,
}

/// What the gate makes of a line.
#[derive(Debug, PartialEq, Eq)]
pub enum Gated {
    /// Not for the gate: the session runs it.
    Pass,
    /// Answered here (blank lines get no reply, as in the session).
    Reply(Option<String>),
    /// Answered here, and the connection is closed after the reply.
    Close(String),
}

/// The reply, before closing, to the last command a connection may send before it authenticates.
pub const AUTH_REQUIRED_CLOSING: &str =
    "Authentication required: send AUTH <token> first; closing the connection";

impl Gate {
    /// A TCP connection from `client`: unauthenticated until `AUTH` if there is a token.
    pub fn new(token: Option<AuthToken>, client: Option<std::net::IpAddr>) -> Self {
        Self {
            authenticated: token.is_none(),
            token,
            failures: 0,
            client,
            first: true,
            strangers: 0,
        }
    }

    pub fn is_authenticated(&self) -> bool {
        self.authenticated
    }

    /// A connection authenticated already (a WebSocket whose upgrade carried the bearer token). It spoke
    /// HTTP to get here, so its lines are not checked for it.
    pub fn authenticated(token: Option<AuthToken>) -> Self {
        Self {
            token,
            authenticated: true,
            failures: 0,
            client: None,
            first: false,
            strangers: 0,
        }
    }

    pub async fn check(&mut self, text: &str) -> Gated {
        let text = text.strip_suffix('\r').unwrap_or(text).trim();
        if self.first && !text.is_empty() {
            self.first = false;
            if is_http_request_line(text) {
                tracing::warn!(
                    client = ?self.client,
                    "a line-protocol connection began with an HTTP request (a web page's, or a client \
                     on the wrong port); closed"
                );
                return Gated::Close(line::error(HTTP_ON_LINE_PORT));
            }
        }
        let (word, rest) = match text.find(char::is_whitespace) {
            Some(end) => (&text[..end], text[end..].trim()),
            None => (text, ""),
        };
        if !word.eq_ignore_ascii_case("AUTH") {
            return if self.authenticated {
                Gated::Pass
            } else if text.is_empty() {
                Gated::Reply(None)
            } else {
                self.strangers += 1;
                if self.strangers >= MAX_UNAUTHENTICATED_COMMANDS {
                    Gated::Close(line::error(AUTH_REQUIRED_CLOSING))
                } else {
                    Gated::Reply(Some(line::error(AUTH_REQUIRED)))
                }
            };
        }
        let Some(token) = &self.token else {
            return Gated::Reply(Some(line::error(
                "No authentication is configured on this server (strata serve --auth-token)",
            )));
        };
        if rest.is_empty() || rest.contains(char::is_whitespace) {
            return Gated::Reply(Some(line::error("Usage: AUTH token")));
        }
        match token
            .verify(self.client, "line", Some(rest.as_bytes()))
            .await
        {
            crate::auth::Verdict::Valid => {
                self.authenticated = true;
                self.failures = 0;
                return Gated::Reply(Some(line::ok()));
            }
            crate::auth::Verdict::Throttled(_) => {
                return Gated::Close(line::error(AUTH_THROTTLED));
            }
            crate::auth::Verdict::Wrong => {}
        }
        self.failures += 1;
        if self.failures >= MAX_AUTH_FAILURES {
            Gated::Close(line::error(&format!(
                "Authentication failed {MAX_AUTH_FAILURES} times; closing the connection"
            )))
        } else {
            Gated::Reply(Some(line::error("Authentication failed: wrong token")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "a-secret-of-24-characters";

    fn token() -> Option<AuthToken> {
        Some(AuthToken::parse(SECRET).unwrap())
    }

    fn error(message: &str) -> Gated {
        Gated::Reply(Some(line::error(message)))
    }

    #[tokio::test]
    async fn with_a_token_nothing_passes_before_auth() {
        let mut gate = Gate::new(token(), None);
        assert_eq!(gate.check("GET a").await, error(AUTH_REQUIRED));
        assert_eq!(gate.check("PUT a 1\r").await, error(AUTH_REQUIRED));
        assert_eq!(gate.check("  ").await, Gated::Reply(None));
        assert_eq!(gate.check("AUTH").await, error("Usage: AUTH token"));
        assert_eq!(gate.check("AUTH a b").await, error("Usage: AUTH token"));
        assert_eq!(
            gate.check(&format!("auth {SECRET}\r")).await,
            Gated::Reply(Some(line::ok()))
        );
        assert_eq!(gate.check("GET a").await, Gated::Pass);
        // A wrong token later leaves the connection authenticated.
        assert_eq!(
            gate.check("AUTH nope").await,
            error("Authentication failed: wrong token")
        );
        assert_eq!(gate.check("GET a").await, Gated::Pass);
    }

    #[tokio::test]
    async fn the_third_wrong_token_closes_the_connection() {
        let mut gate = Gate::new(token(), None);
        for _ in 1..MAX_AUTH_FAILURES {
            assert_eq!(
                gate.check("AUTH secre").await,
                error("Authentication failed: wrong token")
            );
        }
        assert!(matches!(gate.check("AUTH secrets").await, Gated::Close(_)));
    }

    #[tokio::test]
    async fn without_a_token_auth_says_so_and_everything_passes() {
        let mut gate = Gate::new(None, None);
        assert_eq!(gate.check("GET a").await, Gated::Pass);
        assert!(
            matches!(gate.check("AUTH x").await, Gated::Reply(Some(r)) if r.contains("No authentication"))
        );
        assert_eq!(gate.check("AUTHOR").await, Gated::Pass);
        let mut gate = Gate::authenticated(token());
        assert_eq!(gate.check("GET a").await, Gated::Pass);
        assert_eq!(
            gate.check(&format!("AUTH {SECRET}")).await,
            Gated::Reply(Some(line::ok()))
        );
    }

    /// A web page's request sent to the line port closes the connection at its first line, before its
    /// body's lines could run as commands; the same words later on are commands like any other.
    #[tokio::test]
    async fn a_first_line_in_http_closes_the_connection() {
        for first in ["POST / HTTP/1.1", "GET /kv HTTP/1.0\r", "OPTIONS * HTTP/2"] {
            let mut gate = Gate::new(None, None);
            assert_eq!(gate.check("").await, Gated::Pass);
            assert_eq!(
                gate.check(first).await,
                Gated::Close(line::error(HTTP_ON_LINE_PORT)),
                "{first}"
            );
        }
        let mut gate = Gate::new(None, None);
        assert_eq!(gate.check("GET a").await, Gated::Pass);
        assert_eq!(gate.check("PUT /x HTTP/1.1").await, Gated::Pass);
        for not_http in [
            "PUT a HTTP/1.1 x",
            "GET a",
            "put /x HTTP/1.1",
            "PUT a HTTP/",
        ] {
            let mut gate = Gate::new(None, None);
            assert_eq!(gate.check(not_http).await, Gated::Pass, "{not_http}");
        }
    }
}
