//! `GET /metrics` and its Prometheus recorder, and the counting of answers no handler gave (refusals
//! before any handler runs), under the operation the request was for.

use super::router::axum_path;
use http::Method;
use std::collections::HashMap;

/// Which operation a request is for, by its method and path, for the answers no handler gave: the routes of
/// [`crate::routes::all`] matched as axum matches them (so it works outside the router too).
pub(super) struct Operations(matchit::Router<Vec<Operation>>);

/// One route's method, its operation, and whether it reads a JSON body.
struct Operation {
    method: Method,
    function: &'static str,
    reads_json: bool,
}

impl Operations {
    pub(super) fn new() -> Self {
        let mut by_path: HashMap<String, Vec<Operation>> = HashMap::new();
        for route in crate::routes::all() {
            let method =
                Method::from_bytes(route.method.as_bytes()).expect("route methods are valid");
            by_path
                .entry(axum_path(route.path))
                .or_default()
                .push(Operation {
                    method,
                    function: route.function,
                    reads_json: crate::browser::reads_json(&route),
                });
        }
        let mut router = matchit::Router::new();
        for (path, methods) in by_path {
            router
                .insert(path, methods)
                .expect("the routes are a valid, unambiguous table");
        }
        Self(router)
    }

    /// The operation a request is for, as the metrics count it: its route's, or the fallback's (no route
    /// matched, or the route does not take the method); `None` for a `GET` of the local extras, which are
    /// not operations (their answers are never counted).
    pub(super) fn of<B>(&self, req: &http::Request<B>) -> Option<&'static str> {
        let (method, path) = (req.method(), req.uri().path());
        match self.find(req) {
            Some(operation) => Some(operation.function),
            None if method == Method::GET && LOCAL_EXTRAS.contains(&path) => None,
            None => Some(crate::routes::FALLBACK.function),
        }
    }

    /// Whether the operation a request is for reads a JSON body.
    pub(super) fn reads_json<B>(&self, req: &http::Request<B>) -> bool {
        self.find(req).is_some_and(|operation| operation.reads_json)
    }

    fn find<B>(&self, req: &http::Request<B>) -> Option<&Operation> {
        let found = self.0.at(req.uri().path()).ok()?;
        found.value.iter().find(|o| o.method == req.method())
    }
}

impl std::fmt::Debug for Operations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Operations").finish_non_exhaustive()
    }
}

/// Counts an answer given before any handler ran (which counts its own), under its error code.
pub(super) fn count_refusal(
    operation: Option<&'static str>,
    started: std::time::Instant,
    response: &axum::response::Response,
) {
    if let Some(operation) = operation {
        let code = response
            .extensions()
            .get::<strata_http::metrics::ErrorCode>()
            .map_or_else(|| "none".into(), |code| code.label());
        strata_http::metrics::record(operation, started, response.status().as_u16(), code);
    }
}

/// The local server's routes that are not operations of the API.
const LOCAL_EXTRAS: [&str; 4] = [
    "/kv/ws",
    "/openapi.json",
    "/metrics",
    crate::transfer::EXPORT_PATH,
];

/// `GET /metrics` (Prometheus text). Local only, like `/kv/ws`: on AWS the same metrics are EMF lines in
/// CloudWatch. Not part of [`super::router()`], so that tests serving the router in-process install no recorder.
///
/// Next to the request metrics, the process's own: `process_cpu_seconds_total` (user and system time of
/// every thread, in seconds to 10 ms; a gauge, as the metrics crate's counters are whole numbers), resident
/// memory, threads, open descriptors (`metrics-process`, read from `/proc` on each scrape). `strata bench`
/// reads the CPU time before and after a run to report CPU per operation.
pub fn with_metrics(router: axum::Router) -> axum::Router {
    let prometheus = prometheus();
    let process = metrics_process::Collector::default();
    process.describe();
    router.route(
        "/metrics",
        axum::routing::get(move || async move {
            process.collect();
            (
                [(
                    http::header::CONTENT_TYPE,
                    "text/plain; version=0.0.4; charset=utf-8",
                )],
                prometheus.render(),
            )
        }),
    )
}

/// The Prometheus recorder of this process, installed as the global recorder on first use (later calls get
/// the same handle, so starting two servers in one process cannot fail). If another recorder was installed
/// first, the handle renders nothing and a warning says why.
pub fn prometheus() -> metrics_exporter_prometheus::PrometheusHandle {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    static HANDLE: std::sync::OnceLock<metrics_exporter_prometheus::PrometheusHandle> =
        std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                // Histograms with buckets (not the default summaries): cheap to record, aggregatable.
                .set_buckets_for_metric(
                    Matcher::Full(strata_http::metrics::DURATION.to_owned()),
                    &[
                        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                        0.25, 0.5, 1.0, 2.5, 5.0,
                    ],
                )
                .expect("buckets are given")
                .build_recorder();
            let handle = recorder.handle();
            match ::metrics::set_global_recorder(recorder) {
                Ok(()) => {
                    strata_http::metrics::recorder_installed();
                    strata_http::metrics::describe();
                }
                Err(_) => tracing::warn!(
                    "GET /metrics is empty: another metrics recorder was installed first"
                ),
            }
            // Drains recorded histogram values into their buckets even when nobody scrapes.
            let upkeep = handle.clone();
            tokio::spawn(async move {
                let mut every = tokio::time::interval(std::time::Duration::from_secs(5));
                loop {
                    every.tick().await;
                    upkeep.run_upkeep();
                }
            });
            handle
        })
        .clone()
}
