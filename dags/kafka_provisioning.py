"""kafka_provisioning: topics and schemas as declared in include/config/topics.yaml.

validate_declarations -> provision_topics -> provision_acls -> register_schemas -> verify

Its Kafka tasks use the kafka_admin connection: creating topics, changing their configs and
granting ACLs are what the pipeline's own principal (kafka_default) may not do. The ACLs are the
ones the catalog derives for that principal (include/kafka_admin/acls.py); on a cluster without
an authorizer provision_acls says so and does nothing.

Runs when the declarations asset gets an event (after a deploy changes topics.yaml or a schema),
every day at 06:00 UTC to report and reconcile drift, and by hand. With dry_run it only reports.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Asset, AssetOrTimeSchedule, CronTriggerTimetable, Param, dag, task
from kafka_pipeline.failures import fails_cleanly
from kafka_pipeline.operators.provisioning import (
    ProvisionAclsOperator,
    ProvisionTopicsOperator,
    RegisterSchemasOperator,
    VerifyProvisioningOperator,
)

from include.kafka_admin.catalog import DEFAULT_DECLARATIONS
from include.paths import settings_file

# The declarations in use: include/config/topics.yaml, or $AVAZU_CONFIG_DIR's copy.
DECLARATIONS = settings_file(DEFAULT_DECLARATIONS.name)
TOPIC_DECLARATIONS = Asset(uri=DECLARATIONS.as_uri(), name="kafka_topic_declarations")
# The cluster's admin principal (kafka_default is the pipeline's, which may not create or alter).
ADMIN_CONNECTION = "kafka_admin"
DEFAULT_ARGS = {"owner": "data-platform", "retries": 2, "retry_delay": pendulum.duration(seconds=15)}


@dag(
    dag_id="kafka_provisioning",
    description="Create and reconcile the declared Kafka topics and register their Avro schemas after a compatibility check",
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable("0 6 * * *", timezone="UTC"), assets=[TOPIC_DECLARATIONS]),
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["kafka", "schema-registry", "provisioning"],
    render_template_as_native_obj=True,
    params={
        "declarations": Param(str(DECLARATIONS), type="string",
                              description="The topics YAML to apply."),
        "dry_run": Param(False, type="boolean", description="Only report what would change."),
        "fix_drift": Param(True, type="boolean",
                           description="Set drifted topic configs back to the declared values and remove ACLs the catalog does not derive."),
        "grow_partitions": Param(False, type="boolean",
                                 description="Add partitions where fewer exist than declared "
                                             "(changes which partition a key goes to)."),
    },
    doc_md=__doc__,
)
def kafka_provisioning():
    @task
    @fails_cleanly
    def validate_declarations(params=None) -> dict:
        """Load and check the declarations before anything is sent to Kafka."""
        from include.kafka_admin.catalog import load_catalog
        from include.kafka_admin.subjects import subject_specs

        catalog = load_catalog(params["declarations"])
        return {"topics": catalog.names(), "subjects": [s.subject for s in subject_specs(catalog)]}

    declarations = "{{ params.declarations }}"
    provision = ProvisionTopicsOperator(
        task_id="provision_topics", declarations=declarations, dry_run="{{ params.dry_run }}",
        fix_drift="{{ params.fix_drift }}", grow_partitions="{{ params.grow_partitions }}",
        kafka_config_id=ADMIN_CONNECTION)
    acls = ProvisionAclsOperator(
        task_id="provision_acls", declarations=declarations, dry_run="{{ params.dry_run }}",
        fix_drift="{{ params.fix_drift }}", kafka_config_id=ADMIN_CONNECTION)
    register = RegisterSchemasOperator(
        task_id="register_schemas", declarations=declarations, dry_run="{{ params.dry_run }}")
    verify = VerifyProvisioningOperator(task_id="verify", declarations=declarations, kafka_config_id=ADMIN_CONNECTION)

    @task.short_circuit
    def unless_dry_run(params=None) -> bool:
        """A dry run changes nothing, so there is nothing to verify."""
        return not params["dry_run"]

    validate_declarations() >> provision >> acls >> register >> unless_dry_run() >> verify


kafka_provisioning()
