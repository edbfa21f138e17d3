"""The MLflow side: runs, the model registry and its promotion gate, the pyfunc model, and model URIs.

* :mod:`~pipelines.tracking.runs` -- one MLflow run per category under a parent run per pipeline run;
* :mod:`~pipelines.tracking.registry` -- the registered models, ``challenger`` / ``champion`` and
  the promotion gate (``sidn promote``);
* :mod:`~pipelines.tracking.cli` -- ``sidn promote`` and ``sidn registry`` (entry point
  ``sidn.commands: mlflow``);
* :mod:`~pipelines.tracking.pyfunc_model` -- the model as logged ("from code", loads without the repo);
* :mod:`~pipelines.tracking.model_uri` -- ``--model models:/NAME@ALIAS`` (entry point ``sidn.model_uris: models``);
* :mod:`~pipelines.tracking.distribution` -- registered bundles published to and resolved from the
  S3 store (``sidn registry publish``, entry point ``sidn.model_uris: s3``);
* :mod:`~pipelines.tracking.storage` -- the S3 store itself (boto3, checksummed bundles).

Imports go one way: ``cli`` uses ``registry``, ``distribution``, ``model_uri`` and ``runs``;
``registry`` and ``model_uri`` use ``runs``; ``distribution`` uses ``model_uri`` and ``storage``;
``runs`` and ``model_uri`` use ``pyfunc_model``, which imports no ``pipelines`` module at all (it
is executed from the model directory when a logged model is loaded).
"""
