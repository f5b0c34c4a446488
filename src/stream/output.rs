//! Output operators that call user code: `foreach_batch`, `foreach_partition` and `print`.
//!
//! They run once per batch time, and again when a batch is replayed after a crash: their effects
//! are at-least-once unless they are idempotent in `(batch_time, partition)`, which is what they
//! are given. For exactly-once into a database use [`DStream::sink`].

use std::fmt::{Debug, Write as _};
use std::io::Write as _;

use crate::error::{Error, Result};
use crate::plan::BatchTime;

use super::dstream::{BoxError, DStream, Data, PartitionContext};
use super::graph::{Batch, Layout, Node, NodeId, Step};

type BatchAction<T> = Box<dyn FnMut(BatchTime, Batch<T>) -> Result<(), BoxError> + Send>;

struct Foreach<T> {
    input: NodeId,
    what: &'static str,
    action: BatchAction<T>,
}

impl<T: Data> Node for Foreach<T> {
    fn compute(&mut self, step: &mut Step<'_>) -> Result<()> {
        let Some(batch) = step.take::<T>(self.input)? else {
            return Ok(());
        };
        (self.action)(step.input.batch_time, batch).map_err(|e| Error::Batch {
            batch_time: step.input.batch_time,
            message: format!("{} failed: {e}", self.what),
        })
    }
}

impl<T: Data> DStream<T> {
    fn output(&self, what: &'static str, action: BatchAction<T>) {
        let _: DStream<()> = self.then(
            Foreach {
                input: self.node,
                what,
                action,
            },
            Layout::Mixed,
            &[],
        );
    }

    /// Calls `f` with every batch's items (partition by partition, in order), once per batch
    /// time that has a batch, and again if the batch is replayed after a crash. An error stops
    /// the pipeline; the next start replays the batch.
    ///
    /// ```
    /// # fn example(counts: weir::stream::DStream<(String, u64)>) {
    /// counts.foreach_batch(|t, items| {
    ///     println!("{t}: {} words", items.len());
    ///     Ok(())
    /// });
    /// # }
    /// ```
    pub fn foreach_batch(
        &self,
        mut f: impl FnMut(BatchTime, Vec<T>) -> Result<(), BoxError> + Send + 'static,
    ) {
        self.output(
            "foreach_batch",
            Box::new(move |t, batch| f(t, batch.into_values().flatten().collect())),
        );
    }

    /// Calls `f` for every partition of every batch with `(batch_time, partition)`, the
    /// idempotency token of an external write (Spark users build it from `(time, partitionId)`
    /// by hand).
    pub fn foreach_partition(
        &self,
        mut f: impl FnMut(&PartitionContext, Vec<T>) -> Result<(), BoxError> + Send + 'static,
    ) {
        self.output(
            "foreach_partition",
            Box::new(move |batch_time, batch| {
                for (partition, items) in batch {
                    f(
                        &PartitionContext {
                            batch_time,
                            partition,
                        },
                        items,
                    )?;
                }
                Ok(())
            }),
        );
    }
}

impl<T: Data + Debug> DStream<T> {
    /// Prints the first ten items of every batch to standard output, under the batch time, as
    /// Spark does.
    pub fn print(&self) {
        self.print_n(10);
    }

    /// Prints the first `n` items of every batch.
    pub fn print_n(&self, n: usize) {
        self.output(
            "print",
            Box::new(move |t, batch| {
                let items: Vec<T> = batch.into_values().flatten().collect();
                let mut out = std::io::stdout().lock();
                out.write_all(format_batch(t, &items, n).as_bytes())?;
                out.flush()?;
                Ok(())
            }),
        );
    }
}

/// What [`DStream::print_n`] prints for one batch.
pub(crate) fn format_batch<T: Debug>(t: BatchTime, items: &[T], n: usize) -> String {
    let rule = "-------------------------------------------";
    let mut out = format!("{rule}\nTime: {t} ms\n{rule}\n");
    for item in items.iter().take(n) {
        let _ = writeln!(out, "{item:?}");
    }
    if items.len() > n {
        out.push_str("...\n");
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn print_looks_like_spark() {
        let items = [("hello", 3), ("me", 1)];
        assert_eq!(
            format_batch(BatchTime::from_millis(1_000), &items, 1),
            "-------------------------------------------\nTime: 1000 ms\n-------------------------------------------\n(\"hello\", 3)\n...\n\n"
        );
    }
}
