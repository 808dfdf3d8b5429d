-- The CTR aggregates a Flink job upserts over JDBC (INSERT ... ON CONFLICT on the primary key), and
-- the batch computation's hourly figures to reconcile them with. Columns stay plain types (no
-- domains, enums or generated columns), so a JDBC sink maps each one to a Flink SQL type as is.
-- Timestamps are UTC, without a time zone: the window's start as the job computed it.
-- dimension is what the row counts by; value is that field's value ('' for the 'all' row).

CREATE TABLE ctr_hourly (
    hour        timestamp NOT NULL,
    dimension   text      NOT NULL,
    value       text      NOT NULL,
    impressions bigint    NOT NULL,
    clicks      bigint    NOT NULL,
    PRIMARY KEY (hour, dimension, value),
    CONSTRAINT ctr_dimension CHECK (dimension IN ('all', 'site_id', 'app_id', 'device_type', 'banner_pos')),
    CONSTRAINT ctr_all_has_no_value CHECK (dimension <> 'all' OR value = ''),
    CONSTRAINT ctr_counts CHECK (clicks >= 0 AND clicks <= impressions)
);

-- The same per minute: ctr_hourly's shape, key and checks included (so the two never drift), its
-- window column named for what it holds.
CREATE TABLE ctr_minute (LIKE ctr_hourly INCLUDING ALL);
ALTER TABLE ctr_minute RENAME COLUMN hour TO minute;

-- Records that arrived after their window had closed (and so are in no aggregate above), counted
-- per window.
CREATE TABLE ctr_late (
    window_kind  text      NOT NULL CHECK (window_kind IN ('hour', 'minute')),
    window_start timestamp NOT NULL,
    records      bigint    NOT NULL CHECK (records >= 0),
    PRIMARY KEY (window_kind, window_start)
);

-- The batch computation over the same hours: the same shape as ctr_hourly, key and checks included.
CREATE TABLE ctr_batch_hourly (LIKE ctr_hourly INCLUDING ALL);
