//! The seed programs of `examples/`, run against the real broker with a 100 ms batch interval,
//! each output checked exactly against a reference computed here from the lines each batch read.

use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Result, ensure};

use crate::common::TestEnv;
use crate::stream_support::{
    Collected, Program, lines_in_window, produce_lines, sample_lines, word_counts,
};

#[allow(dead_code, unreachable_pub)]
#[path = "../../examples/wordcount.rs"]
mod wordcount;

#[allow(dead_code, unreachable_pub)]
#[path = "../../examples/update_state_by_key_word_count.rs"]
mod update_state_by_key_word_count;

#[allow(dead_code, unreachable_pub)]
#[path = "../../examples/window_hot_word.rs"]
mod window_hot_word;

#[allow(dead_code, unreachable_pub)]
#[path = "../../examples/transform_blacklist.rs"]
mod transform_blacklist;

#[allow(dead_code, unreachable_pub)]
#[path = "../../examples/top3_hot_product.rs"]
mod top3_hot_product;

const PARTITIONS: i32 = 2;

/// A fresh topic holding `lines`, and a program over it reading at most `per_batch` records per
/// partition and batch.
async fn setup(
    prefix: &str,
    lines: &[String],
    per_batch: u64,
) -> Result<(crate::common::TestTopic, Program)> {
    let env = TestEnv::get().await;
    let topic = env.topic(prefix, PARTITIONS).await?;
    produce_lines(&env.producer()?, &topic, PARTITIONS, lines).await?;
    let mut program = Program::new(env, prefix, &topic, per_batch);
    program.lines = lines.len();
    Ok((topic, program))
}

fn sorted<T: Ord>(mut items: Vec<T>) -> Vec<T> {
    items.sort();
    items
}

#[tokio::test(flavor = "multi_thread")]
async fn wordcount_counts_each_batch() -> Result<()> {
    let lines = sample_lines(200);
    let (_topic, program) = setup("stream-wordcount", &lines, 30).await?;
    let dir = tempfile::tempdir()?;
    let (input, output) = (Collected::default(), Collected::default());
    program
        .run(dir.path(), &input, |lines| {
            output.attach(&wordcount::word_counts(lines), |_| {});
        })
        .await?;
    let input = input.batches()?;
    let output = output.batches()?;
    ensure!(
        input.len() >= 4,
        "the cap should spread 200 lines over batches: {}",
        input.len()
    );
    for (t, lines) in &input {
        let expected: Vec<(String, u64)> = word_counts(lines).into_iter().collect();
        let got = sorted(output.get(t).cloned().unwrap_or_default());
        ensure!(got == expected, "batch {t}: {got:?} != {expected:?}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn update_state_by_key_keeps_running_totals() -> Result<()> {
    let lines = sample_lines(150);
    let (_topic, program) = setup("stream-totals", &lines, 25).await?;
    let dir = tempfile::tempdir()?;
    let (input, output) = (Collected::default(), Collected::default());
    program
        .run(dir.path(), &input, |lines| {
            output.attach(
                &update_state_by_key_word_count::running_counts(lines),
                |_| {},
            );
        })
        .await?;
    let input = input.batches()?;
    let output = output.batches()?;
    let mut seen: Vec<String> = Vec::new();
    for (t, lines) in &input {
        seen.extend(lines.iter().cloned());
        let expected: Vec<(String, u64)> = word_counts(&seen).into_iter().collect();
        let got = sorted(output.get(t).cloned().unwrap_or_default());
        ensure!(got == expected, "batch {t}: {got:?} != {expected:?}");
    }
    ensure!(
        seen.len() == lines.len(),
        "read {} of {} lines",
        seen.len(),
        lines.len()
    );
    Ok(())
}

/// The top 3 of `counts` by count descending, then by key.
fn top3<K: Ord + Clone>(counts: BTreeMap<K, u64>) -> Vec<(K, u64)> {
    let mut all: Vec<(K, u64)> = counts.into_iter().collect();
    all.sort_by_key(|(k, c)| (Reverse(*c), k.clone()));
    all.truncate(3);
    all
}

#[tokio::test(flavor = "multi_thread")]
async fn window_hot_word_gives_the_top_3_of_each_window() -> Result<()> {
    let words = ["spark", "weir", "kafka", "flink", "storm"];
    let lines: Vec<String> = (0..300)
        .map(|i| format!("user{} {}", i % 13, words[(i * i + i / 7) % words.len()]))
        .collect();
    let (_topic, program) = setup("stream-hot-words", &lines, 10).await?;
    let dir = tempfile::tempdir()?;
    let (window, slide) = (Duration::from_millis(600), Duration::from_millis(200));
    let (input, output) = (Collected::default(), Collected::default());
    program
        .run(dir.path(), &input, |lines| {
            output.attach(&window_hot_word::hot_words(lines, window, slide), |_| {});
        })
        .await?;
    let input = input.batches()?;
    let output = output.batches()?;
    ensure!(!output.is_empty(), "no window was emitted");
    for (t, got) in &output {
        ensure!(t % 200 == 0, "a window at {t}, off the slide");
        let searched: Vec<String> = lines_in_window(&input, *t, window)
            .iter()
            .filter_map(|l| l.split_whitespace().nth(1).map(str::to_owned))
            .collect();
        let expected = top3(word_counts(&searched));
        ensure!(
            *got == expected,
            "window ending {t}: {got:?} != {expected:?}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn transform_blacklist_drops_blacklisted_users() -> Result<()> {
    let users = ["tom", "leo", "jack", "tom", "mary"];
    let lines: Vec<String> = (0..100)
        .map(|i| format!("2026010{} {}", i % 9, users[i % users.len()]))
        .collect();
    let (_topic, program) = setup("stream-blacklist", &lines, 20).await?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("blacklist.txt");
    std::fs::write(&file, transform_blacklist::SEED_BLACKLIST)?;
    let blacklist = transform_blacklist::blacklist(&file, Duration::from_millis(500));
    let checkpoint = dir.path().join("checkpoint");
    let (input, output) = (Collected::default(), Collected::default());
    program
        .run(&checkpoint, &input, |lines| {
            output.attach(
                &transform_blacklist::valid_clicks(lines, &blacklist),
                |_| {},
            );
        })
        .await?;
    for (t, lines) in input.batches()? {
        let expected: Vec<String> = lines.into_iter().filter(|l| !l.ends_with(" tom")).collect();
        let got = output.batches()?.get(&t).cloned().unwrap_or_default();
        ensure!(got == expected, "batch {t}: {got:?} != {expected:?}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn top3_hot_product_ranks_each_category() -> Result<()> {
    let products = [
        ("phone", "p1"),
        ("phone", "p2"),
        ("phone", "p3"),
        ("phone", "p4"),
        ("book", "b1"),
        ("book", "b2"),
    ];
    let lines: Vec<String> = (0..240)
        .map(|i| {
            let (category, product) = products[(i * 5 + i / 11) % products.len()];
            format!("u{} {product} {category}", i % 17)
        })
        .collect();
    let (_topic, program) = setup("stream-top3", &lines, 10).await?;
    let dir = tempfile::tempdir()?;
    let (window, slide) = (Duration::from_millis(500), Duration::from_millis(300));
    let (input, output) = (Collected::default(), Collected::default());
    program
        .run(dir.path(), &input, |lines| {
            let top = top3_hot_product::top3_per_category(lines, window, slide);
            output.attach(&top, |_| {});
        })
        .await?;
    let input = input.batches()?;
    let output = output.batches()?;
    ensure!(!output.is_empty(), "no window was emitted");
    for (t, got) in &output {
        let mut by_category: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
        for line in lines_in_window(&input, *t, window) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            *by_category
                .entry(fields[2].to_owned())
                .or_default()
                .entry(fields[1].to_owned())
                .or_default() += 1;
        }
        let expected: Vec<(String, String, u64)> = by_category
            .into_iter()
            .flat_map(|(category, counts)| {
                top3(counts)
                    .into_iter()
                    .map(move |(product, n)| (category.clone(), product, n))
            })
            .collect();
        ensure!(
            *got == expected,
            "window ending {t}: {got:?} != {expected:?}"
        );
    }
    Ok(())
}
