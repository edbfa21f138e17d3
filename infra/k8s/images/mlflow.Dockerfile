# MLflow server image for infra/k8s/mlflow.yaml: the official image lacks the S3 and PostgreSQL drivers.
FROM ghcr.io/mlflow/mlflow:v3.17.0
RUN pip install --no-cache-dir boto3==1.43.* psycopg2-binary==2.9.*
USER 1000
