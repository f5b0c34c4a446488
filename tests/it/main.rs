//! The integration tests: one binary, so the real-service tests share one build and one link,
//! and run in parallel under the harness in `tests/common`.
// Tests wait on deadlines; the ban on the clock (clippy.toml) guards the product's outputs.
#![allow(clippy::disallowed_methods)]

#[path = "../common/mod.rs"]
mod common;

mod harness;
mod sink_commit;
mod sink_errors;
mod sink_modes;
mod sink_support;
mod sink_types;
