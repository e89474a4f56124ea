//! The HTTP side of `strata serve`.

use axum::extract::RawPathParams;
use axum::extract::rejection::RawPathParamsRejection;
use axum::routing::{MethodFilter, on};
use http::Method;
use lambda_http::RequestExt;
use lambda_http::aws_lambda_events::query_map::QueryMap;
use std::collections::HashMap;
use std::sync::Arc;
use strata_core::{Error, Stores};
use strata_http::MAX_BODY_BYTES;
use strata_http::request::body_too_large;
use strata_http::response::error;
use strata_http::route::Route;
use tower_http::classify::{ServerErrorsAsFailures, SharedClassifier};
use tower_http::request_id::{
    PropagateRequestId, PropagateRequestIdLayer, SetRequestId, SetRequestIdLayer,
};
use tower_http::trace::{DefaultOnResponse, MakeSpan, Trace, TraceLayer};

/// The router: every route of [`crate::routes::all`], plus the fallback for unknown paths and methods.
pub fn router(stores: Arc<Stores>) -> axum::Router {
    let mut router = axum::Router::new();
    for route in crate::routes::all() {
        let method = Method::from_bytes(route.method.as_bytes()).expect("route methods are valid");
        let filter = MethodFilter::try_from(method).expect("route methods are standard");
        let stores = stores.clone();
        router = router.route(
            &axum_path(route.path),
            on(
                filter,
                move |params: Result<RawPathParams, RawPathParamsRejection>,
                      req: axum::extract::Request| {
                    call(stores, route, Some(params), req)
                },
            ),
        );
    }
    // The local stand-in for the API Gateway WebSocket API (not a route of the HTTP API).
    let ws_stores = stores.clone();
    router = router.route(
        "/kv/ws",
        axum::routing::get(
            move |token: Option<axum::Extension<crate::auth::AuthToken>>,
                  limits: Option<axum::Extension<crate::line::WsLimits>>,
                  client: Option<
                axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>,
            >,
                  upgrade| {
                crate::line::websocket(
                    ws_stores,
                    token.map(|t| t.0),
                    limits.map(|l| l.0),
                    client.map(|c| c.0.0.ip()),
                    upgrade,
                )
            },
        ),
    );
    // The API's OpenAPI document (local server only; on AWS it is a file of the repository).
    router = router.route("/openapi.json", axum::routing::get(crate::openapi::serve));
    let fallback = {
        let stores = stores.clone();
        move |req: axum::extract::Request| call(stores, crate::routes::FALLBACK, None, req)
    };
    // API Gateway sends a wrong method on a known path to `$default` as well; answer the same way.
    router
        .fallback(fallback.clone())
        .method_not_allowed_fallback(fallback)
}

/// `--rate-limit N/SECONDS`: at most N requests per SECONDS per client address and route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub requests: u32,
    pub per: std::time::Duration,
}

impl RateLimit {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let bad = || format!("expected REQUESTS/SECONDS such as 1000/5, not {raw:?}");
        let (requests, seconds) = raw.split_once('/').ok_or_else(bad)?;
        let requests: u32 = requests.trim().parse().map_err(|_| bad())?;
        let seconds: f64 = seconds.trim().parse().map_err(|_| bad())?;
        if requests == 0 || !(seconds > 0.0 && seconds.is_finite()) {
            return Err(bad());
        }
        Ok(Self {
            requests,
            per: std::time::Duration::from_secs_f64(seconds),
        })
    }
}

/// Rate limiting by client address and route (tower_governor's GCRA): a burst of N, refilled evenly over
/// SECONDS. Over the limit: `429` in the API's error JSON with `retry-after`, and the request never reaches
/// its handler, so nothing is counted or changed. Also returns the budget that each message of a local
/// WebSocket takes from, as a request to `GET /kv/ws` does.
pub fn rate_limited(
    router: axum::Router,
    limit: RateLimit,
) -> (axum::Router, crate::line::MessageBudget) {
    use tower_governor::GovernorLayer;
    use tower_governor::governor::GovernorConfigBuilder;
    let config = GovernorConfigBuilder::default()
        .key_extractor(ClientAndRoute)
        .period(limit.per / limit.requests)
        .burst_size(limit.requests)
        .finish()
        .expect("a positive period and burst");
    trim_every(
        config.limiter(),
        limit.per.clamp(TRIM_EVERY_MIN, TRIM_EVERY_MAX),
        // `retain_recent`, as tower_governor advises, then the memory back.
        |limiter| {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        },
    );
    let limiter = config.limiter().clone();
    let budget: crate::line::MessageBudget = Arc::new(move |client| {
        limiter
            .check_key(&(client, Method::GET, "/kv/ws".to_owned()))
            .map_err(|not_until| {
                use governor::clock::{Clock, DefaultClock};
                not_until
                    .wait_time_from(DefaultClock::default().now())
                    .as_secs()
                    .max(1)
            })
    });
    let layer = GovernorLayer::new(Arc::new(config)).error_handler(|e| {
        let retry_after = match e {
            tower_governor::GovernorError::TooManyRequests { wait_time, .. } => wait_time.max(1),
            _ => 1,
        };
        to_axum(error(
            &Error::new(
                strata_core::Kind::Throttled,
                "rate_limited",
                "too many requests; slow down",
            )
            .retry_after(retry_after),
        ))
    });
    // Outside the limiter, so it sees the 429s the limiter answers without calling a handler (which
    // records its own answers).
    let operations = Arc::new(operations());
    let router = router
        .route_layer(layer)
        .route_layer(axum::middleware::from_fn(move |req, next| {
            count_throttled(operations.clone(), req, next)
        }));
    (router, budget)
}

/// The limiter keeps a state per client address and route it has seen; a client quiet for one period of
/// the limit is back to a full burst, and its state says nothing a fresh one would not. Those are dropped
/// every period (within these bounds), so the map holds the clients of about the last period, not every
/// address that ever called.
const TRIM_EVERY_MIN: std::time::Duration = std::time::Duration::from_secs(1);
const TRIM_EVERY_MAX: std::time::Duration = std::time::Duration::from_secs(60);

/// Runs `trim` on `limiter` every `every` on a thread of its own, until the limiter is dropped with its
/// router.
fn trim_every<T: Send + Sync + 'static>(
    limiter: &Arc<T>,
    every: std::time::Duration,
    trim: fn(&T),
) {
    let limiter = Arc::downgrade(limiter);
    let spawned = std::thread::Builder::new()
        .name("strata-rate-trim".into())
        .spawn(move || {
            loop {
                std::thread::sleep(every);
                let Some(limiter) = limiter.upgrade() else {
                    return;
                };
                trim(&limiter);
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the rate limiter's trimmer");
    }
}

/// Route template (axum syntax) and method → operation, for the answers no handler gave.
type Operations = HashMap<String, Vec<(Method, &'static str)>>;

fn operations() -> Operations {
    let mut operations = Operations::new();
    for route in crate::routes::all() {
        let method = Method::from_bytes(route.method.as_bytes()).expect("route methods are valid");
        operations
            .entry(axum_path(route.path))
            .or_default()
            .push((method, route.function));
    }
    operations
}

async fn count_throttled(
    operations: Arc<Operations>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let started = std::time::Instant::now();
    let operation = operation_of(&operations, &req);
    let response = next.run(req).await;
    if response
        .extensions()
        .get::<strata_http::metrics::ErrorCode>()
        .is_some_and(|code| code.0 == "rate_limited")
    {
        count_refusal(operation, started, &response);
    }
    response
}

/// The operation a request is for, as the metrics count it: its route's, or the fallback's (no route
/// matched, or the route does not take the method); `None` for a `GET` of the local extras, which are not
/// operations (their answers are never counted).
fn operation_of(operations: &Operations, req: &axum::extract::Request) -> Option<&'static str> {
    let Some(route) = req.extensions().get::<axum::extract::MatchedPath>() else {
        return Some(crate::routes::FALLBACK.function);
    };
    let route = route.as_str();
    match operations
        .get(route)
        .and_then(|methods| methods.iter().find(|(m, _)| m == req.method()))
    {
        Some((_, operation)) => Some(*operation),
        None if req.method() == Method::GET && LOCAL_EXTRAS.contains(&route) => None,
        None => Some(crate::routes::FALLBACK.function),
    }
}

/// Counts an answer given before any handler ran (which counts its own), under its error code.
fn count_refusal(
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

/// What `strata serve` serves: the API's [`router`] and `GET /admin/export`, the rate limiter if one is
/// configured, `GET /metrics`,
/// the bearer-token check if a token is configured, and request ids and logging around everything.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub rate_limit: Option<RateLimit>,
    pub auth_token: Option<crate::auth::AuthToken>,
    /// Serves `GET /admin/export` from this store when set.
    pub export: Option<crate::transfer::ExportPort>,
    /// The addresses and names the server answers to; with them, what a web page sends is refused
    /// ([`crate::browser`]). `strata serve` always sets it.
    pub allowed: Option<crate::browser::Allowed>,
    /// The local WebSocket's cap and idle timeout (its messages count against `rate_limit`).
    pub websockets: Option<crate::line::WsLimits>,
}

/// The whole local server. The token check is outside the limiter and around `/metrics` too, so a request
/// without the token reaches nothing (not even the limiter's budget); request ids and logging are outside
/// everything, so a `401` has an `x-request-id` and a log line like any answer.
pub fn app(stores: Arc<Stores>, options: &Options) -> App {
    let mut router = router(stores);
    let mut websockets = options.websockets.clone();
    // Before the limiter: an export is the heaviest request there is.
    if let Some(export) = &options.export {
        router = crate::transfer::with_export(router, export);
    }
    if let Some(limit) = options.rate_limit {
        let budget;
        (router, budget) = rate_limited(router, limit);
        if let Some(websockets) = &mut websockets {
            websockets.budget = Some(budget);
        }
    }
    if let Some(websockets) = websockets {
        router = router.layer(axum::Extension(websockets));
    }
    router = with_metrics(router);
    if options.allowed.is_some() {
        router = as_on_aws(router);
    }
    if let Some(token) = &options.auth_token {
        router = authenticated(router, token.clone());
    }
    if let Some(allowed) = &options.allowed {
        router = guarded(router, allowed.clone());
    }
    observed(router)
}

/// Refuses a request a web page sent ([`crate::browser`]): a foreign `Host` or `Origin`. Outside the
/// token check: a page is refused whether or not the server has a token. Apply it after every route is
/// added.
pub fn guarded(router: axum::Router, allowed: crate::browser::Allowed) -> axum::Router {
    let allowed = Arc::new(allowed);
    let operations = Arc::new(operations());
    router.layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| {
            let (allowed, operations) = (allowed.clone(), operations.clone());
            async move {
                let started = std::time::Instant::now();
                let headers = req.headers();
                if let Err(e) = allowed
                    .check_host(headers)
                    .and_then(|()| allowed.check_origin(headers))
                {
                    tracing::warn!(code = %e.code, "refused a request a web page sent: {}", e.message);
                    let response = to_axum(error(&e));
                    count_refusal(operation_of(&operations, &req), started, &response);
                    return response;
                }
                next.run(req).await
            }
        },
    ))
}

/// Inside the token check, what API Gateway does before a function runs: no `HEAD` (a `GET` route does
/// not take it: `404 route_not_found`, where axum would run the `GET` handler), and, where it matters
/// on a local server that a browser reaches, only JSON on operations that read JSON (`415`; a page can
/// send `text/plain` or a form to another site without asking it first, but not JSON). Apply it after
/// every route is added.
pub fn as_on_aws(router: axum::Router) -> axum::Router {
    let json = crate::browser::json_operations();
    let operations = Arc::new(operations());
    router.layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| {
            let started = std::time::Instant::now();
            let (json, operations) = (json.clone(), operations.clone());
            async move {
                match only_json_no_head(&json, &req) {
                    Some(refused) => {
                        count_refusal(operation_of(&operations, &req), started, &refused);
                        refused
                    }
                    None => next.run(req).await,
                }
            }
        },
    ))
}

/// The answer API Gateway would give before any function runs, if any.
fn only_json_no_head(
    json: &crate::browser::JsonOperations,
    req: &axum::extract::Request,
) -> Option<axum::response::Response> {
    let headers = req.headers();
    if req.method() == Method::HEAD {
        return Some(to_axum(error(&strata_api::system::route_not_found(
            req.method(),
            req.uri().path(),
        ))));
    }
    let reads_json = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .is_some_and(|path| json.contains(path.as_str(), req.method()));
    if reads_json
        && !axum::body::HttpBody::is_end_stream(req.body())
        && !crate::browser::is_json(headers)
    {
        return Some(to_axum(error(&crate::browser::unsupported_media_type(
            headers,
        ))));
    }
    None
}

/// `--auth-token`: every request, on every route (the fallback too), needs `Authorization: Bearer TOKEN`;
/// without it `401 unauthorized` and nothing runs. Apply it after every route is added (a route added
/// later is not covered). Refusals are counted in the metrics under the operation the request was for,
/// or the fallback's; the local extras (`/metrics`, `/openapi.json`, `/kv/ws`) are not operations and
/// are not counted, as their answers never are.
pub fn authenticated(router: axum::Router, token: crate::auth::AuthToken) -> axum::Router {
    let operations = Arc::new(operations());
    router.layer(axum::middleware::from_fn(move |req, next| {
        check_token(token.clone(), operations.clone(), req, next)
    }))
}

/// The local server's routes that are not operations of the API.
const LOCAL_EXTRAS: [&str; 4] = [
    "/kv/ws",
    "/openapi.json",
    "/metrics",
    crate::transfer::EXPORT_PATH,
];

async fn check_token(
    token: crate::auth::AuthToken,
    operations: Arc<Operations>,
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let started = std::time::Instant::now();
    // A request without the header is no guess: refused at once, nothing recorded.
    let verdict = match crate::auth::AuthToken::bearer(req.headers()) {
        None => crate::auth::Verdict::Wrong,
        Some(candidate) => {
            let client = req
                .extensions()
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|info| info.0.ip());
            token.verify(client, "http", candidate).await
        }
    };
    if verdict == crate::auth::Verdict::Valid {
        // For `/kv/ws`, whose `AUTH` command checks the same token.
        req.extensions_mut().insert(token);
        return next.run(req).await;
    }
    let response = match verdict {
        crate::auth::Verdict::Throttled(retry_after) => {
            to_axum(error(&crate::auth::throttled(retry_after)))
        }
        _ => crate::auth::unauthorized(crate::auth::refusal(req.headers())),
    };
    let code = match verdict {
        crate::auth::Verdict::Throttled(_) => crate::auth::THROTTLED_CODE,
        _ => crate::auth::CODE,
    };
    if let Some(operation) = operation_of(&operations, &req) {
        strata_http::metrics::record(operation, started, response.status().as_u16(), code.into());
    }
    response
}

/// `GET /metrics` (Prometheus text). Local only, like `/kv/ws`: on AWS the same metrics are EMF lines in
/// CloudWatch. Not part of [`router`], so that tests serving the router in-process install no recorder.
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

/// What [`app`] serves: the router inside request ids and request logging.
pub type App = SetRequestId<
    Trace<
        PropagateRequestId<axum::Router>,
        SharedClassifier<ServerErrorsAsFailures>,
        RequestSpan,
        (),
        DefaultOnResponse,
    >,
    NextRequestId,
>;

/// Request ids and request logging: what `strata serve` adds around everything it serves.
///
/// Around the router as a whole, not with `Router::layer`: that wraps every route in each layer, each
/// behind a boxed, cloned service and a boxed future per request; here the three are one concrete
/// service, built once.
pub fn observed(router: axum::Router) -> App {
    let x_request_id = http::HeaderName::from_static("x-request-id");
    tower::ServiceBuilder::new()
        // Outermost first: the id is set (or kept, if the client sent one), then the request's span
        // carries it, so every line logged while serving it names it; the response echoes it.
        .layer(SetRequestIdLayer::new(x_request_id.clone(), NextRequestId))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(RequestSpan)
                // One line per request at debug (`RUST_LOG=tower_http=debug`); 5xx are logged as errors.
                .on_request(())
                .on_response(DefaultOnResponse::new().level(tracing::Level::DEBUG)),
        )
        .layer(PropagateRequestIdLayer::new(x_request_id))
        .service(router)
}

/// The span of one request.
#[derive(Debug, Clone, Copy)]
pub struct RequestSpan;

impl<B> MakeSpan<B> for RequestSpan {
    fn make_span(&mut self, req: &http::Request<B>) -> tracing::Span {
        let id = req
            .headers()
            .get("x-request-id")
            .and_then(|id| id.to_str().ok())
            .unwrap_or("");
        // At error level so that it is on whenever anything is logged: a warning or an error met while
        // serving a request always names the request.
        tracing::error_span!(
            "request",
            request_id = %id,
            method = %req.method(),
            path = %req.uri().path()
        )
    }
}

/// Request ids `<process>-<sequence>`: unique across restarts (the process part is random), and without
/// a `getrandom` call per request as a UUID v4 would make.
#[derive(Debug, Clone, Copy)]
pub struct NextRequestId;

impl tower_http::request_id::MakeRequestId for NextRequestId {
    fn make_request_id<B>(
        &mut self,
        _req: &http::Request<B>,
    ) -> Option<tower_http::request_id::RequestId> {
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
        Some(tower_http::request_id::RequestId::new(
            http::HeaderValue::from_bytes(&id[..len]).expect("hex digits and a dash"),
        ))
    }
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
            match metrics::set_global_recorder(recorder) {
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

/// The rate-limiting key: the client's address and the route (method and path template) it called.
#[derive(Debug, Clone, Copy)]
struct ClientAndRoute;

impl tower_governor::key_extractor::KeyExtractor for ClientAndRoute {
    type Key = (std::net::IpAddr, Method, String);

    fn extract<T>(
        &self,
        req: &http::Request<T>,
    ) -> Result<Self::Key, tower_governor::GovernorError> {
        let client = req
            .extensions()
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|info| info.0.ip())
            .ok_or(tower_governor::GovernorError::UnableToExtractKey)?;
        let route = req
            .extensions()
            .get::<axum::extract::MatchedPath>()
            .map_or_else(|| req.uri().path().to_owned(), |m| m.as_str().to_owned());
        Ok((client, req.method().clone(), route))
    }
}

/// API Gateway's `{name+}` (rest of the path) is axum's `{*name}`.
pub fn axum_path(path: &str) -> String {
    path.split('/')
        .map(
            |segment| match segment.strip_prefix('{').and_then(|s| s.strip_suffix("+}")) {
                Some(name) => format!("{{*{name}}}"),
                None => segment.to_owned(),
            },
        )
        .collect::<Vec<_>>()
        .join("/")
}

async fn call(
    stores: Arc<Stores>,
    route: Route,
    params: Option<Result<RawPathParams, RawPathParamsRejection>>,
    req: axum::extract::Request,
) -> axum::response::Response {
    // axum refuses a path whose parameters are not valid UTF-8 once decoded; answer in the contract's JSON.
    let params = match params.transpose() {
        Ok(params) => params,
        Err(_) => return to_axum(error(&invalid_path())),
    };
    let started = std::time::Instant::now();
    let response = match to_lambda(params, req).await {
        Ok(req) => {
            strata_core::deadline::within(
                strata_http::REQUEST_BUDGET,
                (route.handler)(&stores, req),
            )
            .await
        }
        Err(e) if e.code == REQUEST_TIMEOUT => {
            let mut response = error(&e);
            *response.status_mut() = http::StatusCode::REQUEST_TIMEOUT;
            response
        }
        Err(e) => error(&e),
    };
    strata_http::response::log_error(&response);
    strata_http::metrics::observe(route.function, started, &response);
    to_axum(response)
}

/// The request as API Gateway (HTTP API, payload 2.0) would hand it to the Lambda: decoded path
/// parameters, query parameters, the whole body.
async fn to_lambda(
    params: Option<RawPathParams>,
    req: axum::extract::Request,
) -> Result<lambda_http::Request, Error> {
    let mut path = HashMap::new();
    for (name, raw) in params.iter().flat_map(|p| p.iter()) {
        let decoded = percent_encoding::percent_decode_str(raw)
            .decode_utf8()
            .map_err(|_| {
                Error::invalid(
                    "invalid_path",
                    format!("path parameter `{name}` is not percent-encoded UTF-8"),
                )
            })?;
        path.insert(name.to_owned(), decoded.into_owned());
    }
    let query = req.uri().query().map(query_map);
    let (parts, body) = req.into_parts();
    // A request that says it has no body (a GET without `content-length`, `content-length: 0`) has nothing
    // to wait for: no timer, no collecting.
    let bytes = if axum::body::HttpBody::is_end_stream(&body) {
        bytes::Bytes::new()
    } else {
        // One byte over the limit is enough to know the body is too large. A body that does not arrive in
        // time would hold its connection (and a connection permit) as long as the client likes.
        let timeout = crate::http_listener::read_timeout();
        tokio::time::timeout(timeout, axum::body::to_bytes(body, MAX_BODY_BYTES + 1))
            .await
            .map_err(|_| body_timeout(timeout))?
            .map_err(|_| body_too_large())?
    };
    let body = if bytes.is_empty() {
        lambda_http::Body::Empty
    } else {
        // No copy when the body arrived as one buffer of its own.
        lambda_http::Body::Binary(Vec::from(bytes))
    };
    let mut req = http::Request::from_parts(parts, body);
    // Each is an extension, boxed; a handler reads an absent one as empty (`*_ref()` gives `None`).
    if !path.is_empty() {
        req = req.with_path_parameters(path);
    }
    if let Some(query) = query {
        req = req.with_query_string_parameters(query);
    }
    Ok(req)
}

/// `408 request_timeout` (the code is what clients match; the kind only picks the status, below).
fn body_timeout(timeout: std::time::Duration) -> Error {
    Error::invalid(
        REQUEST_TIMEOUT,
        format!(
            "the request body did not arrive within {} s",
            timeout.as_secs()
        ),
    )
}

const REQUEST_TIMEOUT: &str = "request_timeout";

fn invalid_path() -> Error {
    Error::invalid("invalid_path", "the path is not percent-encoded UTF-8")
}

fn query_map(query: &str) -> QueryMap {
    let mut map: HashMap<String, Vec<String>> = HashMap::new();
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        map.entry(name.into_owned())
            .or_default()
            .push(value.into_owned());
    }
    map.into()
}

pub(crate) fn to_axum(response: strata_http::Response) -> axum::response::Response {
    response.map(|body| match body {
        lambda_http::Body::Empty => axum::body::Body::empty(),
        lambda_http::Body::Text(text) => axum::body::Body::from(text),
        lambda_http::Body::Binary(bytes) => axum::body::Body::from(bytes),
        // `Body` is non-exhaustive upstream; no handler produces anything else.
        _ => axum::body::Body::empty(),
    })
}

#[cfg(test)]
mod tests {
    use super::{RateLimit, axum_path};

    /// The limiter's map holds the clients of about the last period, not every address that ever called.
    #[test]
    fn the_rate_limiters_map_is_trimmed_of_quiet_clients() {
        use tower_governor::governor::GovernorConfigBuilder;
        let config = GovernorConfigBuilder::default()
            .key_extractor(super::ClientAndRoute)
            .period(std::time::Duration::from_millis(10))
            .burst_size(1)
            .finish()
            .unwrap();
        let limiter = config.limiter();
        for n in 0..1000u32 {
            let client = std::net::IpAddr::from(n.to_be_bytes());
            assert!(
                limiter
                    .check_key(&(client, http::Method::GET, "/kv/keys/{key}".into()))
                    .is_ok()
            );
        }
        assert_eq!(limiter.len(), 1000);
        super::trim_every(limiter, std::time::Duration::from_millis(50), |limiter| {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        });
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !limiter.is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "the map was never trimmed: {} left",
                limiter.len()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    #[test]
    fn rate_limits_parse() {
        let limit = RateLimit::parse("50/5").unwrap();
        assert_eq!((limit.requests, limit.per.as_secs()), (50, 5));
        for bad in ["", "50", "0/5", "50/0", "x/5", "50/-1"] {
            assert!(RateLimit::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn greedy_parameters_become_wildcards() {
        assert_eq!(axum_path("/kv/keys/{key+}"), "/kv/keys/{*key}");
        assert_eq!(
            axum_path("/widgets/{serial}/associations"),
            "/widgets/{serial}/associations"
        );
    }
}
