//! Rate control: how many records each partition may bring into the next batch.
//!
//! Two limits combine (ARCHITECTURE.md, "How a batch flows", shows where they apply):
//!
//! - a hard cap, `source.max_rate_per_partition` records/s, which is `rate × batch interval`
//!   records per partition and batch;
//! - optional backpressure (`source.backpressure`): a [`PidRateEstimator`] learns from every
//!   finished batch how many records/s the pipeline can process, and the [`RateController`] splits
//!   that total across partitions in proportion to their lag before applying the hard cap.
//!
//! Where Spark's direct Kafka stream goes wrong, this module does not:
//!
//! - The first batch after every start is bounded: by `source.initial_rate`, or with backpressure
//!   and no initial rate by the estimator's minimum rate, never by nothing.
//! - A partition with lag gets at least one record per batch, so a small total rate spread over
//!   many partitions starves none of them.
//! - Per-second rates (the hard cap, `initial_rate`, `min_rate`) become per-batch counts rounding
//!   down, so a rate is never exceeded; float results become integers through a checked
//!   conversion, never a bare `as`.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::plan::{BatchTime, TopicPartition};

const KEY_BATCH_INTERVAL: &str = "pipeline.batch_interval";
const KEY_MAX_RATE: &str = "source.max_rate_per_partition";
const KEY_INITIAL_RATE: &str = "source.initial_rate";
const KEY_PROPORTIONAL: &str = "source.backpressure_pid.proportional";
const KEY_INTEGRAL: &str = "source.backpressure_pid.integral";
const KEY_DERIVATIVE: &str = "source.backpressure_pid.derivative";
const KEY_MIN_RATE: &str = "source.backpressure_pid.min_rate";

/// Rate limits of the source, as the configuration layer hands them over, with the PID
/// estimator's parameters (Spark's defaults).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateConfig {
    /// Hard cap in records/s per partition (`source.max_rate_per_partition`); `None` is unlimited.
    pub max_rate_per_partition: Option<u64>,
    /// Whether the PID estimator adapts the total rate to what the pipeline processes
    /// (`source.backpressure`).
    pub backpressure: bool,
    /// Total records/s for the batches after a start, until a batch with records has been measured
    /// (`source.initial_rate`). With backpressure and no initial rate, `min_rate` is used.
    pub initial_rate: Option<u64>,
    /// PID weight of the difference between the last rate and the measured processing rate.
    pub proportional: f64,
    /// PID weight of the scheduling delay, the accumulated error.
    pub integral: f64,
    /// PID weight of the change of the error per second.
    pub derivative: f64,
    /// The lowest total rate the estimator returns, in records/s.
    pub min_rate: f64,
}

impl Default for RateConfig {
    fn default() -> Self {
        Self {
            max_rate_per_partition: None,
            backpressure: false,
            initial_rate: None,
            proportional: 1.0,
            integral: 0.2,
            derivative: 0.0,
            min_rate: 100.0,
        }
    }
}

impl RateConfig {
    /// Checks what does not depend on the batch interval: no rate is zero, the PID weights are
    /// finite and not negative, `min_rate` is positive. [`RateController::new`] checks the rest.
    /// The error names the configuration key.
    pub fn validate(&self) -> Result<()> {
        for (key, rate) in [
            (KEY_MAX_RATE, self.max_rate_per_partition),
            (KEY_INITIAL_RATE, self.initial_rate),
        ] {
            if rate == Some(0) {
                return Err(Error::config(
                    key,
                    "is 0, which would read nothing; remove it for no limit",
                ));
            }
        }
        for (key, weight) in [
            (KEY_PROPORTIONAL, self.proportional),
            (KEY_INTEGRAL, self.integral),
            (KEY_DERIVATIVE, self.derivative),
        ] {
            if !(weight.is_finite() && weight >= 0.0) {
                return Err(Error::config(
                    key,
                    format!("must be a finite number >= 0, got {weight}"),
                ));
            }
        }
        if !(self.min_rate.is_finite() && self.min_rate > 0.0) {
            return Err(Error::config(
                KEY_MIN_RATE,
                format!(
                    "must be a finite rate > 0 records/s, got {}; the default is 100",
                    self.min_rate
                ),
            ));
        }
        Ok(())
    }
}

/// What the runtime measured for one finished batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchStats {
    /// The batch.
    pub batch_time: BatchTime,
    /// Records the batch read.
    pub records: u64,
    /// From the start of the batch's work to its end.
    pub processing_delay: Duration,
    /// From the batch time to the start of the batch's work.
    pub scheduling_delay: Duration,
}

/// A PID controller that turns the measurements of finished batches into the total number of
/// records/s the next batches should read, with the semantics of Spark's `PIDRateEstimator`.
///
/// The error is the last rate minus the measured processing rate; the integral term is the
/// scheduling delay, expressed as records that waited; the derivative is the error's change per
/// second. With the defaults the new rate is
/// `processing rate × (1 − 0.2 × scheduling delay / batch interval)`, at least `min_rate`.
///
/// Unlike Spark, the first measurement already yields an estimate (the previous rate is taken to
/// be the measured one), so the initial rate governs only the first batch after a start.
#[derive(Debug, Clone)]
pub struct PidRateEstimator {
    interval_secs: f64,
    proportional: f64,
    integral: f64,
    derivative: f64,
    min_rate: f64,
    last: Option<LastEstimate>,
}

#[derive(Debug, Clone, Copy)]
struct LastEstimate {
    batch_time: BatchTime,
    rate: f64,
    error: f64,
}

impl PidRateEstimator {
    /// An estimator for batches of `batch_interval` with the PID parameters of `config`.
    ///
    /// Fails with a configuration error naming the key when the interval is zero or `config`
    /// is invalid (see [`RateConfig::validate`]).
    pub fn new(batch_interval: Duration, config: &RateConfig) -> Result<Self> {
        if batch_interval.is_zero() {
            return Err(Error::config(
                KEY_BATCH_INTERVAL,
                "must be longer than zero, e.g. \"1s\"",
            ));
        }
        config.validate()?;
        Ok(Self {
            interval_secs: batch_interval.as_secs_f64(),
            proportional: config.proportional,
            integral: config.integral,
            derivative: config.derivative,
            min_rate: config.min_rate,
            last: None,
        })
    }

    /// Learns from one finished batch and returns the new total rate in records/s, or `None` when
    /// the batch teaches nothing: it read no records, took no measurable time, or is not later
    /// than the last batch measured.
    pub fn compute(&mut self, stats: &BatchStats) -> Option<f64> {
        let processing_secs = stats.processing_delay.as_secs_f64();
        if stats.records == 0 || processing_secs <= 0.0 {
            return None;
        }
        if self
            .last
            .is_some_and(|last| stats.batch_time <= last.batch_time)
        {
            return None;
        }
        let processing_rate = stats.records as f64 / processing_secs;
        // Records that waited during the scheduling delay, per second of batch interval.
        let historical_error =
            stats.scheduling_delay.as_secs_f64() * processing_rate / self.interval_secs;
        let (previous_rate, error, error_change) = match self.last {
            None => (processing_rate, 0.0, 0.0),
            Some(last) => {
                let error = last.rate - processing_rate;
                let elapsed_millis = stats
                    .batch_time
                    .as_millis()
                    .saturating_sub(last.batch_time.as_millis());
                let elapsed_secs = elapsed_millis as f64 / 1000.0;
                (last.rate, error, (error - last.error) / elapsed_secs)
            }
        };
        let rate = (previous_rate
            - self.proportional * error
            - self.integral * historical_error
            - self.derivative * error_change)
            .max(self.min_rate);
        self.last = Some(LastEstimate {
            batch_time: stats.batch_time,
            rate,
            error,
        });
        Some(rate)
    }
}

/// Decides the per-partition caps of every batch: the hard `max_rate_per_partition` cap and, with
/// backpressure, the PID estimate split across partitions by lag.
///
/// One controller lives for one run of the pipeline and is not checkpointed: after every start
/// it begins again at the initial rate.
///
/// How it behaves, as the tests simulate it (a sink of fixed capacity, load above it, ±5% noise
/// in processing time, default PID gains): within 30 batches the rate settles within ±10% of the
/// capacity, from the minimum rate as from a first batch five times too large; after that it
/// swings by at most 15% of the capacity peak to peak and the scheduling delay stays below a
/// quarter of the batch interval.
///
/// ```
/// use std::collections::BTreeMap;
/// use std::time::Duration;
/// use weir::plan::{BatchTime, TopicPartition};
/// use weir::rate::{BatchStats, RateConfig, RateController};
///
/// # fn main() -> weir::Result<()> {
/// let config = RateConfig {
///     max_rate_per_partition: Some(4_000),
///     backpressure: true,
///     initial_rate: Some(500),
///     ..RateConfig::default()
/// };
/// let interval = Duration::from_secs(1);
/// let mut controller = RateController::new(config, interval)?;
/// let (hot, cold) = (TopicPartition::new("orders", 0), TopicPartition::new("orders", 1));
/// let lags = BTreeMap::from([(hot.clone(), 90_000), (cold.clone(), 10_000)]);
///
/// // The first batch after a start reads at the initial rate, split by lag.
/// let caps = controller.caps(&lags, interval);
/// assert_eq!((caps[&hot], caps[&cold]), (Some(450), Some(50)));
///
/// // The batch read 500 records in 100 ms: the pipeline can do 5,000 records/s.
/// controller.update(BatchStats {
///     batch_time: BatchTime::from_millis(1_000),
///     records: 500,
///     processing_delay: Duration::from_millis(100),
///     scheduling_delay: Duration::ZERO,
/// });
/// assert_eq!(controller.rate(), Some(5_000.0));
/// // 4,500 by lag for the hot partition, but the hard cap is 4,000.
/// let caps = controller.caps(&lags, interval);
/// assert_eq!((caps[&hot], caps[&cold]), (Some(4_000), Some(500)));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct RateController {
    config: RateConfig,
    /// Present exactly when backpressure is on.
    estimator: Option<PidRateEstimator>,
    estimate: Option<f64>,
    measured_records: bool,
}

impl RateController {
    /// A controller for batches of `batch_interval`, in its state after a start.
    ///
    /// Fails with a configuration error naming the key when `config` is invalid (see
    /// [`RateConfig::validate`]), the interval is zero, or `max_rate_per_partition` allows less
    /// than one record per batch.
    pub fn new(config: RateConfig, batch_interval: Duration) -> Result<Self> {
        let estimator = PidRateEstimator::new(batch_interval, &config)?;
        if let Some(rate) = config.max_rate_per_partition
            && records_per_batch(rate, batch_interval) == 0
        {
            return Err(Error::config(
                KEY_MAX_RATE,
                format!(
                    "{rate} records/s allows less than one record per batch interval of \
                     {batch_interval:?}, so partitions would never move; set it to at least {}",
                    min_rate_for_one_record(batch_interval)
                ),
            ));
        }
        Ok(Self {
            config,
            estimator: config.backpressure.then_some(estimator),
            estimate: None,
            measured_records: false,
        })
    }

    /// Learns from a finished batch. Call it once per batch, in batch order.
    pub fn update(&mut self, stats: BatchStats) {
        if stats.records > 0 {
            self.measured_records = true;
        }
        if let Some(estimator) = &mut self.estimator
            && let Some(rate) = estimator.compute(&stats)
        {
            self.estimate = Some(rate);
        }
    }

    /// The total records/s the next batch may read across all partitions, or `None` when only
    /// the per-partition cap (if any) applies.
    ///
    /// With backpressure: the latest estimate; until there is one, the initial rate, or
    /// `min_rate` when there is no initial rate. Without backpressure: the initial rate until a
    /// batch with records has finished, then `None`.
    pub fn rate(&self) -> Option<f64> {
        let initial = self.config.initial_rate.map(|rate| rate as f64);
        if self.estimator.is_some() {
            Some(self.estimate.or(initial).unwrap_or(self.config.min_rate))
        } else if self.measured_records {
            None
        } else {
            initial
        }
    }

    /// The most records each partition may contribute to the next batch, `None` for no limit.
    ///
    /// `lags` holds every partition of the next batch with the records it has waiting (see
    /// [`crate::source::lags`]); the result has the same keys. `batch_interval` is the one the
    /// controller was made for. When a total rate applies, `rate × batch_interval` records are
    /// split in proportion to lag: a partition without lag gets 0, every partition with lag at
    /// least 1, and the shares sum to the total (raised to one record per lagging partition if it
    /// is smaller). Each share is then capped by `max_rate_per_partition × batch_interval`.
    pub fn caps(
        &self,
        lags: &BTreeMap<TopicPartition, u64>,
        batch_interval: Duration,
    ) -> BTreeMap<TopicPartition, Option<u64>> {
        let shares = self.rate().map(|rate| {
            let lag_values: Vec<u64> = lags.values().copied().collect();
            split_by_lag(records_in(rate, batch_interval), &lag_values)
        });
        // At least one record, so that an interval other than the validated one starves nobody.
        let partition_cap = self
            .config
            .max_rate_per_partition
            .map(|rate| records_per_batch(rate, batch_interval).max(1));
        lags.keys()
            .enumerate()
            .map(|(i, tp)| {
                let share = shares.as_ref().and_then(|shares| shares.get(i).copied());
                (tp.clone(), min_limit(share, partition_cap))
            })
            .collect()
    }
}

/// The smaller of two limits, where `None` means no limit.
fn min_limit(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (limit, None) | (None, limit) => limit,
    }
}

/// Splits `total` records across partitions in proportion to `lags`.
///
/// Shares are rounded down and the records left over go to the largest remainders (ties to the
/// first partition), so the shares sum to the budget: `total`, raised to the number of lagging
/// partitions if smaller. A lagging partition rounded to 0 takes one record from the largest
/// share. Hence: zero lag → 0, lag → at least 1, and no share exceeds its lag unless the budget
/// exceeds the total lag.
fn split_by_lag(total: u64, lags: &[u64]) -> Vec<u64> {
    let lagging = lags.iter().filter(|&&lag| lag > 0).count();
    let total_lag: u128 = lags.iter().map(|&lag| u128::from(lag)).sum();
    if lagging == 0 {
        return vec![0; lags.len()];
    }
    let budget = u128::from(total).max(u128::try_from(lagging).unwrap_or(u128::MAX));
    let exact: Vec<(u128, u128)> = lags
        .iter()
        .map(|&lag| {
            let scaled = u128::from(lag) * budget;
            (scaled / total_lag, scaled % total_lag)
        })
        .collect();
    let mut shares: Vec<u128> = exact.iter().map(|&(share, _)| share).collect();
    let assigned: u128 = shares.iter().sum();
    let mut by_remainder: Vec<usize> = (0..lags.len()).collect();
    by_remainder.sort_by(|&a, &b| exact[b].1.cmp(&exact[a].1).then(a.cmp(&b)));
    // The remainders sum to `leftover × total_lag` and each is below `total_lag`, so more
    // than `leftover` partitions have one: the +1s go to partitions with lag.
    let leftover = budget - assigned;
    for &i in by_remainder
        .iter()
        .take(usize::try_from(leftover).unwrap_or(usize::MAX))
    {
        shares[i] += 1;
    }
    for starving in (0..lags.len()).filter(|&i| lags[i] > 0) {
        if shares[starving] == 0 {
            // The budget is at least one record per lagging partition, so while one has none,
            // another has two or more.
            if let Some(donor) = largest(&shares) {
                shares[donor] -= 1;
                shares[starving] = 1;
            }
        }
    }
    shares
        .into_iter()
        .map(|share| u64::try_from(share).unwrap_or(u64::MAX))
        .collect()
}

/// The index of the largest value, the first of equals; `None` when empty.
fn largest(values: &[u128]) -> Option<usize> {
    let mut best: Option<usize> = None;
    for (i, &value) in values.iter().enumerate() {
        if best.is_none_or(|b| value > values[b]) {
            best = Some(i);
        }
    }
    best
}

/// Records a per-second `rate` allows in one `interval`, rounded down, computed exactly.
fn records_per_batch(rate: u64, interval: Duration) -> u64 {
    let records = u128::from(rate).saturating_mul(interval.as_nanos()) / NANOS_PER_SEC;
    u64::try_from(records).unwrap_or(u64::MAX)
}

/// The smallest whole rate in records/s that allows one record per `interval`.
fn min_rate_for_one_record(interval: Duration) -> u128 {
    NANOS_PER_SEC.div_ceil(interval.as_nanos().max(1))
}

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// Records a fractional per-second `rate` allows in one `interval`, rounded down.
fn records_in(rate: f64, interval: Duration) -> u64 {
    f64_to_u64_saturating((rate * interval.as_secs_f64()).floor())
}

/// `value` as an integer: rounded toward zero, negative and NaN as 0, too large as `u64::MAX`.
fn f64_to_u64_saturating(value: f64) -> u64 {
    const TWO_POW_64: f64 = 18_446_744_073_709_551_616.0;
    if value.is_nan() || value <= 0.0 {
        0
    } else if value >= TWO_POW_64 {
        u64::MAX
    } else {
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "the value was checked to lie in [0, 2^64) just above"
        )]
        let integer = value as u64;
        integer
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn tp(p: i32) -> TopicPartition {
        TopicPartition::new("t", p)
    }

    fn stats(millis: i64, records: u64, processing_ms: u64, scheduling_ms: u64) -> BatchStats {
        BatchStats {
            batch_time: BatchTime::from_millis(millis),
            records,
            processing_delay: Duration::from_millis(processing_ms),
            scheduling_delay: Duration::from_millis(scheduling_ms),
        }
    }

    fn estimator() -> PidRateEstimator {
        PidRateEstimator::new(Duration::from_secs(1), &RateConfig::default()).unwrap()
    }

    #[test]
    fn estimator_learns_nothing_from_empty_instant_or_old_batches() {
        let mut pid = estimator();
        assert_eq!(pid.compute(&stats(1_000, 0, 100, 0)), None, "no records");
        assert_eq!(pid.compute(&stats(1_000, 10, 0, 0)), None, "zero delay");
        assert_eq!(pid.compute(&stats(1_000, 1_000, 100, 0)), Some(10_000.0));
        assert_eq!(pid.compute(&stats(1_000, 1_000, 100, 0)), None, "same time");
        assert_eq!(
            pid.compute(&stats(900, 1_000, 100, 0)),
            None,
            "earlier time"
        );
    }

    #[test]
    fn estimator_with_defaults_discounts_scheduling_delay() {
        let mut pid = estimator();
        assert_eq!(pid.compute(&stats(1_000, 1_000, 500, 0)), Some(2_000.0));
        // 2,000/s processing, 1 s delay on a 1 s interval: 2,000 × (1 − 0.2 × 1).
        let rate = pid.compute(&stats(2_000, 1_000, 500, 1_000)).unwrap();
        assert!((rate - 1_600.0).abs() < 1e-9, "{rate}");
        // Far behind: the minimum rate holds.
        assert_eq!(pid.compute(&stats(3_000, 1_000, 500, 10_000)), Some(100.0));
    }

    #[test]
    fn estimator_derivative_uses_error_change_per_second() {
        let config = RateConfig {
            proportional: 0.5,
            integral: 0.0,
            derivative: 0.1,
            min_rate: 1.0,
            ..RateConfig::default()
        };
        let mut pid = PidRateEstimator::new(Duration::from_secs(1), &config).unwrap();
        assert_eq!(pid.compute(&stats(1_000, 1_000, 1_000, 0)), Some(1_000.0));
        // error = 1,000 − 500 = 500 over 2 s: 1,000 − 0.5 × 500 − 0.1 × 250.
        let rate = pid.compute(&stats(3_000, 500, 1_000, 0)).unwrap();
        assert!((rate - 725.0).abs() < 1e-9, "{rate}");
    }

    #[test]
    fn invalid_parameters_name_their_key() {
        let second = Duration::from_secs(1);
        let cases = [
            (
                RateConfig {
                    proportional: -1.0,
                    ..RateConfig::default()
                },
                KEY_PROPORTIONAL,
            ),
            (
                RateConfig {
                    integral: f64::NAN,
                    ..RateConfig::default()
                },
                KEY_INTEGRAL,
            ),
            (
                RateConfig {
                    derivative: f64::INFINITY,
                    ..RateConfig::default()
                },
                KEY_DERIVATIVE,
            ),
            (
                RateConfig {
                    min_rate: 0.0,
                    ..RateConfig::default()
                },
                KEY_MIN_RATE,
            ),
            (
                RateConfig {
                    initial_rate: Some(0),
                    ..RateConfig::default()
                },
                KEY_INITIAL_RATE,
            ),
            (
                RateConfig {
                    max_rate_per_partition: Some(0),
                    ..RateConfig::default()
                },
                KEY_MAX_RATE,
            ),
        ];
        for (config, key) in cases {
            let error = RateController::new(config, second).unwrap_err();
            assert!(error.to_string().contains(key), "{error}");
        }
        let zero = RateController::new(RateConfig::default(), Duration::ZERO).unwrap_err();
        assert!(zero.to_string().contains(KEY_BATCH_INTERVAL), "{zero}");
        // 10 records/s is half a record per 50 ms batch.
        let max = RateConfig {
            max_rate_per_partition: Some(10),
            ..RateConfig::default()
        };
        let error = RateController::new(max, Duration::from_millis(50)).unwrap_err();
        assert!(error.to_string().contains(KEY_MAX_RATE), "{error}");
        assert!(error.to_string().contains("at least 20"), "{error}");
    }

    #[test]
    fn without_backpressure_only_the_hard_cap_applies() {
        let config = RateConfig {
            max_rate_per_partition: Some(1_000),
            ..RateConfig::default()
        };
        let interval = Duration::from_millis(200);
        let controller = RateController::new(config, interval).unwrap();
        let lags = BTreeMap::from([(tp(0), 0), (tp(1), 5), (tp(2), 1_000_000)]);
        let caps = controller.caps(&lags, interval);
        assert!(caps.values().all(|&cap| cap == Some(200)), "{caps:?}");

        let unlimited = RateController::new(RateConfig::default(), interval).unwrap();
        assert!(
            unlimited
                .caps(&lags, interval)
                .values()
                .all(Option::is_none)
        );
    }

    #[test]
    fn initial_rate_bounds_the_first_batch_after_start() {
        let second = Duration::from_secs(1);
        let lags = BTreeMap::from([(tp(0), 1_000_000), (tp(1), 3_000_000)]);
        for backpressure in [false, true] {
            let config = RateConfig {
                backpressure,
                initial_rate: Some(400),
                ..RateConfig::default()
            };
            let mut controller = RateController::new(config, second).unwrap();
            let caps = controller.caps(&lags, second);
            assert_eq!(caps[&tp(0)], Some(100));
            assert_eq!(caps[&tp(1)], Some(300));
            // A batch without records measures nothing: the bound stays.
            controller.update(stats(1_000, 0, 10, 0));
            assert_eq!(controller.caps(&lags, second), caps);
            controller.update(stats(2_000, 400, 100, 0));
            let expected = if backpressure { Some(4_000.0) } else { None };
            assert_eq!(controller.rate(), expected, "backpressure {backpressure}");
        }
        // Backpressure without an initial rate starts at the minimum rate, not unbounded.
        let config = RateConfig {
            backpressure: true,
            ..RateConfig::default()
        };
        let caps = RateController::new(config, second)
            .unwrap()
            .caps(&lags, second);
        assert_eq!(caps.values().map(|cap| cap.unwrap()).sum::<u64>(), 100);
    }

    #[test]
    fn tiny_rate_still_moves_every_lagging_partition() {
        let config = RateConfig {
            backpressure: true,
            initial_rate: Some(1),
            ..RateConfig::default()
        };
        let interval = Duration::from_millis(50);
        let controller = RateController::new(config, interval).unwrap();
        let lags: BTreeMap<_, _> = (0..8)
            .map(|p| (tp(p), u64::from(p.unsigned_abs())))
            .collect();
        let caps = controller.caps(&lags, interval);
        assert_eq!(caps[&tp(0)], Some(0), "no lag, nothing to read");
        assert!((1..8).all(|p| caps[&tp(p)] == Some(1)), "{caps:?}");
    }

    #[test]
    fn float_conversion_is_checked() {
        assert_eq!(f64_to_u64_saturating(f64::NAN), 0);
        assert_eq!(f64_to_u64_saturating(-3.5), 0);
        assert_eq!(f64_to_u64_saturating(2.999), 2);
        assert_eq!(f64_to_u64_saturating(1e30), u64::MAX);
        assert_eq!(f64_to_u64_saturating(f64::INFINITY), u64::MAX);
        assert_eq!(records_in(100.0, Duration::from_millis(70)), 7);
        assert_eq!(records_per_batch(3, Duration::from_millis(333)), 0);
        assert_eq!(
            records_per_batch(u64::MAX, Duration::from_secs(10)),
            u64::MAX
        );
        assert_eq!(min_rate_for_one_record(Duration::from_millis(300)), 4);
    }

    /// A pipeline with a fixed capacity: the sink processes `capacity` records/s plus a fixed
    /// per-batch overhead, and each batch's processing time varies by a deterministic ±`jitter`
    /// per mille. Producers write `load[p]` records/s to partition `p`. Batches run one at a time
    /// at batch times `k × interval`; a batch starts when the previous one is done and reads
    /// what its caps allow of what was produced by then. Times are in microseconds.
    struct Simulation {
        capacity: u64,
        overhead_us: u64,
        jitter_per_mille: u64,
        interval_us: u64,
        /// The first batch time is `start_us + interval`; producers started at 0.
        start_us: u64,
        load: Vec<u64>,
        positions: Vec<u64>,
        busy_until_us: u64,
        seed: u64,
    }

    /// What one simulated batch did.
    #[derive(Debug)]
    struct Observed {
        caps: Vec<Option<u64>>,
        lags: Vec<u64>,
        records: u64,
        scheduling_delay_us: u64,
        /// The controller's rate after learning from this batch.
        rate_after: f64,
    }

    impl Simulation {
        fn new(capacity: u64, load: Vec<u64>, interval: Duration) -> Self {
            Self {
                capacity,
                overhead_us: 5_000,
                jitter_per_mille: 50,
                interval_us: u64::try_from(interval.as_micros()).unwrap(),
                start_us: 0,
                positions: vec![0; load.len()],
                load,
                busy_until_us: 0,
                seed: 0x9E37_79B9_7F4A_7C15,
            }
        }

        /// A deterministic value in `[-jitter, +jitter]` per mille, from a xorshift generator.
        fn jitter(&mut self) -> i64 {
            self.seed ^= self.seed << 13;
            self.seed ^= self.seed >> 7;
            self.seed ^= self.seed << 17;
            let span = 2 * self.jitter_per_mille + 1;
            i64::try_from(self.seed % span).unwrap() - i64::try_from(self.jitter_per_mille).unwrap()
        }

        /// Runs `batches` batches under a new controller with `config`.
        fn run(&mut self, config: RateConfig, batches: u64) -> Vec<Observed> {
            let interval = Duration::from_micros(self.interval_us);
            let mut controller = RateController::new(config, interval).unwrap();
            (1..=batches)
                .map(|k| self.batch(&mut controller, k))
                .collect()
        }

        fn batch(&mut self, controller: &mut RateController, k: u64) -> Observed {
            let batch_time_us = self.start_us + k * self.interval_us;
            let start_us = batch_time_us.max(self.busy_until_us);
            let lags: Vec<u64> = (0..self.load.len())
                .map(|p| self.load[p] * start_us / 1_000_000 - self.positions[p])
                .collect();
            let lag_map: BTreeMap<_, _> = lags
                .iter()
                .enumerate()
                .map(|(p, &lag)| (tp(i32::try_from(p).unwrap()), lag))
                .collect();
            let interval = Duration::from_micros(self.interval_us);
            let caps: Vec<Option<u64>> =
                controller.caps(&lag_map, interval).into_values().collect();
            let mut records = 0;
            for (p, cap) in caps.iter().enumerate() {
                let read = lags[p].min(cap.unwrap_or(u64::MAX));
                self.positions[p] += read;
                records += read;
            }
            let base_us = self.overhead_us + records * 1_000_000 / self.capacity;
            let processing_us =
                u64::try_from(i64::try_from(base_us).unwrap() * (1_000 + self.jitter()) / 1_000)
                    .unwrap();
            self.busy_until_us = start_us + processing_us;
            let scheduling_delay_us = start_us - batch_time_us;
            controller.update(BatchStats {
                batch_time: BatchTime::from_millis(i64::try_from(batch_time_us / 1_000).unwrap()),
                records,
                processing_delay: Duration::from_micros(processing_us),
                scheduling_delay: Duration::from_micros(scheduling_delay_us),
            });
            Observed {
                caps,
                lags,
                records,
                scheduling_delay_us,
                rate_after: controller.rate().unwrap_or(f64::INFINITY),
            }
        }
    }

    /// Batches after which the rate counts as converged.
    const CONVERGED_AFTER: usize = 30;
    /// After convergence every rate lies within ±10% of the capacity.
    const CONVERGENCE_TOLERANCE: f64 = 0.10;
    /// After convergence the rate swings by at most 15% of the capacity peak to peak: the PID with
    /// the default gains follows the measured processing rate, which the simulation's ±5%
    /// processing-time jitter moves by about ±5%, plus the scheduling-delay correction. (Measured:
    /// 11%.)
    const MAX_SWING: f64 = 0.15;
    /// After convergence the scheduling delay stays below a quarter of the batch interval.
    /// (Measured: 9% of the interval.)
    const MAX_DELAY_FRACTION_OF_INTERVAL: u64 = 4;

    /// Checks the convergence bounds above, and that no lagging partition starved on the way.
    fn assert_converges(observed: &[Observed], capacity: u64, interval: Duration, label: &str) {
        assert_caps_honour_limits(observed, None);
        let capacity = capacity as f64;
        let settled = &observed[CONVERGED_AFTER..];
        for (i, batch) in settled.iter().enumerate() {
            let off = (batch.rate_after - capacity).abs() / capacity;
            assert!(
                off <= CONVERGENCE_TOLERANCE,
                "{label}: batch {} rate {} is {:.1}% off the capacity {capacity}",
                i + CONVERGED_AFTER + 1,
                batch.rate_after,
                off * 100.0
            );
        }
        let (low, high) = settled
            .iter()
            .fold((f64::MAX, f64::MIN), |(low, high), batch| {
                (low.min(batch.rate_after), high.max(batch.rate_after))
            });
        assert!(
            (high - low) / capacity <= MAX_SWING,
            "{label}: rate swings from {low} to {high}"
        );
        let worst_delay = settled.iter().map(|b| b.scheduling_delay_us).max().unwrap();
        let interval_us = u64::try_from(interval.as_micros()).unwrap();
        assert!(
            worst_delay <= interval_us / MAX_DELAY_FRACTION_OF_INTERVAL,
            "{label}: scheduling delay {worst_delay} µs after convergence"
        );
    }

    fn assert_caps_honour_limits(observed: &[Observed], per_batch_max: Option<u64>) {
        for batch in observed {
            for (cap, lag) in batch.caps.iter().zip(&batch.lags) {
                if let (Some(max), Some(cap)) = (per_batch_max, cap) {
                    assert!(cap <= &max, "cap {cap} above max {max}");
                }
                if *lag > 0 {
                    assert!(
                        cap.is_none_or(|cap| cap >= 1),
                        "a lagging partition starved: {batch:?}"
                    );
                }
            }
        }
    }

    /// Backpressure with default PID gains.
    fn backpressure(initial_rate: Option<u64>, max_rate_per_partition: Option<u64>) -> RateConfig {
        RateConfig {
            max_rate_per_partition,
            backpressure: true,
            initial_rate,
            ..RateConfig::default()
        }
    }

    #[test]
    fn backpressure_converges_to_capacity_from_the_minimum_rate() {
        let interval = Duration::from_secs(1);
        let capacity = 20_000;
        // 30,000 records/s arrive: 1.5 × capacity, unevenly spread.
        let mut simulation =
            Simulation::new(capacity, vec![15_000, 10_000, 4_000, 1_000], interval);
        let observed = simulation.run(backpressure(None, None), 200);
        assert_eq!(
            observed[0].records, 100,
            "the first batch reads at min_rate"
        );
        assert_converges(&observed, capacity, interval, "from min rate");
    }

    #[test]
    fn backpressure_drains_the_backlog_of_a_downtime_without_overshooting_for_long() {
        let interval = Duration::from_millis(200);
        let capacity = 10_000;
        let mut simulation = Simulation::new(capacity, vec![8_000, 8_000, 100], interval);
        // The pipeline starts 10 minutes after the producers: a backlog of 9.7 million records.
        simulation.start_us = 600_000_000;
        // Five times the capacity: the first batch takes a full second, five intervals.
        let observed = simulation.run(backpressure(Some(50_000), None), 200);
        assert_eq!(
            observed[0].records,
            50_000 / 5,
            "initial rate × interval bounds batch 1"
        );
        // No batch waits longer than the first one took (1 s of records plus overhead and 5%).
        let first_batch_us = 1_100_000;
        assert!(
            observed
                .iter()
                .all(|b| b.scheduling_delay_us < first_batch_us)
        );
        assert_converges(&observed, capacity, interval, "after downtime");
    }

    #[test]
    fn max_rate_per_partition_always_holds_under_backpressure() {
        let interval = Duration::from_millis(250);
        let capacity = 40_000;
        // The hot partition alone would take most of the capacity by lag.
        let mut simulation = Simulation::new(capacity, vec![30_000, 2_000, 2_000, 500], interval);
        let observed = simulation.run(backpressure(Some(100_000), Some(12_000)), 200);
        assert_caps_honour_limits(&observed, Some(3_000));
        assert!(
            observed
                .iter()
                .all(|b| b.caps[0] == Some(3_000) || b.lags[0] < 3_000)
        );
    }

    fn lags_strategy() -> impl Strategy<Value = Vec<u64>> {
        prop::collection::vec(
            prop_oneof![Just(0u64), 1..10u64, 1..1_000_000u64, Just(u64::MAX / 2)],
            0..24,
        )
    }

    proptest! {
        #[test]
        fn split_gives_lagging_partitions_at_least_one_and_sums_to_the_budget(
            lags in lags_strategy(),
            total in prop_oneof![0..50u64, 0..10_000_000u64, Just(u64::MAX)],
        ) {
            let shares = split_by_lag(total, &lags);
            prop_assert_eq!(shares.len(), lags.len());
            let lagging = lags.iter().filter(|&&lag| lag > 0).count();
            let budget = u128::from(total).max(u128::try_from(lagging).unwrap());
            let total_lag: u128 = lags.iter().map(|&lag| u128::from(lag)).sum();
            let sum: u128 = shares.iter().map(|&share| u128::from(share)).sum();
            if lagging == 0 {
                prop_assert_eq!(sum, 0);
            } else {
                prop_assert_eq!(sum, budget);
            }
            for (&share, &lag) in shares.iter().zip(&lags) {
                if lag == 0 {
                    prop_assert_eq!(share, 0);
                } else {
                    prop_assert!(share >= 1);
                }
                if budget <= total_lag {
                    prop_assert!(share <= lag, "share {} above lag {}", share, lag);
                }
                // Proportional up to the rounding and the starvation guard.
                // Proportional up to rounding (+1) and the starvation guard (-1 per lift).
                let exact = u128::from(lag) * budget / total_lag.max(1);
                let share = u128::from(share);
                prop_assert!(share + u128::try_from(lagging).unwrap() >= exact);
                prop_assert!(share <= exact + 1);
            }
        }

        #[test]
        fn caps_honour_max_rate_and_never_starve(
            lags in lags_strategy(),
            max_rate in prop::option::of(20..100_000u64),
            initial_rate in prop::option::of(1..1_000_000u64),
            backpressure in any::<bool>(),
            interval_ms in 50..5_000u64,
        ) {
            let interval = Duration::from_millis(interval_ms);
            let config = RateConfig {
                max_rate_per_partition: max_rate,
                backpressure,
                initial_rate,
                ..RateConfig::default()
            };
            let controller = RateController::new(config, interval).unwrap();
            let lag_map: BTreeMap<_, _> = lags
                .iter()
                .enumerate()
                .map(|(p, &lag)| (tp(i32::try_from(p).unwrap()), lag))
                .collect();
            let caps = controller.caps(&lag_map, interval);
            prop_assert_eq!(caps.len(), lag_map.len());
            let per_batch_max = max_rate.map(|rate| records_per_batch(rate, interval));
            let mut sum = 0u128;
            for (tp, cap) in &caps {
                if let Some(max) = per_batch_max {
                    prop_assert!(cap.is_some_and(|cap| cap <= max));
                }
                if lag_map[tp] > 0 {
                    prop_assert!(cap.is_none_or(|cap| cap >= 1));
                }
                sum += u128::from(cap.unwrap_or(0));
            }
            if let Some(rate) = controller.rate() {
                let lagging = lags.iter().filter(|&&lag| lag > 0).count();
                let budget = u128::from(records_in(rate, interval)).max(u128::try_from(lagging).unwrap());
                prop_assert!(sum <= budget);
            }
        }
    }
}
