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

FROM apache/airflow:3.3.2-python3.11

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

# DAGs and plugins do `from include.x import y`; plugins/ is on Airflow's sys.path already.
ENV PYTHONPATH=/opt/airflow
