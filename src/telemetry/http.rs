//! `/metrics` (Prometheus text), `/healthz` (the process answers),
//! `/readyz` (consent table loaded and the event stage running; 503 until
//! then and while draining), on hyper's HTTP/1 server: a task per
//! connection, so a slow client, or one that pipelines requests without
//! reading the answers, delays nobody else, and a probe is answered while
//! it waits.
//!
//! Bounded: at most `MAX_CONNECTIONS` connections (past that, new ones are
//! closed at once, and counted as refused in the log), request headers
//! within `HEADER_TIMEOUT` and `MAX_HEADER_BYTES`, a connection's life within
//! `CONNECTION_LIFETIME` (Prometheus reconnects).

use super::Metrics;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

pub const MAX_CONNECTIONS: usize = 4096;
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(120);

pub struct Server {
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    pub addr: std::net::SocketAddr,
}

/// Binds `listen` (e.g. `0.0.0.0:9464`; port 0 picks a free one), before
/// the runtime starts, so that a busy port fails the start.
pub fn bind(listen: &str) -> std::io::Result<std::net::TcpListener> {
    let l = std::net::TcpListener::bind(listen)?;
    l.set_nonblocking(true)?;
    Ok(l)
}

impl Server {
    /// Serves on `listener`; must be called on the runtime.
    pub fn new(listener: std::net::TcpListener, metrics: Arc<Metrics>) -> std::io::Result<Server> {
        listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let addr = listener.local_addr()?;
        Ok(Server {
            listener,
            metrics,
            addr,
        })
    }

    /// Accepts until `stop`; open connections end with the runtime.
    pub async fn run<E>(self, stop: CancellationToken) -> Result<(), E> {
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let mut refused = 0u64;
        loop {
            let (stream, _) = tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                r = self.listener.accept() => match r {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of descriptors, most likely: wait a little rather than spin.
                        tracing::warn!(error = %e, "http: accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                refused += 1;
                if refused.is_power_of_two() {
                    tracing::warn!(
                        refused,
                        limit = MAX_CONNECTIONS,
                        "http: connection limit reached; closing new connections"
                    );
                }
                drop(stream);
                continue;
            };
            let _ = stream.set_nodelay(true);
            let metrics = Arc::clone(&self.metrics);
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let answer = respond(&req, &metrics);
                    async move { Ok::<_, Infallible>(answer) }
                });
                let conn = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .max_buf_size(MAX_HEADER_BYTES)
                    .serve_connection(TokioIo::new(stream), service);
                let _ = tokio::time::timeout(CONNECTION_LIFETIME, conn).await;
                drop(slot);
            });
        }
    }
}

fn respond(req: &Request<hyper::body::Incoming>, metrics: &Metrics) -> Response<Full<Bytes>> {
    let text = |code: StatusCode, body: &'static str| {
        (code, Bytes::from_static(body.as_bytes()), "text/plain")
    };
    let (code, body, ctype) = if req.method() != Method::GET && req.method() != Method::HEAD {
        text(StatusCode::METHOD_NOT_ALLOWED, "GET or HEAD\n")
    } else {
        match req.uri().path() {
            "/metrics" => (
                StatusCode::OK,
                Bytes::from(metrics.render()),
                "text/plain; version=0.0.4",
            ),
            "/healthz" => text(StatusCode::OK, "ok\n"),
            "/readyz" if metrics.ready.get() == 1 => text(StatusCode::OK, "ready\n"),
            "/readyz" => text(
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: loading the consent table, or draining\n",
            ),
            _ => text(
                StatusCode::NOT_FOUND,
                "not found: /metrics /healthz /readyz\n",
            ),
        }
    };
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = code;
    if let Ok(v) = hyper::header::HeaderValue::from_str(ctype) {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::Instant;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    }

    fn get(addr: std::net::SocketAddr, path: &str) -> (String, Duration) {
        let started = Instant::now();
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        (answer, started.elapsed())
    }

    /// 1,000 idle connections and a client that pipelines `/metrics`
    /// without reading the answers: the probes are still answered at once.
    #[test]
    fn probes_answer_within_100_ms_beside_idle_and_non_reading_clients() {
        let metrics = Arc::new(Metrics::new().unwrap());
        // A /metrics answer of some size, so that unread answers fill the socket.
        for p in 0..200 {
            metrics
                .lag
                .with_label_values(&["privacy.sharing-events", &p.to_string()])
                .set(p);
        }
        metrics.ready.set(1);
        let runtime = runtime();
        let stop = CancellationToken::new();
        let listener = bind("127.0.0.1:0").unwrap();
        let server = {
            let _guard = runtime.enter();
            Server::new(listener, Arc::clone(&metrics)).unwrap()
        };
        let addr = server.addr;
        let task = runtime.spawn(server.run::<()>(stop.clone()));

        let idle: Vec<TcpStream> = (0..1000)
            .map(|_| TcpStream::connect(addr).unwrap())
            .collect();
        let mut greedy = TcpStream::connect(addr).unwrap();
        greedy
            .set_write_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let request = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n".repeat(2000);
        // Writes until the server stops reading (its answers are not read).
        let _ = greedy.write_all(&request);

        let (health, took) = get(addr, "/healthz");
        assert!(health.starts_with("HTTP/1.1 200"), "{health}");
        assert!(took < Duration::from_millis(100), "/healthz took {took:?}");
        let (ready, took) = get(addr, "/readyz");
        assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
        assert!(took < Duration::from_millis(100), "/readyz took {took:?}");
        metrics.ready.set(0);
        assert!(get(addr, "/readyz").0.starts_with("HTTP/1.1 503"));
        assert!(get(addr, "/nowhere").0.starts_with("HTTP/1.1 404"));
        let (m, _) = get(addr, "/metrics");
        assert!(m.contains("shareaudit_consumer_lag_messages"), "{m}");

        drop(idle);
        stop.cancel();
        runtime.block_on(task).unwrap().unwrap();
    }

    #[test]
    fn a_client_that_never_finishes_its_headers_is_cut_off() {
        let metrics = Arc::new(Metrics::new().unwrap());
        let runtime = runtime();
        let listener = bind("127.0.0.1:0").unwrap();
        let server = {
            let _guard = runtime.enter();
            Server::new(listener, metrics).unwrap()
        };
        let addr = server.addr;
        let stop = CancellationToken::new();
        runtime.spawn(server.run::<()>(stop.clone()));
        let mut slow = TcpStream::connect(addr).unwrap();
        slow.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            .unwrap();
        slow.set_read_timeout(Some(HEADER_TIMEOUT * 3)).unwrap();
        let started = Instant::now();
        let mut buf = Vec::new();
        let _ = slow.read_to_end(&mut buf);
        assert!(
            started.elapsed() < HEADER_TIMEOUT * 2,
            "closed after the header timeout, not held open: {:?}",
            started.elapsed()
        );
        stop.cancel();
    }
}
