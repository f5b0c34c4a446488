-- weir's bookkeeping tables (DESIGN.md, invariant 4). Same meaning as migrations/postgres.
-- Binary collation: pipeline and topic names compare byte for byte.

CREATE TABLE IF NOT EXISTS weir_commits (
    pipeline      VARCHAR(255) NOT NULL,
    batch_time    BIGINT       NOT NULL,
    partition_id  BIGINT       NOT NULL,
    ranges        LONGTEXT     NOT NULL,
    committed_at  DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    PRIMARY KEY (pipeline, batch_time, partition_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS weir_offsets (
    pipeline         VARCHAR(255) NOT NULL,
    partition_id     BIGINT       NOT NULL,
    topic            VARCHAR(249) NOT NULL,
    kafka_partition  INTEGER      NOT NULL,
    from_offset      BIGINT       NOT NULL,
    next_offset      BIGINT       NOT NULL,
    batch_time       BIGINT       NOT NULL,
    PRIMARY KEY (pipeline, partition_id, topic, kafka_partition)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS weir_dead_letters (
    pipeline          VARCHAR(255) NOT NULL,
    batch_time        BIGINT       NOT NULL,
    partition_id      BIGINT       NOT NULL,
    topic             VARCHAR(249) NOT NULL,
    kafka_partition   INTEGER      NOT NULL,
    kafka_offset      BIGINT       NOT NULL,
    record_timestamp  BIGINT       NULL,
    record_key        LONGBLOB     NULL,
    record_value      LONGBLOB     NULL,
    headers           LONGTEXT     NOT NULL,
    error_message     LONGTEXT     NOT NULL,
    created_at        DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    PRIMARY KEY (pipeline, batch_time, partition_id, topic, kafka_partition, kafka_offset)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
