"""Long-running stream processors (seeds 003 and 004), with no Airflow in them.

``processor`` is the consume-transform-produce loop (exactly once through Kafka transactions);
``records`` what a transform sees and returns; ``analytics`` and ``words`` the two seeds'
transforms; ``simulators`` their producers; ``readers`` their final consumers;
``python -m include.streaming`` runs a processor outside Airflow. A failed record goes to the DLQ
unchanged with the ``dlq.*`` headers of :mod:`include.dead_letters`.
"""

from include.streaming.processor import ProcessorCounts, ProcessorFailed, StreamProcessor
from include.streaming.records import InputRecord, OutputRecord, Transform, TransformContext

__all__ = [
    "InputRecord",
    "OutputRecord",
    "ProcessorCounts",
    "ProcessorFailed",
    "StreamProcessor",
    "Transform",
    "TransformContext",
]
