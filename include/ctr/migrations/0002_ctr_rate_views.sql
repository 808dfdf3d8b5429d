-- The click-through rate beside the counts it is computed from: clicks / impressions, NULL for a
-- window without impressions. Views, so the rate is never stored and never disagrees with its counts.

CREATE VIEW ctr_hourly_rates AS
    SELECT hour, dimension, value, impressions, clicks,
           clicks::double precision / NULLIF(impressions, 0) AS ctr
    FROM ctr_hourly;

CREATE VIEW ctr_minute_rates AS
    SELECT minute, dimension, value, impressions, clicks,
           clicks::double precision / NULLIF(impressions, 0) AS ctr
    FROM ctr_minute;
