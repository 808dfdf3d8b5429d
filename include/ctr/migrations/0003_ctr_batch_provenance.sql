-- The batch computation (include/ctr/batch.py) by staged hour file. A staged hour's rows reach the
-- raw topic in their own hour, except a dead letter the DLQ reprocessing repairs into another hour
-- (a line without a readable hour is staged in the hour of the line before it): so each staged
-- hour's counts are kept apart, per hour they count in, and ctr_batch_hourly is their sum, rebuilt
-- for the hours a batch run touches in the same transaction. A rerun of a staged hour replaces
-- its parts.

CREATE TABLE ctr_batch_parts (
    staged_hour timestamp NOT NULL,
    LIKE ctr_hourly INCLUDING DEFAULTS INCLUDING CONSTRAINTS,
    PRIMARY KEY (staged_hour, hour, dimension, value)
);
CREATE INDEX ctr_batch_parts_by_hour ON ctr_batch_parts (hour);

-- One row per staged hour: which file the batch read, what it found there, and when.
CREATE TABLE ctr_batch_runs (
    staged_hour   timestamp        PRIMARY KEY,
    source_id     text             NOT NULL,
    data_uri      text             NOT NULL,
    rows          bigint           NOT NULL CHECK (rows >= 0),
    good_rows     bigint           NOT NULL CHECK (good_rows >= 0),
    repaired_rows bigint           NOT NULL CHECK (repaired_rows >= 0),
    parked_rows   bigint           NOT NULL CHECK (parked_rows >= 0),
    computed_at   timestamptz      NOT NULL DEFAULT now(),
    seconds       double precision NOT NULL,
    CONSTRAINT ctr_batch_rows_add_up CHECK (rows = good_rows + repaired_rows + parked_rows)
);
