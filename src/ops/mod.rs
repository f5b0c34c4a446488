//! Operations: Prometheus metrics, health, the data of the status page, and rate-limited
//! warnings. A leaf module: every layer may report here, and it imports none of them.
//!
//! Metrics go through the `metrics` facade (a no-op until [`metrics::install`] runs, which the
//! HTTP server does); every series carries the `pipeline` label, so that one process (the test
//! suite) can run several pipelines.

pub(crate) mod http;
pub(crate) mod log_limit;
pub(crate) mod metrics;
pub(crate) mod status;
