//! Operator semantics against references computed here, batch by batch on synthetic plans (no
//! Kafka): keyed counts, running state, windows whose slide is not the batch interval, the
//! inverse path against the plain one, state carried over a save and restore as a crash
//! would, persisted streams computed once (and spilled), and reference tables refreshed on
//! their grid and replayed from their saved versions.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proptest::prelude::*;

use super::graph::{BatchInput, Graph};
use super::{DStream, ReferenceTable, StorageLevel, StreamConfig, StreamingContext};
use crate::batch::{PartitionBatch, Record};
use crate::plan::{BatchPlan, BatchTime, OffsetRange, TopicPartition};

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
            let state = graph.save().unwrap();
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
    let state = graph.save().unwrap();

    let ssc = context();
    let _ = pairs(ssc.kafka_direct_stream::<String>(&[TOPIC]))
        .update_state_by_key(|_: &[u64], s: Option<String>| s)
        .with_state_id("totals");
    let mut changed = ssc.take_graph();
    let (id, message) = changed.load(state).unwrap_err();
    assert_eq!(id, "totals");
    assert!(
        message.contains("cannot be decoded as")
            && message.contains("alloc::string::String")
            && message.contains("with_schema_version"),
        "{message}"
    );
}

/// What the outputs of [`persisted_outputs`] saw.
struct PersistRun {
    /// Calls of the map function before the persisted stream.
    calls: u64,
    /// Items read from Kafka.
    items: u64,
    /// Both outputs, batch by batch.
    outputs: [Vec<(i64, Vec<String>)>; 2],
    /// Spill files present while the first output ran, batch by batch.
    spill_files: Vec<usize>,
    /// Spill files left after the last batch.
    left: usize,
}

fn spill_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir).map_or(0, Iterator::count)
}

/// Runs `input` through a map, persisted at `level` and read by two outputs.
fn persisted_outputs(input: &[[Vec<&'static str>; 2]], level: StorageLevel) -> PersistRun {
    let checkpoint = tempfile::tempdir().unwrap();
    let spill = checkpoint.path().join("spill");
    let calls = Arc::new(AtomicU64::new(0));
    let ssc = context();
    let counted = Arc::clone(&calls);
    let upper = ssc
        .kafka_direct_stream::<String>(&[TOPIC])
        .map(move |line| {
            counted.fetch_add(1, Ordering::SeqCst);
            line.to_uppercase()
        })
        .persist_with(level);
    let (first, seen_spills) = (Seen::default(), Arc::new(Mutex::new(Vec::new())));
    let (out, spills, dir) = (Arc::clone(&first), Arc::clone(&seen_spills), spill.clone());
    upper.foreach_batch(move |t, items| {
        spills.lock().unwrap().push(spill_files(&dir));
        out.lock().unwrap().push((t.as_millis(), items));
        Ok(())
    });
    let second = collect(&upper);
    let mut graph = ssc.take_graph();
    graph.checkpoint_dir = Some(checkpoint.path().to_path_buf());
    let mut feeder = Feeder::default();
    for (n, batch) in (1..).zip(input) {
        let (plan, records) = feeder.batch(n, batch);
        run(&mut graph, &plan, &records);
    }
    let items = input.iter().flatten().flatten().count();
    let outputs = [first, second].map(|seen| std::mem::take(&mut *seen.lock().unwrap()));
    let spill_files_seen = std::mem::take(&mut *seen_spills.lock().unwrap());
    PersistRun {
        calls: calls.load(Ordering::SeqCst),
        items: u64::try_from(items).unwrap(),
        outputs,
        spill_files: spill_files_seen,
        left: spill_files(&spill),
    }
}

#[test]
fn a_persisted_stream_is_computed_once_and_large_batches_go_through_disk() {
    let input = [
        [vec!["a b", "c"], vec!["d"]],
        [vec![], vec![]],
        [vec!["e f g"], vec!["h", "i", "j"]],
    ];
    let memory = persisted_outputs(&input, StorageLevel::Memory);
    let tiny = persisted_outputs(
        &input,
        StorageLevel::MemoryAndDisk {
            max_in_memory_bytes: 1,
        },
    );
    let roomy = persisted_outputs(
        &input,
        StorageLevel::MemoryAndDisk {
            max_in_memory_bytes: 1 << 20,
        },
    );
    for path in [&memory, &tiny, &roomy] {
        assert_eq!(path.calls, path.items, "one call of map per item");
        assert_eq!(path.outputs[0], path.outputs[1]);
        assert_eq!(path.outputs, memory.outputs);
        assert_eq!(path.left, 0, "spill files are removed after the batch");
    }
    assert_eq!(memory.outputs[0][0].1, ["A B", "C", "D"]);
    assert_eq!(
        tiny.spill_files,
        vec![1, 1, 1],
        "every batch went through disk"
    );
    assert_eq!(
        roomy.spill_files,
        vec![0, 0, 0],
        "small batches stay in memory"
    );
}

/// A reference table read from a file, and what each batch saw of it.
struct Blacklist {
    file: tempfile::NamedTempFile,
    checkpoint: tempfile::TempDir,
}

impl Blacklist {
    fn new() -> Self {
        Self {
            file: tempfile::NamedTempFile::new().unwrap(),
            checkpoint: tempfile::tempdir().unwrap(),
        }
    }

    fn set(&self, text: &str) {
        std::fs::write(self.file.path(), text).unwrap();
    }

    fn table(&self) -> ReferenceTable<String, bool> {
        ReferenceTable::from_file("blacklist", self.file.path(), |line| {
            let (user, blocked) = line.split_once(' ').ok_or("expected `<user> <bool>`")?;
            Ok(Some((user.to_owned(), blocked.parse::<bool>()?)))
        })
        .refresh_every(Duration::from_millis(2 * INTERVAL))
    }

    /// A program that outputs, every batch, the users blocked in the version it used.
    fn program(&self) -> (Graph, Seen<String>) {
        let ssc = context();
        let blocked = ssc.kafka_direct_stream::<String>(&[TOPIC]).transform_with(
            &self.table(),
            |_, _, table| {
                table
                    .iter()
                    .filter(|(_, blocked)| **blocked)
                    .map(|(user, _)| user.clone())
                    .collect()
            },
        );
        let seen = collect(&blocked);
        let mut graph = ssc.take_graph();
        graph.checkpoint_dir = Some(self.checkpoint.path().to_path_buf());
        (graph, seen)
    }

    fn versions(&self) -> Vec<String> {
        let mut names: Vec<String> =
            std::fs::read_dir(self.checkpoint.path().join("reference/blacklist"))
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
        names.sort();
        names
    }
}

/// Runs batch `n` of `graph`, its reference tables first, as the job does.
async fn run_with_references(
    graph: &mut Graph,
    dir: &std::path::Path,
    n: i64,
) -> crate::Result<()> {
    let t = BatchTime::from_millis(n * i64::try_from(INTERVAL).unwrap());
    super::reference::prepare_all(&graph.references, dir, t).await?;
    let plan = BatchPlan::new(t, Vec::new());
    graph
        .run(&BatchInput {
            batch_time: t,
            plan: &plan,
            records: &[],
        })
        .map(|_| ())
}

fn blocked_by_batch(seen: &Seen<String>) -> Vec<(i64, String)> {
    std::mem::take(&mut *seen.lock().unwrap())
        .into_iter()
        .map(|(t, users)| (t, users.join(",")))
        .collect()
}

#[tokio::test]
async fn a_reference_table_refreshes_on_its_grid_and_replays_use_the_saved_version() {
    let blacklist = Blacklist::new();
    let dir = blacklist.checkpoint.path();
    let (mut graph, seen) = blacklist.program();
    let changes = [(1, "tom true"), (2, "tom true\nleo true"), (3, "leo true")];
    blacklist.set("tom true\nleo false");
    for n in 1..=4 {
        run_with_references(&mut graph, dir, n).await.unwrap();
        if let Some((_, text)) = changes.iter().find(|(after, _)| *after == n) {
            blacklist.set(text);
        }
    }
    // Loaded at 100 (the first batch), then at 200 and 400 (every 200 ms); 300 keeps 200's.
    let expected = [(100, "tom"), (200, "tom"), (300, "tom"), (400, "leo")];
    let expected: Vec<(i64, String)> = expected.map(|(t, u)| (t, u.to_owned())).to_vec();
    assert_eq!(blocked_by_batch(&seen), expected);
    assert_eq!(
        blacklist.versions(),
        ["100.version", "200.version", "400.version"]
    );

    // A restart replays 300 and 400 while the file says something else: the saved versions win.
    blacklist.set("mary true");
    let (mut graph, seen) = blacklist.program();
    for n in 3..=6 {
        run_with_references(&mut graph, dir, n).await.unwrap();
    }
    let expected = [(300, "tom"), (400, "leo"), (500, "leo"), (600, "mary")];
    let expected: Vec<(i64, String)> = expected.map(|(t, u)| (t, u.to_owned())).to_vec();
    assert_eq!(blocked_by_batch(&seen), expected);

    // A snapshot at 450 means no replay needs a version older than 400's.
    std::fs::write(dir.join("snapshot-450.ckpt"), b"").unwrap();
    // A bad line at a refresh keeps the version in force, saved as the version of 800.
    blacklist.set("mary maybe");
    for n in 7..=8 {
        run_with_references(&mut graph, dir, n).await.unwrap();
    }
    let expected: Vec<(i64, String)> = [(700, "mary"), (800, "mary")]
        .map(|(t, u)| (t, u.to_owned()))
        .to_vec();
    assert_eq!(blocked_by_batch(&seen), expected);
    assert_eq!(
        blacklist.versions(),
        ["400.version", "600.version", "800.version"]
    );
}

#[tokio::test]
async fn a_reference_table_that_cannot_be_loaded_the_first_time_fails_the_batch() {
    let blacklist = Blacklist::new();
    blacklist.set("tom true\njerry perhaps\n");
    let (mut graph, _seen) = blacklist.program();
    let e = run_with_references(&mut graph, blacklist.checkpoint.path(), 1)
        .await
        .unwrap_err()
        .to_string();
    let line = format!("{}:2:", blacklist.file.path().display());
    assert!(
        e.contains("reference table \"blacklist\"") && e.contains(&line),
        "{e}"
    );
}

#[test]
fn reference_tables_are_checked_when_the_program_is_built() {
    let ssc = context();
    let lines = ssc.kafka_direct_stream::<String>(&[TOPIC]);
    let table = |id: &str| {
        ReferenceTable::from_file(id, "/nonexistent", |l: &str| Ok(Some((l.to_owned(), ()))))
    };
    let _ = lines
        .map(|l| (l, 1))
        .left_outer_join_reference(&table("t").refresh_every(Duration::from_millis(150)));
    let _ = lines.transform_with(&table(".."), |_, items, _| items);
    let _ = lines.transform_with(&table("t"), |_, items, _| items);
    let bound = table("u").bind(crate::sink::SqlValue::Boolean(true));
    let _ = lines.transform_with(&bound, |_, items, _| items);
    let graph = ssc.take_graph();
    let errors: Vec<String> = graph.errors.iter().map(ToString::to_string).collect();
    assert_eq!(errors.len(), 4, "{errors:?}");
    assert!(errors[0].contains("not a positive multiple of the batch interval"));
    assert!(errors[1].contains("must be 1 to 100"));
    assert!(errors[2].contains("two reference tables have this id"));
    assert!(errors[3].contains("bind applies to tables read with from_sql"));
}

/// A state type as the first build of a program declares it.
mod first_build {
    #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
    pub(super) struct Total {
        pub(super) words: u64,
    }
}

/// The same state after the type was renamed and moved to another module.
mod second_build {
    pub(super) mod renamed {
        #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
        pub(in super::super) struct WordTotal {
            pub(in super::super) words: u64,
        }
    }
}

/// A program whose state is `S` under id `totals` at schema `version`, and its checkpoint
/// identity.
fn totals_program<S: super::Persist>(
    version: u32,
    make: fn(u64) -> S,
    words: fn(&S) -> u64,
) -> (
    Graph,
    crate::checkpoint::PipelineIdentity,
    Seen<(String, S)>,
) {
    let ssc = context();
    let totals = pairs(ssc.kafka_direct_stream::<String>(&[TOPIC]))
        .update_state_by_key(move |new: &[u64], old: Option<S>| {
            Some(make(
                old.as_ref().map_or(0, words) + new.iter().sum::<u64>(),
            ))
        })
        .with_state_id("totals")
        .with_schema_version(version);
    let seen = collect(&totals);
    let mut config = StreamConfig::new("test", "127.0.0.1:1");
    config.output_partitions = 3;
    config.source.topics = vec![TOPIC.to_owned()];
    let graph = ssc.take_graph();
    let identity = super::context::identity(&config, &graph);
    (graph, identity, seen)
}

#[test]
fn a_renamed_or_moved_state_type_resumes_and_a_new_schema_version_is_refused() {
    use crate::checkpoint::{CheckpointStore, Recovery, Snapshot};
    use first_build::Total;
    use second_build::renamed::WordTotal;

    let dir = tempfile::tempdir().unwrap();
    let mut feeder = Feeder::default();
    let (mut before, identity, _) = totals_program(1, |words| Total { words }, |t| t.words);
    let (plan, records) = feeder.batch(1, &[vec!["a", "b"], vec!["a"]]);
    run(&mut before, &plan, &records);
    let state = before.save().unwrap();
    let mut store = CheckpointStore::open(dir.path()).unwrap();
    assert_eq!(store.recover(&identity).unwrap(), Recovery::Fresh);
    let mut snapshot = Snapshot::initial(
        identity.clone(),
        Duration::from_millis(INTERVAL),
        plan.batch_time,
        plan.end_positions(),
    );
    snapshot.operator_state = state;
    store.write_snapshot(&snapshot).unwrap();
    drop(store);

    // The type renamed and moved, the same id and version: the same checkpoint identity, and
    // the state resumes.
    let (mut after, renamed_identity, seen) =
        totals_program(1, |words| WordTotal { words }, |t| t.words);
    assert_eq!(renamed_identity, identity);
    assert_eq!(renamed_identity.fingerprint(), identity.fingerprint());
    let Recovery::Resume { snapshot, .. } = CheckpointStore::open(dir.path())
        .unwrap()
        .recover(&renamed_identity)
        .unwrap()
    else {
        panic!("the checkpoint should resume");
    };
    after.load(snapshot.operator_state).unwrap();
    let (plan, records) = feeder.batch(2, &[vec!["b"], vec![]]);
    run(&mut after, &plan, &records);
    let totals: Vec<(String, u64)> = seen.lock().unwrap()[0]
        .1
        .iter()
        .map(|(word, total)| (word.clone(), total.words))
        .collect();
    assert_eq!(
        sorted(totals),
        vec![("a".to_owned(), 2), ("b".to_owned(), 2)]
    );

    // A new declared version: refused before any state is decoded, with the way forward.
    let (_, next_version, _) = totals_program(2, |words| WordTotal { words }, |t| t.words);
    assert_ne!(next_version.fingerprint(), identity.fingerprint());
    let error = CheckpointStore::open(dir.path())
        .unwrap()
        .recover(&next_version)
        .unwrap_err();
    assert!(
        matches!(error, crate::Error::FingerprintMismatch { .. }),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains("operator \"totals\" state schema 1 -> 2")
            && message.contains("weir checkpoint reset --keep-offsets"),
        "{message}"
    );
}
