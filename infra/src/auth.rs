//! `strata serve --auth-token TOKEN` (or `STRATA_AUTH_TOKEN`): one shared secret for the local server.
//!
//! With a token, every HTTP request (every route of the API, the fallback, `GET /metrics`,
//! `GET /openapi.json`, and the WebSocket upgrade of `GET /kv/ws`) must carry `Authorization: Bearer TOKEN`;
//! anything else is answered `401 unauthorized` in the contract's error JSON with `www-authenticate: Bearer`,
//! before any handler runs. A line-protocol connection over TCP must send `AUTH TOKEN` before any other
//! command (see [`crate::line`]). Tokens are compared in constant time.

use http::header::{AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// Longest token accepted, in bytes.
pub const MAX_TOKEN_BYTES: usize = 4096;

/// Tokens shorter than this are accepted, with a warning at start.
pub const SHORT_TOKEN_BYTES: usize = 16;

/// The error code of every refusal.
pub const CODE: &str = "unauthorized";

/// The shared secret. Its `Debug` never shows it.
#[derive(Clone)]
pub struct AuthToken(Arc<[u8]>);

impl std::fmt::Debug for AuthToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuthToken(…)")
    }
}

impl AuthToken {
    /// A token is 1 to 4096 visible ASCII characters (no spaces or control characters: it is one word of
    /// an `AUTH` line and the rest of an `Authorization` header).
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.is_empty() || raw.len() > MAX_TOKEN_BYTES {
            return Err(format!(
                "the token must be 1 to {MAX_TOKEN_BYTES} characters, not {}",
                raw.len()
            ));
        }
        if !raw.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(
                "the token must be visible ASCII characters, without spaces or control characters"
                    .to_owned(),
            );
        }
        Ok(Self(raw.as_bytes().into()))
    }

    /// Whether `candidate` is the token. The time taken depends on the lengths only, never on where the
    /// bytes first differ.
    pub fn matches(&self, candidate: &[u8]) -> bool {
        bool::from(self.0.as_ref().ct_eq(candidate))
    }

    /// Shorter than [`SHORT_TOKEN_BYTES`]: guessable.
    pub fn is_short(&self) -> bool {
        self.0.len() < SHORT_TOKEN_BYTES
    }

    /// Whether a request's `Authorization` header is `Bearer <this token>` (the scheme in any case, as
    /// RFC 9110 has it).
    pub fn authorizes(&self, headers: &http::HeaderMap) -> bool {
        let mut values = headers.get_all(AUTHORIZATION).iter();
        let (Some(value), None) = (values.next(), values.next()) else {
            return false;
        };
        let value = value.as_bytes();
        let Some(space) = value.iter().position(|b| *b == b' ') else {
            return false;
        };
        let (scheme, credentials) = value.split_at(space);
        scheme.eq_ignore_ascii_case(b"bearer") && self.matches(credentials.trim_ascii())
    }
}

/// The `401`: the contract's error JSON, `www-authenticate: Bearer`, and the error code for the metrics.
pub fn unauthorized(message: &str) -> axum::response::Response {
    let body = serde_json::json!({"error": {"code": CODE, "message": message}});
    let mut response = http::Response::builder()
        .status(http::StatusCode::UNAUTHORIZED)
        .header(CONTENT_TYPE, "application/json")
        .header(WWW_AUTHENTICATE, "Bearer realm=\"strata\"")
        .body(axum::body::Body::from(body.to_string()))
        .expect("a valid status and headers");
    response
        .extensions_mut()
        .insert(strata_http::metrics::ErrorCode(CODE.into()));
    response
}

/// Why a request is refused, as its message says.
pub fn refusal(headers: &http::HeaderMap) -> &'static str {
    if headers.contains_key(AUTHORIZATION) {
        "the bearer token is not the server's (Authorization: Bearer TOKEN, the token of --auth-token)"
    } else {
        "this server requires Authorization: Bearer TOKEN (the token of --auth-token)"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        headers.insert(AUTHORIZATION, value.parse().unwrap());
        headers
    }

    #[test]
    fn tokens_are_visible_ascii_words() {
        assert!(AuthToken::parse("s3cr3t-t0ken_~!").is_ok());
        for bad in [
            "",
            "has space",
            "tab\there",
            "é",
            &"x".repeat(MAX_TOKEN_BYTES + 1),
        ] {
            assert!(AuthToken::parse(bad).is_err(), "{bad:?}");
        }
        assert!(AuthToken::parse("short").unwrap().is_short());
        assert!(!AuthToken::parse("0123456789abcdef").unwrap().is_short());
        assert_eq!(
            format!("{:?}", AuthToken::parse("secret").unwrap()),
            "AuthToken(…)"
        );
    }

    #[test]
    fn only_the_bearer_token_itself_authorizes() {
        let token = AuthToken::parse("secret").unwrap();
        assert!(token.authorizes(&headers("Bearer secret")));
        assert!(token.authorizes(&headers("bearer secret")));
        assert!(token.authorizes(&headers("BEARER  secret ")));
        for bad in [
            "Bearer secre",
            "Bearer secrets",
            "Bearer",
            "Bearer ",
            "secret",
            "Basic secret",
            "Bearer SECRET",
        ] {
            assert!(!token.authorizes(&headers(bad)), "{bad:?}");
        }
        assert!(!token.authorizes(&http::HeaderMap::new()));
        let mut twice = headers("Bearer secret");
        twice.append(AUTHORIZATION, "Bearer secret".parse().unwrap());
        assert!(!token.authorizes(&twice), "two Authorization headers");
    }
}
