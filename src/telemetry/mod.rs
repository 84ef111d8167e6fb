//! Metrics and the HTTP endpoints (`/metrics`, `/healthz`, `/readyz`).

pub mod http;
pub mod metrics;

pub use metrics::Metrics;
