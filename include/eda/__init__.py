"""Sampling and exploratory statistics of an Avazu file (seed 002, day 1): one streaming pass.

* :mod:`include.eda.sampling`: head, uniform (reservoir) and per-hour samples;
* :mod:`include.eda.stats`: CTR overall / per hour / per banner_pos / per device_type, nulls,
  duplicates, top categories;
* :mod:`include.eda.survey`: the pass itself (the sampling DAG's first task);
* :mod:`include.eda.report`: ``data_stats.json`` into a Markdown report and PNG plots.
"""
