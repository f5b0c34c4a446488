//! Operator semantics against references computed here, batch by batch on synthetic plans (no
//! Kafka): keyed counts, running state, windows whose slide is not the batch interval, the
//! inverse path against the plain one, and state carried over a save and restore as a crash
//! would.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proptest::prelude::*;

use super::graph::{BatchInput, Graph};
use super::{DStream, StreamConfig, StreamingContext};
use crate::plan::{BatchPlan, BatchTime, OffsetRange, TopicPartition};
use crate::source::{PartitionBatch, Record};

const TOPIC: &str = "words";
const INTERVAL: u64 = 100;

/// What an output saw: each batch time with its items.
type Seen<T> = Arc<Mutex<Vec<(i64, Vec<T>)>>>;

fn collect<T: super::Data>(stream: &DStream<T>) -> Seen<T> {
    let seen: Seen<T> = Arc::default();
    let sink = Arc::clone(&seen);
    stream.foreach_batch(move |t, items| {
        sink.lock().unwrap().push((t.as_millis(), items));
        Ok(())
    });
    seen
}

fn context() -> StreamingContext {
    let mut config = StreamConfig::new("test", "127.0.0.1:1");
    config.output_partitions = 3;
    StreamingContext::new(config, Duration::from_millis(INTERVAL))
}

/// Feeds batches of words over two Kafka partitions, keeping offsets contiguous.
#[derive(Default)]
struct Feeder {
    next: BTreeMap<i32, i64>,
}

impl Feeder {
    /// The plan and records of batch `n`: `words[p]` go to partition `p`.
    fn batch(&mut self, n: i64, words: &[Vec<&str>; 2]) -> (BatchPlan, Vec<PartitionBatch>) {
        let mut ranges = Vec::new();
        let mut input = Vec::new();
        for (p, words) in (0..).zip(words) {
            let from = *self.next.get(&p).unwrap_or(&0);
            let records: Vec<Record> = (from..)
                .zip(words)
                .map(|(offset, word)| Record {
                    offset,
                    timestamp: None,
                    key: None,
                    value: Some(word.as_bytes().to_vec()),
                    headers: Vec::new(),
                })
                .collect();
            let until = from + i64::try_from(records.len()).unwrap();
            self.next.insert(p, until);
            let range = OffsetRange::new(TopicPartition::new(TOPIC, p), from, until);
            ranges.push(range.clone());
            input.push(PartitionBatch { range, records });
        }
        let t = BatchTime::from_millis(n * i64::try_from(INTERVAL).unwrap());
        (BatchPlan::new(t, ranges), input)
    }
}

fn run(graph: &mut Graph, plan: &BatchPlan, records: &[PartitionBatch]) {
    let writes = graph
        .run(&BatchInput {
            batch_time: plan.batch_time,
            plan,
            records,
        })
        .unwrap();
    assert!(writes.is_empty());
}

/// Batches of words from a small vocabulary, two partitions each; some batches are empty.
fn batches() -> impl Strategy<Value = Vec<[Vec<&'static str>; 2]>> {
    let word = prop::sample::select(vec!["a", "b", "c", "d", "e"]);
    let partition = prop::collection::vec(word, 0..6);
    prop::collection::vec([partition.clone(), partition], 1..30)
}

fn words_of(batch: &[Vec<&str>; 2]) -> impl Iterator<Item = String> {
    batch.iter().flatten().map(|w| (*w).to_owned())
}

fn counts<'a>(words: impl Iterator<Item = &'a [Vec<&'static str>; 2]>) -> Vec<(String, u64)> {
    let mut out: BTreeMap<String, u64> = BTreeMap::new();
    for batch in words {
        for word in words_of(batch) {
            *out.entry(word).or_default() += 1;
        }
    }
    out.into_iter().collect()
}

fn sorted<T: Ord>(mut items: Vec<T>) -> Vec<T> {
    items.sort();
    items
}

/// Runs `input` through a graph built by `build`, restarting from a saved state after batch
/// `restart_after` (as recovery does), and returns what the output saw.
fn run_all<T: super::Data>(
    input: &[[Vec<&'static str>; 2]],
    restart_after: Option<usize>,
    build: impl Fn(DStream<String>) -> DStream<T>,
) -> Vec<(i64, Vec<T>)> {
    let build_graph = || {
        let ssc = context();
        let seen = collect(&build(ssc.kafka_direct_stream::<String>(&[TOPIC])));
        (ssc.take_graph(), seen)
    };
    let (mut graph, seen) = build_graph();
    let mut all = Vec::new();
    let mut feeder = Feeder::default();
    for (n, batch) in (1..).zip(input) {
        let (plan, records) = feeder.batch(n, batch);
        run(&mut graph, &plan, &records);
        if restart_after == Some(usize::try_from(n).unwrap()) {
            let (state, failed) = graph.save();
            assert!(failed.is_none());
            all.append(&mut seen.lock().unwrap());
            let (fresh, fresh_seen) = build_graph();
            graph = fresh;
            graph.load(state).unwrap();
            return [
                all,
                run_rest(&mut graph, &mut feeder, n, input, &fresh_seen),
            ]
            .concat();
        }
    }
    all.append(&mut seen.lock().unwrap());
    all
}

fn run_rest<T: super::Data>(
    graph: &mut Graph,
    feeder: &mut Feeder,
    done: i64,
    input: &[[Vec<&'static str>; 2]],
    seen: &Seen<T>,
) -> Vec<(i64, Vec<T>)> {
    let skip = usize::try_from(done).unwrap();
    for (n, batch) in (done + 1..).zip(&input[skip..]) {
        let (plan, records) = feeder.batch(n, batch);
        run(graph, &plan, &records);
    }
    std::mem::take(&mut *seen.lock().unwrap())
}

fn pairs(words: DStream<String>) -> DStream<(String, u64)> {
    words.map(|w| (w, 1_u64))
}

/// The reference of a window of `window` batches ending at every multiple of `slide` batches.
fn windows(
    input: &[[Vec<&'static str>; 2]],
    window: usize,
    slide: usize,
) -> Vec<(i64, Vec<(String, u64)>)> {
    (1..=input.len())
        .filter(|n| n % slide == 0)
        .map(|n| {
            let from = n.saturating_sub(window);
            let t = i64::try_from(n).unwrap() * i64::try_from(INTERVAL).unwrap();
            (t, counts(input[from..n].iter()))
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn reduce_by_key_counts_each_batch(input in batches()) {
        let seen = run_all(&input, None, |w| pairs(w).reduce_by_key(|a, b| a + b));
        prop_assert_eq!(seen.len(), input.len());
        for ((_, got), batch) in seen.into_iter().zip(&input) {
            prop_assert_eq!(sorted(got), counts(std::iter::once(batch)));
        }
    }

    #[test]
    fn count_by_value_equals_reduce_by_key(input in batches()) {
        let a = run_all(&input, None, |w| w.count_by_value());
        let b = run_all(&input, None, |w| pairs(w).reduce_by_key(|a, b| a + b));
        prop_assert_eq!(a, b);
    }

    #[test]
    fn update_state_by_key_keeps_running_totals_across_a_restart(
        input in batches(),
        restart in 0_usize..30,
    ) {
        let total = |w: DStream<String>| {
            pairs(w).update_state_by_key(|new: &[u64], old: Option<u64>| {
                Some(old.unwrap_or(0) + new.iter().sum::<u64>())
            })
        };
        let plain = run_all(&input, None, total);
        let restarted = run_all(&input, Some(restart.min(input.len())), total);
        prop_assert_eq!(&plain, &restarted);
        for (n, (_, got)) in plain.into_iter().enumerate() {
            prop_assert_eq!(sorted(got), counts(input[..=n].iter()));
        }
    }

    #[test]
    fn windows_with_a_slide_unlike_the_interval(input in batches(), restart in 0_usize..30) {
        // Window 5 batches, slide 2 batches.
        let (w, s) = (Duration::from_millis(500), Duration::from_millis(200));
        let plain = |words: DStream<String>| {
            pairs(words).reduce_by_key_and_window(|a, b| a + b, w, s)
        };
        let inverse = |words: DStream<String>| {
            pairs(words).reduce_by_key_and_window_inv(|a, b| a + b, |a, b| a - b, w, s)
        };
        let reference = windows(&input, 5, 2);
        let got: Vec<_> = run_all(&input, None, plain)
            .into_iter()
            .map(|(t, items)| (t, sorted(items)))
            .collect();
        prop_assert_eq!(&got, &reference);
        let restart = Some(restart.min(input.len()));
        for path in [run_all(&input, None, inverse), run_all(&input, restart, inverse), run_all(&input, restart, plain)] {
            let path: Vec<_> = path.into_iter().map(|(t, items)| (t, sorted(items))).collect();
            prop_assert_eq!(&path, &reference);
        }
    }

    #[test]
    fn window_and_count_by_window(input in batches(), restart in 0_usize..30) {
        let (w, s) = (Duration::from_millis(300), Duration::from_millis(200));
        let reference = windows(&input, 3, 2);
        let items = run_all(&input, Some(restart.min(input.len())), |words| {
            words.window(w, s).count_by_value()
        });
        let items: Vec<_> = items.into_iter().map(|(t, i)| (t, sorted(i))).collect();
        prop_assert_eq!(&items, &reference);
        let counted = run_all(&input, Some(restart.min(input.len())), |words| words.count_by_window(w, s));
        let expected: Vec<(i64, Vec<u64>)> = reference
            .iter()
            .map(|(t, c)| (*t, vec![c.iter().map(|(_, n)| n).sum()]))
            .collect();
        prop_assert_eq!(counted, expected);
    }
}

#[test]
fn stateless_operators_keep_partitions_and_order() {
    let input = [[vec!["a b", "c"], vec!["d"]], [vec![], vec!["e f g"]]];
    let seen = run_all(&input, None, |lines| {
        lines
            .flat_map(|l| l.split(' ').map(str::to_owned).collect::<Vec<_>>())
            .filter(|w| w != "c")
            .union(&lines.map(|l| l.to_uppercase()))
    });
    assert_eq!(
        seen,
        vec![
            (
                100,
                ["a", "b", "A B", "C", "d", "D"].map(String::from).to_vec()
            ),
            (200, ["e", "f", "g", "E F G"].map(String::from).to_vec()),
        ]
    );
    let whole = run_all(&input, None, |lines| {
        lines.transform(|t, items| vec![format!("{t}:{}", items.join("|"))])
    });
    assert_eq!(whole[0].1, vec!["100:a b|c|d".to_owned()]);
}

#[test]
fn a_changed_state_type_is_reported() {
    let mut feeder = Feeder::default();
    let ssc = context();
    let _ = pairs(ssc.kafka_direct_stream::<String>(&[TOPIC]))
        .update_state_by_key(|n: &[u64], s: Option<u64>| Some(s.unwrap_or(0) + n.len() as u64))
        .with_state_id("totals");
    let mut graph = ssc.take_graph();
    let (plan, records) = feeder.batch(1, &[vec!["a"], vec![]]);
    run(&mut graph, &plan, &records);
    let (state, _) = graph.save();

    let ssc = context();
    let _ = pairs(ssc.kafka_direct_stream::<String>(&[TOPIC]))
        .update_state_by_key(|_: &[u64], s: Option<String>| s)
        .with_state_id("totals");
    let mut changed = ssc.take_graph();
    let (id, message) = changed.load(state).unwrap_err();
    assert_eq!(id, "totals");
    assert!(
        message.contains("types [alloc::string::String, u64]")
            && message.contains("[alloc::string::String, alloc::string::String]")
            && message.contains("with_schema_version"),
        "{message}"
    );
}
