-- weir's bookkeeping tables (DESIGN.md, invariant 4).

-- One row per atomic write: (pipeline, batch time, output partition). Inserted first in the write's
-- transaction; a row already there means the write was done and the transaction is abandoned.
CREATE TABLE IF NOT EXISTS weir_commits (
    pipeline      TEXT        NOT NULL,
    batch_time    BIGINT      NOT NULL, -- epoch milliseconds
    partition_id  BIGINT      NOT NULL,
    ranges        TEXT        NOT NULL, -- JSON: the offset ranges this write covers
    committed_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (pipeline, batch_time, partition_id)
);

-- Where each output partition's last commit ended, per Kafka partition: the contiguity check
-- updates next_offset only where it equals the new range's start.
CREATE TABLE IF NOT EXISTS weir_offsets (
    pipeline         TEXT    NOT NULL,
    partition_id     BIGINT  NOT NULL,
    topic            TEXT    NOT NULL,
    kafka_partition  INTEGER NOT NULL,
    from_offset      BIGINT  NOT NULL, -- start of the last committed range
    next_offset      BIGINT  NOT NULL, -- its end: where the next range must start
    batch_time       BIGINT  NOT NULL, -- the batch of the last commit
    PRIMARY KEY (pipeline, partition_id, topic, kafka_partition)
);

-- Records that could not be written, with `on_error = "dead_letter"`; written in the same
-- transaction as the batch, so exactly once.
CREATE TABLE IF NOT EXISTS weir_dead_letters (
    pipeline          TEXT        NOT NULL,
    batch_time        BIGINT      NOT NULL,
    partition_id      BIGINT      NOT NULL,
    topic             TEXT        NOT NULL,
    kafka_partition   INTEGER     NOT NULL,
    kafka_offset      BIGINT      NOT NULL,
    record_timestamp  BIGINT,               -- epoch milliseconds
    record_key        BYTEA,
    record_value      BYTEA,
    headers           TEXT        NOT NULL, -- JSON: [{"key": name, "value": base64 or null}]
    error_message     TEXT        NOT NULL,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (pipeline, batch_time, partition_id, topic, kafka_partition, kafka_offset)
);
