"""Pipeline health: checks that each pass or fail on their own, a report a person reads, and metrics.

* :mod:`.config` - the thresholds (include/config/health.yaml), read once and checked;
* :mod:`.outcome` - what a check found (:class:`CheckOutcome`), and :class:`CheckFailed`;
* :mod:`.lag` - consumer lag in records and seconds, judged over a window of samples;
* :mod:`.hours` - the DLQ ratio and the reconciliation of every recently ingested hour;
* :mod:`.throughput` - the speed of the recent ingestion runs and of the stream processors;
* :mod:`.drift` - topic configs and registry subjects against their declarations;
* :mod:`.broker` - offline and under-replicated partitions, ISR below min.insync, the controller;
* :mod:`.state` - the samples kept between runs; :mod:`.report` and :mod:`.metrics` - the outputs;
* :mod:`.checks` - the checks by name, and what they are given (:class:`HealthInputs`).
"""
