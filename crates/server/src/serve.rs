//! Serving connections, plain or TLS: one hyper connection per task (HTTP/1.1 and h2), the
//! peer's address handed to handlers as `ConnectInfo`, a bound on reading a request's headers
//! (a client that sends them byte by byte cannot hold a connection open; axum's own `serve`
//! sets none), and a graceful stop that waits a bounded time for requests in flight. Routes,
//! body limits and request timeouts are `routes/`'s; the certificate is `tls.rs`'s.

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use std::net::SocketAddr;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

/// Longest a stop waits for requests in flight (streams and long-polls end on the stop
/// themselves).
const DRAIN: Duration = Duration::from_secs(10);

/// Serves `app` on what `listener` accepts until `stop` is cancelled. A client gets
/// `header_read_timeout` for each request's headers (bodies are bounded by the routes'
/// request timeout).
pub(crate) async fn serve<L>(
    mut listener: L,
    app: Router,
    header_read_timeout: Duration,
    stop: CancellationToken,
) where
    L: axum::serve::Listener<Addr = SocketAddr>,
{
    let graceful = GracefulShutdown::new();
    let mut builder = Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(header_read_timeout);
    builder.http2().timer(TokioTimer::new());
    loop {
        let (io, peer) = tokio::select! {
            conn = listener.accept() => conn,
            () = stop.cancelled() => break,
        };
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            app.clone().oneshot(req.map(axum::body::Body::new))
        });
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service).into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, "connection ended: {e}");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN, graceful.shutdown()).await.is_err() {
        tracing::warn!("requests still in flight {} s after the stop: closing them", DRAIN.as_secs());
    }
}
