# The README's two commands are `make demo` and `make test`; everything else here serves them.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Every target that runs Airflow or a client first points it at the local stack.
LOCAL_ENV := . scripts/local-env.sh &&
STAMP := $(VENV)/.installed-$(shell sha256sum requirements.txt | cut -c1-16)
# The ingestion's C codec (native/): rebuilt when its sources change.
NATIVE_SOURCES := native/avazu_rowcodec.c native/setup.py native/pyproject.toml
NATIVE_STAMP := $(VENV)/.native-$(shell cat $(NATIVE_SOURCES) | sha256sum | cut -c1-16)

.PHONY: help system-packages install flink-venv flink-start flink-stop lock stack-start stack-stop stack-status airflow-db airflow airflow-stop airflow-status dashboard demo test test-unit clean

help:
	@echo "make demo          run the whole pipeline on generated data against the local stack and the Flink cluster"
	@echo "make test          run the test suite (unit, integration on the real stack, DAG tests)"
	@echo "make stack-start   start Kafka, the Schema Registry, the S3 endpoint, the Pushgateway, Prometheus, PostgreSQL and Redis (idempotent; KAFKA_BROKERS=3: Kafka as a three-node cluster)"
	@echo "make stack-status  show what runs where, and where its log is"
	@echo "make stack-stop    stop the local stack"
	@echo "make airflow       start Airflow's api-server (UI), scheduler, dag-processor and triggerer (idempotent; AIRFLOW_EXECUTOR=celery: and two Celery workers)"
	@echo "make airflow-stop  stop them (running tasks finish their batch and commit)"
	@echo "make install       install the Debian packages the stack needs (as root), create .venv, install the pinned requirements and build the C codec"
	@echo "make lock          re-resolve requirements.in into requirements.txt"
	@echo "make flink-venv    create .venv-flink with PyFlink (its own venv: it would downgrade pandas and pyarrow here)"
	@echo "make flink-start   start the Flink session cluster for the CTR job (REST on FLINK_REST_PORT, 8082)"
	@echo "make dashboard     serve the live CTR dashboard (Streamlit) on http://127.0.0.1:8501 (DASHBOARD_PORT); Ctrl-C stops it"

# The Debian packages (Maven, Java, gcc, Prometheus ...): installed when missing and run as root,
# otherwise named in one sentence. `make test` adds the tests' own (Chromium); .ci/run runs the same.
SYSTEM_PACKAGES_ARGS :=
system-packages:
	@PYTHON=$(PYTHON) bash scripts/system-packages.sh $(SYSTEM_PACKAGES_ARGS)

$(STAMP): requirements.txt | system-packages
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.txt
	@rm -f $(VENV)/.installed-* && touch $@

$(NATIVE_STAMP): $(STAMP) $(NATIVE_SOURCES)
	$(PY) -m pip install --quiet --force-reinstall --no-deps ./native \
	  || { echo "building the C codec failed: it needs gcc and Python's headers (Debian: gcc python3-dev)"; exit 1; }
	@rm -f $(VENV)/.native-* && touch $@

install: $(STAMP) $(NATIVE_STAMP)

# PyFlink in an environment of its own: apache-flink pins pandas, pyarrow and numpy below the
# project's. Its wheel is a whole Flink distribution, which devstack.flink runs as a session cluster.
FLINK_VENV := .venv-flink
FLINK_REQUIREMENTS := flink/requirements.txt
FLINK_STAMP := $(FLINK_VENV)/.installed-$(shell sha256sum $(FLINK_REQUIREMENTS) | cut -c1-16)

$(FLINK_STAMP): $(FLINK_REQUIREMENTS)
	@test -x $(FLINK_VENV)/bin/python || $(PYTHON) -m venv $(FLINK_VENV)
	$(FLINK_VENV)/bin/python -m pip install --quiet -r $(FLINK_REQUIREMENTS)
	@rm -f $(FLINK_VENV)/.installed-* && touch $@

flink-venv: $(FLINK_STAMP)

flink-start: install flink-venv
	$(PY) -m devstack.flink start

flink-stop:
	$(PY) -m devstack.flink stop

lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install --quiet -r requirements.in
	{ echo "# The resolved lock of requirements.in for Python 3.11 on Linux: every package that gets installed,"; \
	  echo "# pinned. Regenerate with \`make lock\`; install with \`make install\`."; \
	  .lock-venv/bin/pip freeze --all --exclude pip --exclude setuptools --exclude wheel; } > requirements.txt
	rm -rf .lock-venv

stack-start: install
	$(PY) -m devstack start

stack-stop:
	$(PY) -m devstack stop

stack-status:
	$(PY) -m devstack status

airflow-db: install
	@$(LOCAL_ENV) mkdir -p "$$AIRFLOW_HOME" && $(VENV)/bin/airflow db migrate > "$$AIRFLOW_HOME/db-migrate.log" 2>&1 \
	  || { echo "airflow db migrate failed; see $$AIRFLOW_HOME/db-migrate.log"; exit 1; }

airflow: stack-start airflow-db
	@$(LOCAL_ENV) $(PY) -m devstack.airflow start

airflow-stop:
	@$(LOCAL_ENV) $(PY) -m devstack.airflow stop

airflow-status:
	@$(LOCAL_ENV) $(PY) -m devstack.airflow status

# The live CTR dashboard reads the CTR store (its tables made first: migrations are applied once each)
# and the ingestion's checkpoints. It runs in the foreground; DASHBOARD_PORT moves it.
dashboard: stack-start
	@$(LOCAL_ENV) $(PY) -m include.ctr.migrate > /dev/null && $(PY) -m include.ctr.dashboard

# The demo's DAG runs live in an Airflow home of their own: the dates they hold never block a
# backfill or a trigger in .airflow, where `make airflow` and the README's commands run.
# flink-start: the demo's ctr_stream step runs the CTR job on the Flink session cluster (built into
# .venv-flink first), which keeps running afterwards like the rest of the stack.
DEMO_HOME := $(CURDIR)/.airflow-demo

demo: stack-start flink-start
	@$(MAKE) --no-print-directory airflow-db AIRFLOW_HOME=$(DEMO_HOME)
	@export AIRFLOW_HOME=$(DEMO_HOME) && $(LOCAL_ENV) $(PY) -m scripts.demo

test: SYSTEM_PACKAGES_ARGS := --tests
# flink-venv: tests/integration/test_ctr_flink.py runs the CTR job on a Flink session cluster of its
# own (its jars are fetched and its format built into the shared cache by the test's fixture).
test: stack-start flink-venv
	@$(LOCAL_ENV) $(PY) -m pytest $(PYTEST_ARGS)

test-unit: install
	@$(LOCAL_ENV) $(PY) -m pytest tests/unit $(PYTEST_ARGS)

clean: airflow-stop flink-stop stack-stop
	rm -rf .devstack .airflow .airflow-demo native/build native/*.egg-info
