-- The CTR job's tables in PostgreSQL (flink/ctr_job.py upserts into them on these keys, so a
-- replay after a restart rewrites rows instead of adding to them). Idempotent.
-- dimension is one of 'all', 'site_id', 'app_id', 'device_type', 'banner_pos'; value is '' for
-- 'all' (and for a null value). CTR is clicks / impressions, as the views say.
CREATE TABLE IF NOT EXISTS ctr_hourly (
    hour        timestamp NOT NULL,   -- the Avazu hour (event time), UTC
    dimension   text      NOT NULL,
    value       text      NOT NULL,
    impressions bigint    NOT NULL,
    clicks      bigint    NOT NULL,
    PRIMARY KEY (hour, dimension, value)
);

CREATE TABLE IF NOT EXISTS ctr_minute (
    minute      timestamp NOT NULL,   -- the minute of arrival in Kafka (record timestamp), UTC
    dimension   text      NOT NULL,
    value       text      NOT NULL,
    impressions bigint    NOT NULL,
    clicks      bigint    NOT NULL,
    PRIMARY KEY (minute, dimension, value)
);

-- Records that arrived after their window had closed: counted here, not in the windows above.
CREATE TABLE IF NOT EXISTS ctr_late (
    window_kind  text      NOT NULL,  -- 'hour' or 'minute'
    window_start timestamp NOT NULL,
    records      bigint    NOT NULL,
    PRIMARY KEY (window_kind, window_start)
);

CREATE OR REPLACE VIEW ctr_hourly_rates AS
    SELECT hour, dimension, value, impressions, clicks,
           clicks::double precision / NULLIF(impressions, 0) AS ctr
    FROM ctr_hourly;

CREATE OR REPLACE VIEW ctr_minute_rates AS
    SELECT minute, dimension, value, impressions, clicks,
           clicks::double precision / NULLIF(impressions, 0) AS ctr
    FROM ctr_minute;
