//! Request ids and request logging around everything the local server serves.
//!
//! Every request gets an id (`x-request-id`: the client's own, or `<process>-<sequence>`), echoed on its
//! answer. Every line logged while serving it names it: its id, method and path show as the fields of a
//! `request` span would (`span` and `spans` in JSON, `request{…}:` in text).
//!
//! There is no tracing span per request, though. Creating one formats its fields into the subscriber's
//! registry on every request, and each poll enters and leaves it: a measurable part of a request's CPU
//! time, for lines that are rarely written. The request is held in a task-local instead ([`CURRENT`]),
//! and the log format reads it only when a line is written ([`WithRequest`]).

use http::{HeaderValue, Method, Uri};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// What [`super::app`] serves: the checks and the router inside request ids and request logging.
pub type App = Observed<super::Front>;

/// The target of the line each answer gets: at debug (`RUST_LOG=strata::requests=debug`), and at error for
/// a `5xx`.
pub const REQUESTS_TARGET: &str = "strata::requests";

const X_REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");

tokio::task_local! {
    /// The request being served on this task.
    static CURRENT: Current;
}

/// A request as its log lines name it. Each part is a clone that shares the request's own bytes.
#[derive(Debug, Clone)]
pub struct Current {
    id: HeaderValue,
    method: Method,
    uri: Uri,
}

/// Request ids and request logging around `service`: what `strata serve` adds around everything it serves.
pub fn observed<S>(service: S) -> Observed<S> {
    Observed { inner: service }
}

/// See [`observed`].
#[derive(Debug, Clone)]
pub struct Observed<S> {
    inner: S,
}

impl<S, B, R> tower::Service<http::Request<B>> for Observed<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = tokio::task::futures::TaskLocalFuture<Current, Logged<S::Future>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let id = match req.headers().get(X_REQUEST_ID) {
            Some(id) => id.clone(),
            None => next_request_id(),
        };
        let current = Current {
            id: id.clone(),
            method: req.method().clone(),
            uri: req.uri().clone(),
        };
        // The checks in front of the router may log before the first poll: they run in the request too.
        let inner = CURRENT.sync_scope(current.clone(), || self.inner.call(req));
        CURRENT.scope(
            current,
            Logged {
                inner,
                id: Some(id),
                started: Instant::now(),
            },
        )
    }
}

pin_project_lite::pin_project! {
    /// The answer, with the request's id and its log line.
    pub struct Logged<F> {
        #[pin]
        inner: F,
        id: Option<HeaderValue>,
        started: Instant,
    }
}

impl<F, R, E> Future for Logged<F>
where
    F: Future<Output = Result<http::Response<R>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut answer = std::task::ready!(this.inner.poll(cx));
        if let Ok(response) = &mut answer {
            if let Some(id) = this.id.take() {
                response.headers_mut().entry(X_REQUEST_ID).or_insert(id);
            }
            let status = response.status().as_u16();
            let latency_ms = this.started.elapsed().as_secs_f64() * 1e3;
            if response.status().is_server_error() {
                tracing::error!(target: REQUESTS_TARGET, status, latency_ms, "response failed");
            } else {
                tracing::debug!(target: REQUESTS_TARGET, status, latency_ms, "answered");
            }
        }
        Poll::Ready(answer)
    }
}

/// Request ids `<process>-<sequence>`: unique across restarts (the process part is random), and without
/// a `getrandom` call per request as a UUID v4 would make.
fn next_request_id() -> HeaderValue {
    use std::hash::BuildHasher;
    use std::sync::atomic::{AtomicU64, Ordering};
    static PROCESS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    static SEQUENCE: AtomicU64 = AtomicU64::new(0);
    let process = *PROCESS.get_or_init(|| {
        std::collections::hash_map::RandomState::new().hash_one(std::time::SystemTime::now())
    });
    let sequence = SEQUENCE.fetch_add(1, Ordering::Relaxed);
    // Written into a buffer on the stack rather than a `String`: one allocation per request fewer.
    let mut id = [0u8; 33];
    let mut cursor = std::io::Cursor::new(&mut id[..]);
    std::io::Write::write_fmt(&mut cursor, format_args!("{process:016x}-{sequence:x}"))
        .expect("33 bytes hold two u64s in hex and a dash");
    let len = cursor.position() as usize;
    HeaderValue::from_bytes(&id[..len]).expect("hex digits and a dash")
}

/// The log format `F` with the request being served, if any, on each line: as a `request` span's fields
/// would show (see the module's comment).
#[derive(Debug, Clone)]
pub struct WithRequest<F> {
    inner: F,
    json: bool,
}

impl<F> WithRequest<F> {
    /// Around a text format (`request{request_id=… method=… path=…}:` after the level).
    pub fn text(inner: F) -> Self {
        Self { inner, json: false }
    }

    /// Around a JSON format (`span` and `spans`).
    pub fn json(inner: F) -> Self {
        Self { inner, json: true }
    }
}

impl<S, N, F> FormatEvent<S, N> for WithRequest<F>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let Ok(current) = CURRENT.try_with(Current::clone) else {
            return self.inner.format_event(ctx, writer, event);
        };
        // Lines are rare next to requests: formatting one twice costs nothing that matters.
        let mut line = String::new();
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        let line = if self.json {
            current.into_json(&line).unwrap_or(line)
        } else {
            current.into_text(line, event.metadata().level())
        };
        writer.write_str(&line)
    }
}

impl Current {
    fn path(&self) -> &str {
        self.uri.path()
    }

    fn id(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(self.id.as_bytes())
    }

    /// A JSON line with the request as its outermost span.
    fn into_json(self, line: &str) -> Option<String> {
        let mut object: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(line).ok()?;
        let span = serde_json::json!({
            "name": "request",
            "request_id": self.id(),
            "method": self.method.as_str(),
            "path": self.path(),
        });
        match object.get_mut("spans") {
            Some(serde_json::Value::Array(spans)) => spans.insert(0, span.clone()),
            _ => {
                object.insert("spans".into(), serde_json::Value::Array(vec![span.clone()]));
            }
        }
        object.entry("span").or_insert(span);
        let mut line = serde_json::to_string(&object).ok()?;
        line.push('\n');
        Some(line)
    }

    /// A text line with the request after the level, where the outermost span shows.
    fn into_text(self, mut line: String, level: &tracing::Level) -> String {
        let request = format!(
            "request{{request_id={} method={} path={}}}: ",
            self.id(),
            self.method,
            self.path()
        );
        let level = format!("{level} ");
        match line.find(&level) {
            Some(at) => line.insert_str(at + level.len(), &request),
            None => line.insert_str(0, &request),
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::Current;
    use http::{HeaderValue, Method};
    use serde_json::{Value, json};

    fn current() -> Current {
        Current {
            id: HeaderValue::from_static("abc-1"),
            method: Method::PUT,
            uri: "/kv/keys/a%20b?x=1".parse().unwrap(),
        }
    }

    #[test]
    fn a_text_line_names_its_request_where_the_outermost_span_shows() {
        let line = "2026-12-07T15:00:00.000000Z  WARN strata::x: refused code=c\n".to_owned();
        assert_eq!(
            current().into_text(line, &tracing::Level::WARN),
            "2026-12-07T15:00:00.000000Z  WARN request{request_id=abc-1 method=PUT \
             path=/kv/keys/a%20b}: strata::x: refused code=c\n"
        );
    }

    #[test]
    fn a_json_line_has_the_request_as_its_outermost_span() {
        let line = r#"{"timestamp":"t","level":"WARN","fields":{"message":"m"},"target":"x"}"#;
        let line: Value = serde_json::from_str(&current().into_json(line).unwrap()).unwrap();
        let request = json!({
            "name": "request",
            "request_id": "abc-1",
            "method": "PUT",
            "path": "/kv/keys/a%20b",
        });
        assert_eq!(line["span"], request);
        assert_eq!(line["spans"], json!([request]));
        assert_eq!(line["fields"]["message"], "m");
        // A span of its own (the AWS SDK's) stays the innermost; the request comes first in `spans`.
        let line = r#"{"level":"WARN","span":{"name":"invoke"},"spans":[{"name":"invoke"}]}"#;
        let line: Value = serde_json::from_str(&current().into_json(line).unwrap()).unwrap();
        assert_eq!(line["span"]["name"], "invoke");
        assert_eq!(line["spans"], json!([request, {"name": "invoke"}]));
    }
}
