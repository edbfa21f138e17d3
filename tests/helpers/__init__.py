"""What the tests share: generated data (data), the tiny pipeline repository (pipeline), the real
services on loopback (infra; fixtures_mlflow, fixtures_s3, fixtures_prefect as pytest fixtures)."""
