# shellcheck shell=bash
# Source this file to point Airflow and the clients at the local stack:
#   . scripts/local-env.sh
# AIRFLOW_HOME lives inside the project (SQLite metadata DB), dags/ and plugins/ are this
# project's, and the connections come from environment variables. Every value set here can be
# overridden by exporting it first, e.g. KAFKA_BOOTSTRAP_SERVERS=broker:29092.
_root="$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")/.." && pwd)"

export AIRFLOW_HOME="${AIRFLOW_HOME:-$_root/.airflow}"
export AIRFLOW__CORE__DAGS_FOLDER="${AIRFLOW__CORE__DAGS_FOLDER:-$_root/dags}"
export AIRFLOW__CORE__PLUGINS_FOLDER="${AIRFLOW__CORE__PLUGINS_FOLDER:-$_root/plugins}"
export AIRFLOW__CORE__LOAD_EXAMPLES="${AIRFLOW__CORE__LOAD_EXAMPLES:-False}"
export AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="${AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION:-True}"
# AIRFLOW_EXECUTOR=celery: the tasks run on Celery workers (`make airflow` starts them) with the local
# stack's Redis as their broker and Airflow's metadata in its PostgreSQL (role and database airflow;
# psycopg 3, Airflow's default PostgreSQL driver). Both passwords are generated at the stack's first
# start into files only their owner reads: source this file again after it. Unset or local: the
# LocalExecutor with its metadata in SQLite in AIRFLOW_HOME.
_stack_home="${DEVSTACK_HOME:-$_root/.devstack}"
case "${AIRFLOW_EXECUTOR:-local}" in
  local) ;;
  celery)
    export AIRFLOW__CORE__EXECUTOR="${AIRFLOW__CORE__EXECUTOR:-CeleryExecutor}"
    if [ -z "${AIRFLOW__DATABASE__SQL_ALCHEMY_CONN:-}" ] && [ -r "$_stack_home/postgres/airflow.password" ]; then
      export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="postgresql+psycopg://airflow:$(cat "$_stack_home/postgres/airflow.password")@127.0.0.1:${POSTGRES_PORT:-5432}/airflow"
    fi
    if [ -z "${AIRFLOW__CELERY__RESULT_BACKEND:-}" ] && [ -n "${AIRFLOW__DATABASE__SQL_ALCHEMY_CONN:-}" ]; then
      export AIRFLOW__CELERY__RESULT_BACKEND="db+$AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"
    fi
    if [ -z "${AIRFLOW__CELERY__BROKER_URL:-}" ] && [ -r "$_stack_home/redis/redis.password" ]; then
      export AIRFLOW__CELERY__BROKER_URL="redis://:$(cat "$_stack_home/redis/redis.password")@127.0.0.1:${REDIS_PORT:-6379}/0"
    fi ;;
  *) echo "scripts/local-env.sh: AIRFLOW_EXECUTOR=$AIRFLOW_EXECUTOR is neither local nor celery" >&2
     return 1 ;;
esac
export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="${AIRFLOW__DATABASE__SQL_ALCHEMY_CONN:-sqlite:///$AIRFLOW_HOME/airflow.db}"
# `include` is imported from the project root by DAGs, plugins and tests alike.
case ":${PYTHONPATH:-}:" in
  *":$_root:"*) ;;
  *) export PYTHONPATH="$_root${PYTHONPATH:+:$PYTHONPATH}" ;;
esac

# Where the local stack listens (see `python -m devstack --help` for the port variables).
# KAFKA_BROKERS=3: the stack's three-node cluster, node n on KAFKA_PORT + 100*(n-1).
_kafka_port="${KAFKA_PORT:-9092}"
_bootstrap="127.0.0.1:$_kafka_port"
if [ "${KAFKA_BROKERS:-1}" = 3 ]; then
  _bootstrap="$_bootstrap,127.0.0.1:$((_kafka_port + 100)),127.0.0.1:$((_kafka_port + 200))"
fi
export KAFKA_BOOTSTRAP_SERVERS="${KAFKA_BOOTSTRAP_SERVERS:-$_bootstrap}"
export SCHEMA_REGISTRY_URL="${SCHEMA_REGISTRY_URL:-http://127.0.0.1:${SCHEMA_REGISTRY_PORT:-8081}/apis/ccompat/v7}"
export S3_ENDPOINT_URL="${S3_ENDPOINT_URL:-http://127.0.0.1:${S3_PORT:-9000}}"
export PROMETHEUS_URL="${PROMETHEUS_URL:-http://127.0.0.1:${PROMETHEUS_PORT:-9090}}"
export PUSHGATEWAY_URL="${PUSHGATEWAY_URL:-http://127.0.0.1:${PUSHGATEWAY_PORT:-9091}}"
# The CTR store (devstack's postgres): the ctr role's password is generated at the stack's first
# start into a file only its owner reads, so no committed file holds it. Before that start there
# is no POSTGRES_URL (nor postgres_default); source this file again after it.
_ctr_password_file="${DEVSTACK_HOME:-$_root/.devstack}/postgres/ctr.password"
if [ -z "${POSTGRES_URL:-}" ] && [ -r "$_ctr_password_file" ]; then
  export POSTGRES_URL="postgresql://ctr:$(cat "$_ctr_password_file")@127.0.0.1:${POSTGRES_PORT:-5432}/ctr"
fi

# KAFKA_AUTH=scram (a stack started with it): clients sign in with SCRAM over TLS, trusting the
# stack's CA. The passwords are read from the files the stack made (readable by their owner only)
# into the connections' extras and nowhere else; Airflow masks them (sasl.password) in task logs.
_kafka_auth_dir="${DEVSTACK_HOME:-$_root/.devstack}/kafka-auth"
_kafka_client() {  # the librdkafka settings of principal $1, as JSON members after bootstrap.servers
  if [ "${KAFKA_AUTH:-none}" = scram ]; then
    if [ ! -r "$_kafka_auth_dir/$1.password" ]; then
      echo "local-env.sh: KAFKA_AUTH=scram but $_kafka_auth_dir/$1.password is missing; start the stack with KAFKA_AUTH=scram first" >&2
      return 1
    fi
    printf ', "security.protocol": "SASL_SSL", "sasl.mechanisms": "SCRAM-SHA-512", "sasl.username": "%s", "sasl.password": "%s", "ssl.ca.location": "%s"' \
      "$1" "$(cat "$_kafka_auth_dir/$1.password")" "$_kafka_auth_dir/ca.pem"
  fi
}

# The same connection ids exist in docker-compose.airflow.yml, so DAG code never knows where it runs.
# kafka_default follows the Kafka provider's convention: librdkafka settings as the extra JSON. It is
# the pipeline's principal; kafka_admin (kafka_provisioning's) the cluster's admin.
if [ -z "${AIRFLOW_CONN_KAFKA_DEFAULT:-}" ]; then
  export AIRFLOW_CONN_KAFKA_DEFAULT='{"conn_type": "kafka", "extra": {"bootstrap.servers": "'"$KAFKA_BOOTSTRAP_SERVERS"'"'"$(_kafka_client pipeline)"'}}'
fi
if [ -z "${AIRFLOW_CONN_KAFKA_ADMIN:-}" ]; then
  export AIRFLOW_CONN_KAFKA_ADMIN='{"conn_type": "kafka", "extra": {"bootstrap.servers": "'"$KAFKA_BOOTSTRAP_SERVERS"'"'"$(_kafka_client admin)"'}}'
fi
# kafka_dlq_watch: the dead-letter watcher's own consumer (dags/dlq_reprocessing.py). The provider's
# shared-stream trigger commits only after the triggerer stored the event, so auto-commit is off.
if [ -z "${AIRFLOW_CONN_KAFKA_DLQ_WATCH:-}" ]; then
  export AIRFLOW_CONN_KAFKA_DLQ_WATCH='{"conn_type": "kafka", "extra": {"bootstrap.servers": "'"$KAFKA_BOOTSTRAP_SERVERS"'", "group.id": "dlq-reprocessing-watch", "enable.auto.commit": "false", "auto.offset.reset": "earliest"'"$(_kafka_client pipeline)"'}}'
fi
if [ -z "${AIRFLOW_CONN_SCHEMA_REGISTRY_DEFAULT:-}" ]; then
  export AIRFLOW_CONN_SCHEMA_REGISTRY_DEFAULT='{"conn_type": "http", "host": "'"$SCHEMA_REGISTRY_URL"'"}'
fi
# postgres_default: the Postgres provider's convention; Airflow reads postgresql:// as conn type postgres.
if [ -z "${AIRFLOW_CONN_POSTGRES_DEFAULT:-}" ] && [ -n "${POSTGRES_URL:-}" ]; then
  export AIRFLOW_CONN_POSTGRES_DEFAULT="$POSTGRES_URL"
fi
unset _root _ctr_password_file _stack_home _kafka_auth_dir
unset -f _kafka_client
