//! The Lambda entry point: what the Lambda binary (`strata-api`) runs for an HTTP or WebSocket function.

use crate::route::Handler;
use crate::{Request, Response, metrics};
use lambda_http::{RequestExt, service_fn};
use std::future::Future;
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use strata_core::{Stores, deadline};

/// Logging for Lambda: JSON when the function's log format is JSON (the template sets it), with the
/// request id on every line; level from `AWS_LAMBDA_LOG_LEVEL` or `RUST_LOG` (as
/// `lambda_http::tracing::init_default_subscriber`).
///
/// The request id comes from the runtime: each invocation runs inside its `Lambda runtime invoke` span,
/// which carries `requestId` (and `xrayTraceId`), and the JSON format writes the current span into every
/// line as `"span":{"requestId":...}`. That span is an info span, so it is kept on even when the level is
/// `WARN` or `ERROR`: the warnings and errors are the lines that most need their request.
pub fn init() {
    use lambda_http::tracing::subscriber::{EnvFilter, filter::LevelFilter};
    let level = std::env::var("AWS_LAMBDA_LOG_LEVEL")
        .or_else(|_| std::env::var("RUST_LOG"))
        .ok()
        .and_then(|level| level.parse::<LevelFilter>().ok())
        .unwrap_or(LevelFilter::INFO);
    let filter = EnvFilter::builder()
        .with_default_directive(level.into())
        .from_env_lossy()
        .add_directive(
            "lambda_runtime::layers::trace=info"
                .parse()
                .expect("a valid directive"),
        );
    let format = lambda_http::tracing::subscriber::fmt()
        .with_target(false)
        .without_time()
        .with_env_filter(filter);
    let json = std::env::var("AWS_LAMBDA_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    if json {
        format.json().init();
    } else {
        format.init();
    }
}

/// Serves one operation until the runtime stops the instance. `stores` is built once per instance, before
/// the first request, and shared by every invocation. Each invocation's metrics are written to stdout as
/// CloudWatch Embedded Metric Format when it ends (see [`invoke`]).
pub async fn run(stores: Stores, handler: Handler) -> Result<(), lambda_http::Error> {
    // Lives as long as the process; the runtime never returns while it serves.
    let stores: &'static Stores = Box::leak(Box::new(stores));
    let emf = metrics::emf();
    let operation = operation();
    lambda_http::run(service_fn(move |req: Request| async move {
        let (request_id, deadline_ms) = req
            .lambda_context_ref()
            .map(|context| (context.request_id.clone(), context.deadline))
            .unwrap_or_default();
        let budget = budget_before(deadline_ms, SystemTime::now()).unwrap_or_else(|| {
            warn_untrusted(deadline_ms);
            crate::REQUEST_BUDGET
        });
        let response = invoke(
            emf,
            operation,
            &request_id,
            deadline::within(budget, handler(stores, req)),
            &mut std::io::stdout(),
        )
        .await;
        Ok::<_, lambda_http::Error>(response)
    }))
    .await
}

/// Kept between the request's deadline and the function's timeout: enough to send the answer (and its
/// metrics line) after the last store call gave up.
pub const ANSWER_MARGIN: Duration = Duration::from_millis(500);

/// The longest timeout Lambda allows a function: an invocation's deadline is never further ahead.
pub const LONGEST_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// The request's budget when the runtime ends the invocation at `deadline_ms` (milliseconds since the Unix
/// epoch, from `Lambda-Runtime-Deadline-Ms`): what is left less [`ANSWER_MARGIN`].
///
/// `None` when that cannot be this invocation's deadline: more than [`LONGEST_TIMEOUT`] ahead, or past by
/// more than the function's own budget ([`crate::REQUEST_BUDGET`]) already. Emulators send such values
/// (`cargo lambda watch` a duration, `600000`; others `0` or an epoch decades ahead); trusting one would
/// give up before the first DynamoDB call, or never.
pub fn budget_before(deadline_ms: u64, now: SystemTime) -> Option<Duration> {
    let deadline = UNIX_EPOCH.checked_add(Duration::from_millis(deadline_ms))?;
    match deadline.duration_since(now) {
        Ok(ahead) if ahead > LONGEST_TIMEOUT => None,
        Ok(ahead) => Some(ahead.saturating_sub(ANSWER_MARGIN)),
        // Just past (a slow hand-over): nothing left, the store is not called.
        Err(past) if past.duration() <= crate::REQUEST_BUDGET => Some(Duration::ZERO),
        Err(_) => None,
    }
}

/// Says once per process that the runtime's deadline was not used: the runtime (an emulator) sends the
/// same kind of value with every invocation.
fn warn_untrusted(deadline_ms: u64) {
    static WARNED: std::sync::Once = std::sync::Once::new();
    WARNED.call_once(|| {
        tracing::warn!(
            deadline_ms,
            budget_ms = crate::REQUEST_BUDGET.as_millis() as u64,
            "lambda-runtime-deadline-ms {deadline_ms} cannot be this invocation's deadline (not an epoch \
             within the longest function timeout): each request gets the function's own budget instead; \
             said once"
        );
    });
}

/// One invocation: awaits the handler's `response`, records it under `operation` and writes this
/// invocation's metrics to `out` (one EMF line) before the response goes back to the runtime, so the line is
/// in the log before Lambda may freeze the instance.
pub async fn invoke(
    emf: Option<&metrics_cloudwatch_embedded::Collector>,
    operation: &'static str,
    request_id: &str,
    response: impl Future<Output = Response>,
    out: &mut impl std::io::Write,
) -> Response {
    let started = Instant::now();
    let response = response.await;
    crate::response::log_error(&response);
    metrics::observe(operation, started, &response);
    if let Some(collector) = emf
        && let Err(e) = metrics::flush_emf(collector, request_id, out)
    {
        tracing::warn!(error = %e, "cannot write metrics");
    }
    response
}

/// The `operation` label of this function: its name on AWS (`AWS_LAMBDA_FUNCTION_NAME`, which `cargo lambda
/// watch` sets to the binary name), else the executable's name.
fn operation() -> &'static str {
    static NAME: OnceLock<String> = OnceLock::new();
    NAME.get_or_init(|| {
        std::env::var("AWS_LAMBDA_FUNCTION_NAME")
            .ok()
            .filter(|name| !name.is_empty())
            .or_else(|| {
                std::env::current_exe().ok().and_then(|exe| {
                    exe.file_stem()
                        .map(|stem| stem.to_string_lossy().into_owned())
                })
            })
            .unwrap_or_else(|| "unknown".to_owned())
    })
}

#[cfg(test)]
mod budget_tests {
    use super::{ANSWER_MARGIN, LONGEST_TIMEOUT, budget_before};
    use crate::REQUEST_BUDGET;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    fn epoch_ms(t: SystemTime) -> u64 {
        t.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
    }

    #[test]
    fn an_aws_deadline_gives_what_is_left_less_the_margin() {
        let now = UNIX_EPOCH + Duration::from_millis(1_750_000_000_000);
        let in_3_s = epoch_ms(now + Duration::from_secs(3));
        assert_eq!(
            budget_before(in_3_s, now),
            Some(Duration::from_secs(3) - ANSWER_MARGIN)
        );
        let longest = epoch_ms(now + LONGEST_TIMEOUT);
        assert_eq!(
            budget_before(longest, now),
            Some(LONGEST_TIMEOUT - ANSWER_MARGIN)
        );
        // Within the margin, or just past: nothing left.
        assert_eq!(
            budget_before(epoch_ms(now + Duration::from_millis(200)), now),
            Some(Duration::ZERO)
        );
        let just_past = epoch_ms(now - REQUEST_BUDGET);
        assert_eq!(budget_before(just_past, now), Some(Duration::ZERO));
    }

    #[test]
    fn a_deadline_that_cannot_be_the_invocations_is_not_trusted() {
        let now = UNIX_EPOCH + Duration::from_millis(1_750_000_000_000);
        // cargo lambda watch's duration, none, an hour past, a millisecond over the longest timeout, 2072.
        for deadline_ms in [
            600_000,
            0,
            epoch_ms(now - Duration::from_secs(3600)),
            epoch_ms(now - REQUEST_BUDGET - Duration::from_millis(1)),
            epoch_ms(now + LONGEST_TIMEOUT + Duration::from_millis(1)),
            3_221_225_472_000,
            u64::MAX,
        ] {
            assert_eq!(budget_before(deadline_ms, now), None, "{deadline_ms}");
        }
    }
}

#[cfg(test)]
mod tests {
    //! The only tests of this crate that record metrics: the EMF recorder is process-wide.

    use super::invoke;
    use crate::metrics;
    use crate::response::{error, from_result, json};
    use http::StatusCode;
    use serde_json::{Value, json};
    use strata_core::Error;

    /// The EMF lines one invocation writes.
    async fn lines_of(
        operation: &'static str,
        request_id: &str,
        response: crate::Response,
    ) -> Vec<Value> {
        let mut out = Vec::new();
        let answered = invoke(
            metrics::emf(),
            operation,
            request_id,
            async { response },
            &mut out,
        )
        .await;
        assert!(answered.status().as_u16() >= 200);
        String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    fn metric_names(line: &Value) -> Vec<&str> {
        let mut names: Vec<&str> = line["_aws"]["CloudWatchMetrics"][0]["Metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["Name"].as_str().unwrap())
            .collect();
        names.sort();
        names
    }

    #[tokio::test]
    async fn each_invocation_writes_one_emf_line_with_its_outcome() {
        let collector = metrics::emf().expect("the first recorder of this process");
        // Installing again is harmless: the same recorder.
        assert!(std::ptr::eq(collector, metrics::emf().unwrap()));

        let shares = from_result(Err(Error::conflict(
            "insufficient_shares",
            "class CS has 10 shares left, 20 were requested",
        )));
        let lines = lines_of("certificates-issue", "req-1", shares).await;
        assert_eq!(lines.len(), 1, "{lines:?}");
        let line = &lines[0];
        let directive = &line["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], "strata");
        let mut dimensions: Vec<&str> = directive["Dimensions"][0]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_str().unwrap())
            .collect();
        dimensions.sort();
        assert_eq!(dimensions, ["code", "operation", "status"]);
        assert_eq!(
            metric_names(line),
            [
                "strata_conflicts_total",
                "strata_insufficient_shares_total",
                "strata_request_duration_seconds",
                "strata_requests_total",
            ]
        );
        let duration = directive["Metrics"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["Name"] == metrics::DURATION)
            .unwrap();
        assert_eq!(duration["Unit"], "Seconds");
        assert_eq!(
            (
                &line["operation"],
                &line["status"],
                &line["code"],
                &line["requestId"]
            ),
            (
                &json!("certificates-issue"),
                &json!("409"),
                &json!("insufficient_shares"),
                &json!("req-1")
            )
        );
        assert_eq!(line["strata_requests_total"], 1);
        assert_eq!(line["strata_conflicts_total"], 1);
        assert_eq!(line["strata_insufficient_shares_total"], 1);
        let seconds = line["strata_request_duration_seconds"].as_array().unwrap();
        assert!(
            seconds.len() == 1 && seconds[0].as_f64().unwrap() >= 0.0,
            "{seconds:?}"
        );

        // The next invocation reports only itself: counters start again from zero after each flush.
        let lines = lines_of(
            "certificates-issue",
            "req-2",
            json(StatusCode::CREATED, &json!({})),
        )
        .await;
        assert_eq!(lines.len(), 1, "{lines:?}");
        let line = &lines[0];
        assert_eq!(
            metric_names(line),
            ["strata_request_duration_seconds", "strata_requests_total"]
        );
        assert_eq!(
            (
                &line["status"],
                &line["code"],
                &line["requestId"],
                &line["strata_requests_total"]
            ),
            (&json!("201"), &json!("none"), &json!("req-2"), &json!(1))
        );

        // A replayed response has no code attached: it is read from the stored body.
        let mut replay = error(&Error::conflict(
            "no_free_slot",
            "widget \"a\" has no free RJ45 slot",
        ));
        replay.extensions_mut().clear();
        let lines = lines_of("widgets-associate", "req-3", replay).await;
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert_eq!(lines[0]["code"], "no_free_slot");
        assert_eq!(lines[0]["strata_slot_refusals_total"], 1);
        assert_eq!(lines[0]["strata_conflicts_total"], 1);

        // A throttled answer.
        let throttled = error(&Error::new(
            strata_core::Kind::Throttled,
            "rate_limited",
            "slow down",
        ));
        let lines = lines_of("kv-get", "req-4", throttled).await;
        assert_eq!(
            metric_names(&lines[0]),
            [
                "strata_request_duration_seconds",
                "strata_requests_total",
                "strata_throttles_total",
            ]
        );
        assert_eq!(
            (&lines[0]["status"], &lines[0]["operation"]),
            (&json!("429"), &json!("kv-get"))
        );
    }
}
