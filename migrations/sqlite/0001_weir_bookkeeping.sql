-- weir's bookkeeping tables (DESIGN.md, invariant 4). Same meaning as migrations/postgres.

CREATE TABLE IF NOT EXISTS weir_commits (
    pipeline      TEXT    NOT NULL,
    batch_time    INTEGER NOT NULL,
    partition_id  INTEGER NOT NULL,
    ranges        TEXT    NOT NULL,
    committed_at  TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    PRIMARY KEY (pipeline, batch_time, partition_id)
);

CREATE TABLE IF NOT EXISTS weir_offsets (
    pipeline         TEXT    NOT NULL,
    partition_id     INTEGER NOT NULL,
    topic            TEXT    NOT NULL,
    kafka_partition  INTEGER NOT NULL,
    from_offset      INTEGER NOT NULL,
    next_offset      INTEGER NOT NULL,
    batch_time       INTEGER NOT NULL,
    PRIMARY KEY (pipeline, partition_id, topic, kafka_partition)
);

CREATE TABLE IF NOT EXISTS weir_dead_letters (
    pipeline          TEXT    NOT NULL,
    batch_time        INTEGER NOT NULL,
    partition_id      INTEGER NOT NULL,
    topic             TEXT    NOT NULL,
    kafka_partition   INTEGER NOT NULL,
    kafka_offset      INTEGER NOT NULL,
    record_timestamp  INTEGER,
    record_key        BLOB,
    record_value      BLOB,
    headers           TEXT    NOT NULL,
    error_message     TEXT    NOT NULL,
    created_at        TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    PRIMARY KEY (pipeline, batch_time, partition_id, topic, kafka_partition, kafka_offset)
);
