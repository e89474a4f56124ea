//! What answering HTTP costs on this machine before strata does anything: the floor under `GET /health`.
//!
//! `infra/bench/report` runs this next to `strata serve` and loads it with the same `strata bench health`,
//! so its CPU per request is measured in the same run as strata's. Each rung adds one part of strata's
//! request path, in the order a request meets them:
//!
//! - `hyper`: strata's HTTP listener (hyper, the connection cap and timeouts) and a service that answers
//!   every request with the `/health` body. What the kernel and hyper cost.
//! - `axum`: the same listener and an axum router with the one route: what routing adds.
//! - `observed`: that router inside strata's request ids and request logging
//!   ([`strata::server::observed`]), with the log subscriber `strata serve` installs
//!   ([`strata::cli::init_logging`]).
//!
//! `strata serve`'s `/health` adds the rest: the checks in front of the router, the lambda_http request the
//! handler takes, the deadline, the handler, the metrics.
//!
//! ```sh
//! cargo run --release -p strata --example http_floor -- hyper 127.0.0.1:3001
//! ```

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const BODY: &str = r#"{"status":"ok","store":"embedded"}"#;

fn health() -> http::Response<axum::body::Body> {
    http::Response::builder()
        .header(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        )
        .body(axum::body::Body::from(BODY))
        .expect("a static response")
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(rung), Some(address)) = (args.next(), args.next()) else {
        return Err("usage: http_floor hyper|axum|observed ADDRESS".into());
    };
    strata::cli::init_logging(strata::cli::LogFormat::Text, "info");
    let listener = tokio::net::TcpListener::bind(&address).await?;
    let limits = strata::http_listener::Limits::default();
    let stop = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let router = || axum::Router::new().route("/health", axum::routing::get(|| async { health() }));
    match rung.as_str() {
        "hyper" => {
            let service = tower::service_fn(|_req: http::Request<axum::body::Body>| async {
                Ok::<_, std::convert::Infallible>(health())
            });
            strata::http_listener::serve(listener, service, limits, stop).await;
        }
        "axum" => strata::http_listener::serve(listener, router(), limits, stop).await,
        "observed" => {
            let app = strata::server::observed(router());
            strata::http_listener::serve(listener, app, limits, stop).await;
        }
        other => return Err(format!("no rung {other:?}: hyper, axum or observed").into()),
    }
    Ok(())
}
