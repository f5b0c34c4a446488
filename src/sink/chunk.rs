//! Chunk sizing: how many rows go into one statement (or one COPY) without crossing the
//! databases' limits: 65,535 bind parameters per statement (32,766 on SQLite), MySQL's
//! `max_allowed_packet`, and the configured `batch_size`.

use std::ops::Range;

/// Rows per statement when every row binds `width` parameters.
pub(crate) fn rows_per_statement(batch_size: usize, width: usize, max_parameters: usize) -> usize {
    (max_parameters / width.max(1)).min(batch_size).max(1)
}

/// Splits `sizes` (bytes per row) into consecutive chunks of at most `max_rows` rows and, where
/// possible, at most `max_bytes` bytes. A row larger than `max_bytes` gets a chunk of its own (the
/// database then refuses it as the record's error).
pub(crate) fn split(sizes: &[usize], max_rows: usize, max_bytes: usize) -> Vec<Range<usize>> {
    let mut chunks = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (i, &size) in sizes.iter().enumerate() {
        let rows = i - start;
        if rows > 0 && (rows >= max_rows || bytes + size > max_bytes) {
            chunks.push(start..i);
            start = i;
            bytes = 0;
        }
        bytes += size;
    }
    if start < sizes.len() {
        chunks.push(start..sizes.len());
    }
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_stay_under_the_parameter_limit() {
        assert_eq!(rows_per_statement(1_000, 10, 65_535), 1_000);
        assert_eq!(rows_per_statement(65_535, 10, 65_535), 6_553);
        assert_eq!(rows_per_statement(1_000, 100_000, 65_535), 1);
        assert_eq!(rows_per_statement(1_000, 0, 65_535), 1_000);
    }

    #[test]
    fn chunks_respect_rows_and_bytes() {
        assert_eq!(split(&[1; 5], 2, 100), vec![0..2, 2..4, 4..5]);
        assert_eq!(
            split(&[40, 40, 40, 200, 10], 10, 100),
            vec![0..2, 2..3, 3..4, 4..5]
        );
        assert!(split(&[], 10, 10).is_empty());
        let sizes = vec![7; 1_000];
        let chunks = split(&sizes, 64, 100);
        assert_eq!(
            chunks.iter().map(ExactSizeIterator::len).sum::<usize>(),
            1_000
        );
        assert!(chunks.iter().all(|c| c.len() <= 14));
    }
}
