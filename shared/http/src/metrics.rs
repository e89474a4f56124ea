//! Request metrics, recorded in one place for the Lambdas and the local server.
//!
//! Every answered request goes through [`observe`], which records through the `metrics` facade; the process
//! decides where they go by installing a recorder once: CloudWatch Embedded Metric Format lines on stdout in a
//! Lambda ([`emf`], flushed after each invocation by [`crate::lambda`]), Prometheus text at `GET /metrics` in
//! the local server. With no recorder installed (unit tests, tools), recording costs next to nothing.
//!
//! Every metric of a request carries the same three labels, so that one invocation is one EMF line:
//!
//! - `operation`: the Lambda binary serving the route (`kv-get`, `certificates-issue`, ...); on AWS the
//!   function's name (`AWS_LAMBDA_FUNCTION_NAME`, what `!Ref` of the function gives an alarm);
//! - `status`: the HTTP status (`200`, `409`, ...);
//! - `code`: the error code the response carries (`conflict`, `insufficient_shares`, `no_free_slot`,
//!   `rate_limited`, ...), or `none`.
//!
//! All three come from fixed sets in the code, never from keys, ids or other client input, so the number of
//! series stays bounded.

use crate::Response;
use metrics::{Counter, Histogram, Label, SharedString};
use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

/// CloudWatch namespace of the EMF metrics.
pub const NAMESPACE: &str = "strata";

/// Counter: every answered request.
pub const REQUESTS: &str = "strata_requests_total";
/// Histogram: seconds from the request reaching strata to its response.
pub const DURATION: &str = "strata_request_duration_seconds";
/// Counter: `409` answers (a transaction conflict, shares or slots running out, a key in use, ...).
pub const CONFLICTS: &str = "strata_conflicts_total";
/// Counter: certificate issues refused with `insufficient_shares`.
pub const INSUFFICIENT_SHARES: &str = "strata_insufficient_shares_total";
/// Counter: widget associations refused with `no_free_slot`.
pub const SLOT_REFUSALS: &str = "strata_slot_refusals_total";
/// Counter: `429` answers (rate limiting).
pub const THROTTLES: &str = "strata_throttles_total";

/// The error code of an error response, attached by [`crate::response::error`] so that recording it needs no
/// look into the body.
#[derive(Debug, Clone)]
pub struct ErrorCode(pub Cow<'static, str>);

/// Describes the metrics (units, help text) to whichever recorder is installed. Call after installing it.
pub fn describe() {
    use metrics::{Unit, describe_counter, describe_histogram};
    describe_counter!(
        REQUESTS,
        Unit::Count,
        "Requests answered, by operation, status and error code"
    );
    describe_histogram!(
        DURATION,
        Unit::Seconds,
        "Time to answer a request, in seconds"
    );
    describe_counter!(CONFLICTS, Unit::Count, "409 answers");
    describe_counter!(
        INSUFFICIENT_SHARES,
        Unit::Count,
        "Certificate issues refused: insufficient_shares"
    );
    describe_counter!(
        SLOT_REFUSALS,
        Unit::Count,
        "Widget associations refused: no_free_slot"
    );
    describe_counter!(THROTTLES, Unit::Count, "429 answers (rate limited)");
}

/// Records one answered request of `operation` that started at `started`.
pub fn observe(operation: &'static str, started: Instant, response: &Response) {
    record(
        operation,
        started,
        response.status().as_u16(),
        error_code(response),
    );
}

/// Records one answer given outside a handler (the local server's rate limiter), by status and code.
pub fn record(operation: &'static str, started: Instant, status: u16, code: SharedString) {
    let elapsed = started.elapsed().as_secs_f64();
    with_handles(operation, status, code, |handles| {
        handles.requests.increment(1);
        handles.duration.record(elapsed);
        for extra in handles.extra.iter().flatten() {
            extra.increment(1);
        }
    });
}

/// The metric handles of one (operation, status, code): what the recorder gives for each name and those
/// labels. Resolving them builds a key and looks it up in the recorder's registry, so they are resolved
/// once per label set and thread, not per answer.
struct Handles {
    requests: Counter,
    duration: Histogram,
    /// [`CONFLICTS`] for a `409`, and [`INSUFFICIENT_SHARES`] or [`SLOT_REFUSALS`] for those codes;
    /// [`THROTTLES`] for a `429`.
    extra: [Option<Counter>; 2],
}

impl Handles {
    fn resolve(operation: &'static str, status: u16, code: &SharedString) -> Self {
        let labels = [
            Label::from_static_parts("operation", operation),
            Label::new("status", status_label(status)),
            Label::new("code", code.clone()),
        ];
        let counter = |name: &'static str| metrics::counter!(name, labels.iter());
        let extra = match (status, &**code) {
            (409, "insufficient_shares") => {
                [Some(counter(CONFLICTS)), Some(counter(INSUFFICIENT_SHARES))]
            }
            (409, "no_free_slot") => [Some(counter(CONFLICTS)), Some(counter(SLOT_REFUSALS))],
            (409, _) => [Some(counter(CONFLICTS)), None],
            (429, _) => [Some(counter(THROTTLES)), None],
            _ => [None, None],
        };
        Self {
            requests: counter(REQUESTS),
            duration: metrics::histogram!(DURATION, labels.iter()),
            extra,
        }
    }
}

/// Bumped whenever this process installs a recorder, so that handles resolved before (from no recorder,
/// which records nothing) are resolved again.
static RECORDER_GENERATION: AtomicUsize = AtomicUsize::new(0);

/// Call right after installing a global recorder.
pub fn recorder_installed() {
    RECORDER_GENERATION.fetch_add(1, Ordering::Release);
}

/// Keyed by strings, hashed on every answer: with foldhash rather than SipHash (the keys are ours, not a
/// client's, so there is nothing to flood).
type HandleCache = HashMap<(&'static str, u16, SharedString), Handles, foldhash::fast::RandomState>;

thread_local! {
    static HANDLES: RefCell<(usize, HandleCache)> = RefCell::new((0, HashMap::default()));
}

fn with_handles(
    operation: &'static str,
    status: u16,
    code: SharedString,
    f: impl FnOnce(&Handles),
) {
    // The label sets are bounded (see the module's comment), so the cache is too.
    HANDLES.with(|cache| {
        let mut cache = cache.borrow_mut();
        let generation = RECORDER_GENERATION.load(Ordering::Acquire);
        if cache.0 != generation {
            *cache = (generation, HashMap::default());
        }
        let handles = cache.1.entry((operation, status, code)).or_insert_with_key(
            |(operation, status, code)| Handles::resolve(operation, *status, code),
        );
        f(handles);
    });
}

impl ErrorCode {
    /// As a label value; no copy for the codes written in the source.
    pub fn label(&self) -> SharedString {
        match &self.0 {
            Cow::Borrowed(code) => SharedString::const_str(code),
            Cow::Owned(code) => SharedString::from_owned(code.clone()),
        }
    }
}

/// The code an error response carries: from [`ErrorCode`], or (a replayed idempotent response, which is
/// rebuilt from its stored body) from the body's `error.code`.
fn error_code(response: &Response) -> SharedString {
    if let Some(code) = response.extensions().get::<ErrorCode>() {
        return code.label();
    }
    if response.status().as_u16() < 400 {
        return SharedString::const_str("none");
    }
    #[derive(serde::Deserialize)]
    struct Body {
        error: Inner,
    }
    #[derive(serde::Deserialize)]
    struct Inner {
        code: String,
    }
    match serde_json::from_slice::<Body>(response.body().as_ref()) {
        // Only codes strata itself wrote are ever stored, so this set stays bounded too.
        Ok(body) => SharedString::from_owned(body.error.code),
        Err(_) => SharedString::const_str("none"),
    }
}

/// The status as a label without formatting a string per request.
fn status_label(status: u16) -> SharedString {
    const KNOWN: [(u16, &str); 16] = [
        (200, "200"),
        (201, "201"),
        (204, "204"),
        (400, "400"),
        (401, "401"),
        (403, "403"),
        (404, "404"),
        (405, "405"),
        (409, "409"),
        (413, "413"),
        (415, "415"),
        (422, "422"),
        (429, "429"),
        (500, "500"),
        (502, "502"),
        (503, "503"),
    ];
    match KNOWN.iter().find(|(known, _)| *known == status) {
        Some((_, label)) => SharedString::const_str(label),
        None => SharedString::from_owned(status.to_string()),
    }
}

/// The EMF recorder of this process (namespace [`NAMESPACE`]), installed as the global recorder on first use.
/// `None` when another recorder was installed first: then metrics go there and nothing is flushed as EMF.
/// Safe to call any number of times, from any thread.
pub fn emf() -> Option<&'static metrics_cloudwatch_embedded::Collector> {
    static COLLECTOR: OnceLock<Option<&'static metrics_cloudwatch_embedded::Collector>> =
        OnceLock::new();
    *COLLECTOR.get_or_init(|| {
        match metrics_cloudwatch_embedded::Builder::new()
            .cloudwatch_namespace(NAMESPACE)
            .init()
        {
            Ok(collector) => {
                recorder_installed();
                describe();
                Some(collector)
            }
            Err(e) => {
                tracing::warn!(error = %e, "metrics recorder not installed: another one was first");
                None
            }
        }
    })
}

/// Writes what was recorded since the last flush as EMF, one JSON line per label set (one for a request),
/// with the Lambda request id as the `requestId` property so a metric leads to its logs.
pub fn flush_emf(
    collector: &metrics_cloudwatch_embedded::Collector,
    request_id: &str,
    out: &mut impl std::io::Write,
) -> std::io::Result<()> {
    collector.set_property("requestId", request_id);
    // Buffered, then written at once: a line split between two writes could interleave with a log line.
    let mut buf = Vec::with_capacity(1024);
    collector.flush(&mut buf)?;
    out.write_all(&buf)?;
    out.flush()
}
