"""The one error rule: every failure the project raises is permanent or retriable, and the operators act on that."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest
from airflow.sdk.exceptions import AirflowException, AirflowFailException
from confluent_kafka import KafkaError

import include
from include.avazu.lines import AvazuInputError, CorruptInputError, HeaderMismatchError, TruncatedInputError
from include.ctr.dashboard import DashboardConfigError
from include.ctr.flink_rest import FlinkJobError, FlinkUnavailable
from include.ctr.batch import BatchMismatch, HourNotStaged, NotAnAvazuHour
from include.ctr.migrate import MigrationError
from include.ctr.store import StoreNotMigrated, StoreUnreachable
from include.ctr.stream_job import CtrJobFailed
from include.dlq.config import DlqConfigError
from include.dlq.reprocessor import ReprocessingMismatch
from include.eda.sampling import SamplingConfigError
from include.health.config import HealthConfigError
from include.health.metrics import PushgatewayUnavailable
from include.health.outcome import CheckFailed
from include.encoding.batch import RowCodecUnavailable
from include.encoding.rows import SchemaMismatchError
from include.errors import PermanentError, PipelineError, RetriableError
from include.ingest.config import IngestConfigError
from include.ingest.hours import HourMappingError
from include.ingest.result import ReconciliationError
from include.ingest.staging import StagingError
from include.kafka.errors import (
    ErrorKind,
    KafkaFatalError,
    KafkaUnavailable,
    ProducerFenced,
    TooFewInSyncReplicas,
    TopicsMissing,
    TransactionAborted,
    classify,
)
from include.kafka.client_file import ClientConfigError
from include.kafka.java_client import UnsupportedClientSetting
from include.kafka.reachability import ServiceUnreachable
from include.kafka.registry import SchemaNotRegistered, UnknownSchemaId
from include.kafka.reader import ReadTimedOut
from include.kafka.smoke import SmokeFailure
from include.kafka.wire import WireFormatError
from include.kafka_admin.catalog import DeclarationError
from include.kafka_admin.subjects import IncompatibleSchema
from include.kafka_admin.topics import ProvisioningError
from include.storage import SourceMissing, StorageAccessDenied, StorageUnavailable
from include.streaming.processor import ProcessorFailed
from include.streaming.readers import PipelineMismatch
from include.streaming.simulators import SimulationFailed
from kafka_pipeline.failures import fails_cleanly, task_failure

PERMANENT, RETRIABLE = "permanent", "retriable"
# Every failure the project raises, with its kind: what a task does with it depends on this alone.
KINDS = {
    AvazuInputError: PERMANENT,  # not an Avazu file
    HeaderMismatchError: PERMANENT,
    TruncatedInputError: PERMANENT,
    CorruptInputError: PERMANENT,
    StagingError: PERMANENT,
    SourceMissing: PERMANENT,
    StorageAccessDenied: PERMANENT,  # missing or wrong credentials
    IngestConfigError: PERMANENT,
    SamplingConfigError: PERMANENT,
    DlqConfigError: PERMANENT,
    HealthConfigError: PERMANENT,
    # A finding of a health check: retrying a minute later does not make it go away.
    CheckFailed: PERMANENT,
    PushgatewayUnavailable: RETRIABLE,
    ReprocessingMismatch: PERMANENT,
    DeclarationError: PERMANENT,
    ClientConfigError: PERMANENT,  # a client settings file missing or malformed
    UnsupportedClientSetting: PERMANENT,  # a Kafka setting the Java client's properties cannot carry
    HourMappingError: PERMANENT,
    SchemaNotRegistered: PERMANENT,
    SchemaMismatchError: PERMANENT,
    IncompatibleSchema: PERMANENT,
    WireFormatError: PERMANENT,
    UnknownSchemaId: PERMANENT,  # a payload naming a schema id the registry does not hold
    RowCodecUnavailable: PERMANENT,
    TopicsMissing: PERMANENT,
    ProducerFenced: PERMANENT,  # a newer attempt owns the transactional id
    KafkaFatalError: PERMANENT,
    ReconciliationError: PERMANENT,
    ProvisioningError: PERMANENT,
    ProcessorFailed: PERMANENT,
    PipelineMismatch: PERMANENT,
    SmokeFailure: PERMANENT,
    MigrationError: PERMANENT,  # a misnamed, duplicated, edited or removed migration
    DashboardConfigError: PERMANENT,
    ServiceUnreachable: RETRIABLE,  # broker or registry down
    StorageUnavailable: RETRIABLE,  # S3 endpoint down
    KafkaUnavailable: RETRIABLE,
    TooFewInSyncReplicas: RETRIABLE,  # brokers down under the replicas
    TransactionAborted: RETRIABLE,
    ReadTimedOut: RETRIABLE,
    SimulationFailed: RETRIABLE,
    StoreUnreachable: RETRIABLE,  # the CTR store's PostgreSQL down
    StoreNotMigrated: PERMANENT,  # the CTR tables are missing: run the migrations
    BatchMismatch: PERMANENT,  # the CTR batch's counts disagree with the staging manifest
    HourNotStaged: PERMANENT,
    NotAnAvazuHour: PERMANENT,
    FlinkUnavailable: RETRIABLE,  # the Flink job manager does not answer
    FlinkJobError: PERMANENT,  # an unknown job, a failed savepoint
    # The CTR job FAILED after Flink's own restarts, or its remembered restore point is gone.
    CtrJobFailed: PERMANENT,
}


def _project_exceptions() -> set[type]:
    """Every exception class defined in include/ (imported module by module)."""
    found = set()
    for module_info in pkgutil.walk_packages(include.__path__, "include."):
        if module_info.name.endswith("__main__"):
            continue
        module = importlib.import_module(module_info.name)
        for _, value in inspect.getmembers(module, inspect.isclass):
            if issubclass(value, PipelineError) and value.__module__ == module.__name__:
                found.add(value)
    return found - {PipelineError, PermanentError, RetriableError}


def test_the_table_names_every_project_failure():
    assert _project_exceptions() == set(KINDS)


@pytest.mark.parametrize(("error_type", "kind"), sorted(KINDS.items(), key=lambda item: item[0].__name__),
                         ids=lambda value: value.__name__ if isinstance(value, type) else value)
def test_each_failure_is_permanent_or_retriable_and_the_task_acts_on_it(error_type, kind):
    assert issubclass(error_type, PermanentError if kind == PERMANENT else RetriableError)
    assert not issubclass(error_type, PermanentError if kind == RETRIABLE else RetriableError)
    error = error_type.__new__(error_type)
    Exception.__init__(error, "what went wrong, where, and what to do")

    failure = task_failure(error)
    # Permanent: the task fails at once, its retries skipped. Retriable: this try fails, Airflow retries.
    assert type(failure) is (AirflowFailException if kind == PERMANENT else AirflowException)
    assert str(failure) == "what went wrong, where, and what to do"

    @fails_cleanly
    def execute():
        raise error

    with pytest.raises(type(failure), match="what went wrong") as raised:
        execute()
    assert raised.value.__cause__ is None and raised.value.__suppress_context__  # no second traceback


def test_anything_else_passes_through_with_its_traceback():
    @fails_cleanly
    def execute():
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        execute()


@pytest.mark.parametrize(("error", "kind"), [
    (KafkaError(KafkaError._FENCED, "fenced", fatal=True), ErrorKind.FENCED),
    (KafkaError(KafkaError.PRODUCER_FENCED, "fenced"), ErrorKind.FENCED),
    (KafkaError(KafkaError.INVALID_PRODUCER_EPOCH, "epoch", txn_requires_abort=True), ErrorKind.FENCED),
    (KafkaError(KafkaError._STATE, "coordinator moved", txn_requires_abort=True, retriable=True), ErrorKind.ABORTABLE),
    (KafkaError(KafkaError._TIMED_OUT, "timed out", retriable=True), ErrorKind.RETRIABLE),
    (KafkaError(KafkaError._FATAL, "gone", fatal=True), ErrorKind.FATAL),
    (KafkaError(KafkaError._INVALID_ARG, "bad argument"), ErrorKind.FATAL),
])
def test_librdkafka_errors_are_classified_by_their_flags_and_fencing_by_its_code(error, kind):
    assert classify(error) is kind
