//! The integration tests: one binary, so the real-service tests share one build and one link,
//! and run in parallel under the harness in `tests/common`.
// Tests wait on deadlines; the ban on the clock (clippy.toml) guards the product's outputs.
#![allow(clippy::disallowed_methods)]

#[path = "../common/mod.rs"]
mod common;

mod cli_output;
mod engine_chain;
mod engine_identity;
mod engine_partitions;
mod engine_rate;
mod engine_recovery;
mod engine_retention;
mod engine_starting;
mod engine_stop;
mod engine_stream;
mod engine_txn;
mod harness;
mod ops_http;
mod ops_logs;
mod ops_page;
mod ops_status;
mod ops_support;
mod pipeline_cross_check;
mod pipeline_examples;
mod pipeline_recreated;
mod pipeline_secured;
mod pipeline_sessions_killed;
mod pipeline_support;
mod pipeline_topics;
mod sink_commit;
mod sink_errors;
mod sink_increment;
mod sink_modes;
mod sink_support;
mod sink_types;
mod stream_examples;
mod stream_files;
mod stream_recovery;
mod stream_reference;
mod stream_sink;
mod stream_socket;
mod stream_support;
mod verify_table;
