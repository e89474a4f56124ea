//! The HTTP listener of `strata serve`: hyper's HTTP/1 server with the bounds `axum::serve` does not offer.
//!
//! - At most `max_connections` connections at once ([`crate::slots`]). At the cap, the keep-alive
//!   connection idle the longest (no request in flight) is closed to make room for the new one; only while
//!   every connection has a request in flight does a new one wait (after it, new connections wait in the
//!   kernel's accept queue, and may time out there), while every connection already in is served as before.
//! - A client has `read_timeout` to send a request's headers, counted from when the connection opens or
//!   its previous answer was sent: a slow client (slowloris) or a keep-alive connection left idle is
//!   closed after it, so neither can hold a connection for long.
//! - The body of a request must arrive within `read_timeout` too (checked where the body is read,
//!   [`crate::server`]): `408 request_timeout`.
//! - On shutdown, connections finish the request in flight and close; after [`DRAIN`] the rest are
//!   dropped.

use crate::slots::{Slots, Use};
use axum::extract::ConnectInfo;
use futures_util::FutureExt;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tower::ServiceExt;

/// How long a shutdown waits for open connections to finish before dropping them.
pub const DRAIN: Duration = Duration::from_secs(10);

/// The listener's bounds.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub read_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: strata_core::defaults::HTTP_MAX_CONNECTIONS,
            read_timeout: strata_core::defaults::HTTP_READ_TIMEOUT,
        }
    }
}

/// The read timeout of this process's listener, for the body read in [`crate::server`] (one listener per
/// process; tests serving the router in-process get the default).
static READ_TIMEOUT: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();

/// How long a request's body may take to arrive.
pub fn read_timeout() -> Duration {
    READ_TIMEOUT
        .get()
        .copied()
        .unwrap_or(strata_core::defaults::HTTP_READ_TIMEOUT)
}

/// Serves `router` on `listener` within `limits` until `shutdown` resolves. Every request carries its
/// client's address as `ConnectInfo<SocketAddr>` (for the rate limiter), as with axum's own server.
pub async fn serve<S, B>(
    listener: TcpListener,
    router: S,
    limits: Limits,
    shutdown: impl std::future::Future<Output = ()>,
) where
    S: tower::Service<
            http::Request<axum::body::Body>,
            Response = http::Response<B>,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let _ = READ_TIMEOUT.set(limits.read_timeout);
    let slots = Slots::new(limits.max_connections);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.read_timeout)
        .keep_alive(true);
    // Each connection's task holds a sender: once all are gone, every connection is closed. The watch
    // tells them to finish the request in flight and close.
    let (open, mut all_closed) = tokio::sync::mpsc::channel::<()>(1);
    let (stop, stopping) = tokio::sync::watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let (stream, client) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little rather than spin.
                    tracing::warn!(error = %e, "accepting an HTTP connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let slot = tokio::select! {
            _ = &mut shutdown => break,
            slot = slots.take_waiting() => Arc::new(slot),
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let busy = slot.clone();
        let service =
            hyper::service::service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ConnectInfo(client));
                busy.set(Use::Busy);
                let busy = busy.clone();
                router
                    .clone()
                    .oneshot(req.map(axum::body::Body::new))
                    .map(move |answered| {
                        // Its body may still be on its way; the connection takes no request meanwhile.
                        busy.set(Use::Idle);
                        answered
                    })
            });
        let mut connection = http
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        let (open, mut stopping) = (open.clone(), stopping.clone());
        slot.set(Use::Idle);
        tokio::spawn(async move {
            let ended = tokio::select! {
                ended = &mut connection => Some(ended),
                _ = stopping.wait_for(|stop| *stop) => None,
                () = slot.give_way() => None,
            };
            let ended = match ended {
                Some(ended) => ended,
                None => {
                    std::pin::Pin::new(&mut connection).graceful_shutdown();
                    connection.await
                }
            };
            // Header timeouts, resets and the like end a connection; nothing to do but log at debug.
            if let Err(e) = ended {
                tracing::debug!(error = %e, "HTTP connection ended with an error");
            }
            drop((slot, open));
        });
    }
    drop(listener);
    let _ = stop.send(true);
    drop(open);
    if tokio::time::timeout(DRAIN, all_closed.recv())
        .await
        .is_err()
    {
        tracing::warn!("HTTP connections still open after {DRAIN:?}; dropping them");
    }
}

/// Raises this process's open-file limit to its hard limit (many systems start at a soft 1,024), so that
/// the connection caps, not the descriptor limit, are what bounds connections; warns if the caps plus a
/// reserve for the store's files do not fit even then.
pub fn raise_file_limit(connections: usize) {
    const RESERVE: u64 = 512;
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) if limit < connections as u64 + RESERVE => tracing::warn!(
            "the open-file limit is {limit}: fewer than the {connections} connections allowed plus \
             {RESERVE} for the store; lower --max-connections / --max-line-connections or raise \
             `ulimit -n`"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
    }
}
