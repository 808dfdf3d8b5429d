# The project's Airflow image for docker-compose.airflow.yml: the official image of the Airflow
# version requirements.txt pins (tests/unit/test_compose_stack.py keeps the two in step), plus the
# locked requirements, the ingestion's C codec and the project's code.

# The C codec (native/) is compiled in a stage of its own on the same image, so it is built for the
# image's Python and C library, and only its wheel - not the compiler - reaches the final image.
FROM apache/airflow:3.3.2-python3.11 AS rowcodec
USER root
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && apt-get clean && rm -rf /var/lib/apt/lists/*
USER airflow
COPY --chown=airflow:0 native/ /tmp/native/
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /tmp/wheels /tmp/native

# The Flink CTR job's client, built in a stage of its own: PyFlink in a venv of its own (it pins
# pandas and pyarrow below the lock, as .venv-flink does locally), and the job's connector jars and
# avro-wire format fetched and built by devstack.flink with Maven and a JDK, into the jar cache the
# final image carries, so ctr_stream's submit finds them done and needs neither Maven nor a JDK.
FROM apache/airflow:3.3.2-python3.11 AS flinkclient
USER root
RUN apt-get update \
    && apt-get install -y --no-install-recommends maven openjdk-17-jdk-headless \
    && apt-get clean && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /opt/flink-venv /opt/flink-cache && chown airflow:0 /opt/flink-venv /opt/flink-cache
USER airflow
COPY --chown=airflow:0 flink/ /opt/airflow/flink/
COPY --chown=airflow:0 devstack/ /opt/airflow/devstack/
RUN python -m venv /opt/flink-venv \
    && /opt/flink-venv/bin/python -m pip install --no-cache-dir -r /opt/airflow/flink/requirements.txt
RUN cd /opt/airflow && DEVSTACK_CACHE=/opt/flink-cache DEVSTACK_HOME=/tmp/devstack python -m devstack.flink jars

FROM apache/airflow:3.3.2-python3.11

# `flink run` (PyFlink's client, which plans the CTR job and submits it to the compose file's
# Flink cluster) runs on Java.
USER root
RUN apt-get update \
    && apt-get install -y --no-install-recommends openjdk-17-jre-headless \
    && apt-get clean && rm -rf /var/lib/apt/lists/*
USER airflow
COPY --from=flinkclient /opt/flink-venv/ /opt/flink-venv/
COPY --from=flinkclient /opt/flink-cache/ /opt/flink-cache/
ENV FLINK_VENV=/opt/flink-venv DEVSTACK_CACHE=/opt/flink-cache

# The official way to extend the image: install as the airflow user, and name the image's own
# Airflow so pip can never up- or downgrade it while resolving the lock.
COPY requirements.txt /requirements.txt
COPY --from=rowcodec /tmp/wheels/ /tmp/wheels/
RUN pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" -r /requirements.txt /tmp/wheels/avazu_rowcodec-*.whl

# The project root becomes /opt/airflow (the image's AIRFLOW_HOME), so dags/ and plugins/ are
# where Airflow looks by default. Group 0 owns the code: the image runs under any UID with GID 0.
COPY --chown=airflow:0 dags/ /opt/airflow/dags/
COPY --chown=airflow:0 plugins/ /opt/airflow/plugins/
COPY --chown=airflow:0 include/ /opt/airflow/include/
COPY --chown=airflow:0 schemas/ /opt/airflow/schemas/
COPY --chown=airflow:0 scripts/ /opt/airflow/scripts/
# ctr_stream submits flink/ctr_job.py through devstack.flink's client.
COPY --chown=airflow:0 flink/ /opt/airflow/flink/
COPY --chown=airflow:0 devstack/ /opt/airflow/devstack/

# DAGs and plugins do `from include.x import y`; plugins/ is on Airflow's sys.path already.
ENV PYTHONPATH=/opt/airflow
