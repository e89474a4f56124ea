//! Request ids and request logging around everything the local server serves.

use tower_http::classify::{ServerErrorsAsFailures, SharedClassifier};
use tower_http::request_id::{
    PropagateRequestId, PropagateRequestIdLayer, SetRequestId, SetRequestIdLayer,
};
use tower_http::trace::{DefaultOnResponse, MakeSpan, Trace, TraceLayer};

/// What [`super::app`] serves: the router inside request ids and request logging.
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
