//! A small HTTP server on its own thread: `/metrics` (Prometheus text),
//! `/healthz` (the process answers), `/readyz` (consent table loaded and
//! the pipeline running; 503 until then and while draining).

use super::Metrics;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

pub struct Server {
    server: Arc<tiny_http::Server>,
    handle: Option<JoinHandle<()>>,
    pub addr: std::net::SocketAddr,
}

impl Server {
    /// Binds `listen` (e.g. `0.0.0.0:9464`; port 0 picks a free one).
    pub fn start(
        listen: &str,
        metrics: Arc<Metrics>,
        ready: Arc<AtomicBool>,
    ) -> std::io::Result<Server> {
        let server = Arc::new(tiny_http::Server::http(listen).map_err(std::io::Error::other)?);
        let addr = server
            .server_addr()
            .to_ip()
            .ok_or_else(|| std::io::Error::other("not an IP listener"))?;
        let s = Arc::clone(&server);
        let handle = std::thread::Builder::new()
            .name("http".into())
            .spawn(move || {
                for req in s.incoming_requests() {
                    let (code, body, ctype) = match req.url() {
                        "/metrics" => (200, metrics.render(), "text/plain; version=0.0.4"),
                        "/healthz" => (200, "ok\n".to_owned(), "text/plain"),
                        "/readyz" if ready.load(Ordering::Relaxed) => {
                            (200, "ready\n".to_owned(), "text/plain")
                        }
                        "/readyz" => (
                            503,
                            "not ready: loading the consent table, or draining\n".to_owned(),
                            "text/plain",
                        ),
                        _ => (
                            404,
                            "not found: /metrics /healthz /readyz\n".to_owned(),
                            "text/plain",
                        ),
                    };
                    let header =
                        tiny_http::Header::from_bytes(&b"Content-Type"[..], ctype.as_bytes()).ok();
                    let mut resp = tiny_http::Response::from_string(body).with_status_code(code);
                    if let Some(h) = header {
                        resp.add_header(h);
                    }
                    let _ = req.respond(resp);
                }
            })?;
        Ok(Server {
            server,
            handle: Some(handle),
            addr,
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
