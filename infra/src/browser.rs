//! What keeps web pages out of the local server (CONTRACT.md, "Who may call").
//!
//! A browser reaches loopback: any page the developer opens can send requests to `127.0.0.1`. Without a
//! token nothing else stands in its way, so the server refuses what only a browser would send:
//!
//! - a `Host` that is not a name or address the server listens on (DNS rebinding: a page's own name made to
//!   resolve to `127.0.0.1`). Allowed: an IP address the server listens on (any, on `0.0.0.0` or `::`),
//!   `localhost` when it listens on loopback or everywhere, and the names of `--allow-host` (for a reverse
//!   proxy). An IP address is never a rebinding: a page can only send it to the address it names.
//! - an `Origin` that is not the server itself: `http://` an allowed address or `localhost`, on the
//!   server's own port; or an `--allow-host` name on any scheme and port. WebSocket upgrades included.
//!   No `Origin` at all is a program, not a page, and passes.
//! - a body of any type but `application/json` on an operation that reads JSON: a page can send
//!   `text/plain` or a form to another site without asking it first, but not JSON.
//!
//! Each refusal is the contract's error JSON: `403 host_not_allowed`, `403 origin_not_allowed`,
//! `415 unsupported_media_type`, before anything else runs. Requests without these headers (every
//! program that is not a browser) pass unchanged.

use http::HeaderMap;
use http::header::{CONTENT_TYPE, HOST, ORIGIN};
use std::net::{IpAddr, SocketAddr};
use strata_core::error::quote;
use strata_core::{Error, Kind};

pub const HOST_NOT_ALLOWED: &str = "host_not_allowed";
pub const ORIGIN_NOT_ALLOWED: &str = "origin_not_allowed";
pub const UNSUPPORTED_MEDIA_TYPE: &str = "unsupported_media_type";

/// Who may address the server: its listen address and the names added for a reverse proxy.
#[derive(Debug, Clone)]
pub struct Allowed {
    listen: SocketAddr,
    /// `--allow-host`, lowercase.
    names: Vec<String>,
}

impl Allowed {
    pub fn new(listen: SocketAddr, names: &[String]) -> Self {
        Self {
            listen,
            names: names.iter().map(|n| n.to_ascii_lowercase()).collect(),
        }
    }

    /// A host as a `Host` header or an `Origin` names it (without port, IPv6 in brackets or not).
    fn is_own_address(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.');
        let bare = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let listen = self.listen.ip();
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return listen.is_unspecified() || ip == listen;
        }
        host.eq_ignore_ascii_case("localhost") && (listen.is_loopback() || listen.is_unspecified())
    }

    fn is_added_name(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.');
        self.names.iter().any(|n| n.eq_ignore_ascii_case(host))
    }

    /// Why the `Host` header refuses the request, if it does.
    pub fn check_host(&self, headers: &HeaderMap) -> Result<(), Error> {
        let Some(value) = headers.get(HOST) else {
            return Ok(());
        };
        let host = value
            .to_str()
            .ok()
            .and_then(|v| v.parse::<http::uri::Authority>().ok());
        match host {
            Some(a) if self.is_own_address(a.host()) || self.is_added_name(a.host()) => Ok(()),
            _ => {
                let shown = quote(&String::from_utf8_lossy(value.as_bytes()));
                Err(Error::new(
                    Kind::Forbidden,
                    HOST_NOT_ALLOWED,
                    format!(
                        "Host {shown} is not an address this server listens on: a web page reaches it \
                         through a name of its own (DNS rebinding). Behind a reverse proxy, allow the \
                         proxy's name with strata serve --allow-host NAME"
                    ),
                ))
            }
        }
    }

    /// Why the `Origin` header refuses the request, if it does.
    pub fn check_origin(&self, headers: &HeaderMap) -> Result<(), Error> {
        let Some(value) = headers.get(ORIGIN) else {
            return Ok(());
        };
        let origin = value
            .to_str()
            .ok()
            .and_then(|v| v.parse::<http::Uri>().ok());
        let allowed = origin.is_some_and(|uri| {
            let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
                return false;
            };
            if uri.path() != "/" && !uri.path().is_empty() {
                return false;
            }
            if self.is_added_name(authority.host()) {
                return true;
            }
            let port = authority.port_u16().or(match scheme {
                "http" => Some(80),
                "https" => Some(443),
                _ => None,
            });
            scheme == "http"
                && port == Some(self.listen.port())
                && self.is_own_address(authority.host())
        });
        if allowed {
            return Ok(());
        }
        let shown = quote(&String::from_utf8_lossy(value.as_bytes()));
        Err(Error::new(
            Kind::Forbidden,
            ORIGIN_NOT_ALLOWED,
            format!(
                "Origin {shown} is not this server: a web page may not use it. Call it from a program \
                 (which sends no Origin), or serve the page through an --allow-host name"
            ),
        ))
    }
}

/// Whether a request's `content-type` is JSON (`application/json`, parameters allowed).
pub fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"))
}

pub fn unsupported_media_type(headers: &HeaderMap) -> Error {
    let sent = headers
        .get(CONTENT_TYPE)
        .map(|v| quote(&String::from_utf8_lossy(v.as_bytes())))
        .unwrap_or_else(|| "none".to_owned());
    Error::new(
        Kind::UnsupportedMediaType,
        UNSUPPORTED_MEDIA_TYPE,
        format!(
            "this operation reads a JSON body: send content-type: application/json (sent: {sent}; with \
             curl, --json)"
        ),
    )
}

/// Whether an operation reads a JSON body: its OpenAPI operation declares an `application/json` request
/// body.
pub fn reads_json(route: &strata_http::route::Route) -> bool {
    (route.openapi)()
        .request_body
        .is_some_and(|body| body.content.contains_key("application/json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(name: http::HeaderName, value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(name, value.parse().unwrap());
        headers
    }

    fn loopback() -> Allowed {
        Allowed::new(
            "127.0.0.1:3000".parse().unwrap(),
            &["strata.example".into()],
        )
    }

    #[test]
    fn hosts_are_the_servers_own_addresses_and_added_names() {
        let allowed = loopback();
        for ok in [
            "127.0.0.1:3000",
            "127.0.0.1",
            "localhost:3000",
            "LOCALHOST",
            "localhost.",
            "strata.example",
            "Strata.Example:443",
        ] {
            assert!(allowed.check_host(&headers(HOST, ok)).is_ok(), "{ok}");
        }
        for bad in [
            "attacker.example:3000",
            "127.0.0.2:3000",
            "[::1]:3000",
            "localhost.attacker.example",
            "",
        ] {
            let e = allowed.check_host(&headers(HOST, bad)).unwrap_err();
            assert_eq!(
                (e.kind, &*e.code),
                (Kind::Forbidden, HOST_NOT_ALLOWED),
                "{bad}"
            );
        }
        assert!(allowed.check_host(&HeaderMap::new()).is_ok());
        let everywhere = Allowed::new("[::]:3000".parse().unwrap(), &[]);
        for ok in ["10.1.2.3:3000", "[::1]:3000", "localhost"] {
            assert!(everywhere.check_host(&headers(HOST, ok)).is_ok(), "{ok}");
        }
        assert!(
            everywhere
                .check_host(&headers(HOST, "my-laptop:3000"))
                .is_err()
        );
    }

    #[test]
    fn origins_are_the_server_itself_or_an_added_name() {
        let allowed = loopback();
        for ok in [
            "http://127.0.0.1:3000",
            "http://localhost:3000",
            "https://strata.example",
            "http://strata.example:8080",
        ] {
            assert!(allowed.check_origin(&headers(ORIGIN, ok)).is_ok(), "{ok}");
        }
        for bad in [
            "https://evil.example",
            "http://localhost:5173",
            "http://127.0.0.1",
            "https://127.0.0.1:3000",
            "null",
            "file://",
            "http://127.0.0.1:3000/page",
        ] {
            let e = allowed.check_origin(&headers(ORIGIN, bad)).unwrap_err();
            assert_eq!(
                (e.kind, &*e.code),
                (Kind::Forbidden, ORIGIN_NOT_ALLOWED),
                "{bad}"
            );
        }
        assert!(allowed.check_origin(&HeaderMap::new()).is_ok());
    }

    #[test]
    fn only_json_is_json() {
        assert!(is_json(&headers(CONTENT_TYPE, "application/json")));
        assert!(is_json(&headers(
            CONTENT_TYPE,
            "Application/JSON; charset=utf-8"
        )));
        for bad in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "application/jsonx",
        ] {
            assert!(!is_json(&headers(CONTENT_TYPE, bad)), "{bad}");
        }
        assert!(!is_json(&HeaderMap::new()));
    }

    #[test]
    fn every_body_reading_operation_but_the_line_protocol_reads_json() {
        let reads = |method: &str, path: &str| {
            let route = crate::routes::all()
                .into_iter()
                .find(|r| r.method == method && r.path == path)
                .unwrap();
            reads_json(&route)
        };
        assert!(reads("POST", "/certificates"));
        assert!(reads("PUT", "/kv/keys/{key+}"));
        assert!(!reads("POST", "/kv/commands"));
        assert!(!reads("GET", "/kv/keys/{key+}"));
    }
}
