//! What the example programs share (as rust-rdkafka's `example_utils`): logging to stderr and
//! their command line. Each example includes it with `#[path = "support/mod.rs"] mod support;`.

/// The broker list of the local services, unless `WEIR_KAFKA_BROKERS` says otherwise.
pub const DEFAULT_BROKERS: &str = "127.0.0.1:19092";

/// Logs to stderr (the programs print their results on stdout), and returns the positional
/// arguments, `defaults[i]` standing in for a missing argument `i`, with the Kafka brokers from
/// `WEIR_KAFKA_BROKERS`.
pub fn start<const N: usize>(defaults: [&str; N]) -> ([String; N], String) {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let mut given = std::env::args().skip(1);
    let args = defaults.map(|default| given.next().unwrap_or_else(|| default.to_owned()));
    let brokers =
        std::env::var("WEIR_KAFKA_BROKERS").unwrap_or_else(|_| DEFAULT_BROKERS.to_owned());
    (args, brokers)
}
