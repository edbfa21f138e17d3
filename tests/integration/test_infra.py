"""infra/: Kubernetes manifests and the Prefect GPU job template (validated, not run), the DVC remote
and MLflow artifacts in the real local S3 store, and `infra/up` / `status` / `down` on free ports.
"""

from __future__ import annotations

import importlib.util
import json
import os
import posixpath
import re
import shlex
import shutil
import socket
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml

from helpers.fixtures_s3 import s3_server, swift_venv  # noqa: F401  (session server, refcounted)
from helpers.infra import BIN, clean_env, configure_dvc_remote, run_cmd, start_mlflow_s3

from infra.environment import base_env
from infra.ports import PORT_DEFAULTS, free_ports, port_is_free
from infra.processes import ProcessManager, ServiceSpec, group_members
from infra.stack import WORK_POOL

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "infra" / "k8s"
SECRETISH = re.compile(r"(SECRET|PASSWORD|TOKEN|ACCESS_KEY|API_KEY|_URI$|CONNECTION_URL)", re.I)

# ----------------------------------------------------------------------------------------------
# Kubernetes manifests: parsed with PyYAML, checked with JSON schemas that cover what matters here
# (kubeconform and the kubernetes client are not installed; no cluster is reachable).

jsonschema = pytest.importorskip("jsonschema")

_ENV_ITEM = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "pattern": r"^[A-Za-z_][A-Za-z0-9_]*$"},
        "value": {"type": "string"},
        "valueFrom": {
            "type": "object",
            "minProperties": 1,
            "maxProperties": 1,
            "properties": {
                "secretKeyRef": {"type": "object", "required": ["name", "key"]},
                "configMapKeyRef": {"type": "object", "required": ["name", "key"]},
                "fieldRef": {"type": "object"},
            },
            "additionalProperties": False,
        },
    },
    "oneOf": [{"required": ["value"]}, {"required": ["valueFrom"]}],
    "additionalProperties": False,
}
_QUANTITY = {"type": ["string", "integer"], "pattern": r"^[0-9.]+(m|Ki|Mi|Gi|Ti)?$"}
_CONTAINER = {
    "type": "object",
    "required": ["name", "image", "resources"],
    "properties": {
        "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
        # pinned images: a tag that is not 'latest'
        "image": {"type": "string", "pattern": r"^[^\s:]+(:[0-9][^\s:]*|:v[0-9][^\s:]*)$"},
        "imagePullPolicy": {"enum": ["IfNotPresent", "Always", "Never"]},
        "command": {"type": "array", "items": {"type": "string"}},
        "args": {"type": "array", "items": {"type": "string"}},
        "ports": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["containerPort"],
                "properties": {
                    "name": {"type": "string", "maxLength": 15},
                    "containerPort": {"type": "integer", "minimum": 1, "maximum": 65535},
                },
            },
        },
        "env": {"type": "array", "items": _ENV_ITEM},
        "workingDir": {"type": "string", "pattern": "^/"},
        "volumeMounts": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name", "mountPath"],
                "properties": {
                    "name": {"type": "string"},
                    "mountPath": {"type": "string", "pattern": "^/"},
                    "subPath": {"type": "string", "pattern": "^[^/]"},
                },
            },
        },
        "resources": {
            "type": "object",
            "required": ["requests", "limits"],
            "properties": {
                "requests": {"type": "object", "additionalProperties": _QUANTITY},
                "limits": {"type": "object", "required": ["memory"], "additionalProperties": _QUANTITY},
            },
        },
    },
}
_META = {
    "type": "object",
    "required": ["name"],
    "properties": {"name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"}},
}
_POD_SPEC = {
    "type": "object",
    "required": ["containers"],
    "properties": {
        "containers": {"type": "array", "minItems": 1, "items": _CONTAINER},
        "initContainers": {"type": "array", "items": _CONTAINER},
        "restartPolicy": {"enum": ["Always", "OnFailure", "Never"]},
        "securityContext": {"type": "object"},
        "volumes": {
            "type": "array",
            "items": {  # a name and exactly one source; a claim by name
                "type": "object",
                "required": ["name"],
                "minProperties": 2,
                "maxProperties": 2,
                "properties": {
                    "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
                    "persistentVolumeClaim": {"type": "object", "required": ["claimName"]},
                },
            },
        },
    },
}


def _resource(spec_required: list[str], spec_properties: dict) -> dict:
    """Schema of a resource with metadata and a spec."""
    return {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "metadata": _META,
            "spec": {"type": "object", "required": spec_required, "properties": spec_properties},
        },
    }


SCHEMAS = {
    ("apps/v1", "Deployment"): _resource(["selector", "template"], {
        "replicas": {"type": "integer", "minimum": 0},
        "selector": {"type": "object", "required": ["matchLabels"]},
        "template": {
            "type": "object",
            "required": ["metadata", "spec"],
            "properties": {"metadata": {"type": "object", "required": ["labels"]}, "spec": _POD_SPEC},
        },
    }),
    ("v1", "Service"): _resource(["selector", "ports"], {
        "type": {"enum": ["ClusterIP", "NodePort", "LoadBalancer"]},
        "ports": {"type": "array", "minItems": 1, "items": {"type": "object", "required": ["port", "targetPort"]}},
    }),
    ("batch/v1", "Job"): _resource(["template"], {
        "backoffLimit": {"type": "integer", "minimum": 0},
        "ttlSecondsAfterFinished": {"type": "integer", "minimum": 0},
        "template": {
            "type": "object",
            "required": ["spec"],
            "properties": {"spec": {
                "allOf": [_POD_SPEC],
                "required": ["containers", "restartPolicy"],
                "properties": {"restartPolicy": {"enum": ["OnFailure", "Never"]}},
            }},
        },
    }),
    ("v1", "PersistentVolumeClaim"): _resource(["accessModes", "resources"], {
        "accessModes": {
            "type": "array",
            "minItems": 1,
            "items": {"enum": ["ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany", "ReadWriteOncePod"]},
        },
        "resources": {
            "type": "object",
            "required": ["requests"],
            "properties": {
                "requests": {"type": "object", "required": ["storage"], "properties": {"storage": _QUANTITY}},
            },
        },
        "storageClassName": {"type": "string"},
    }),
    ("v1", "Namespace"): {"type": "object", "required": ["metadata"], "properties": {"metadata": _META}},
    ("v1", "ServiceAccount"): {"type": "object", "required": ["metadata"], "properties": {"metadata": _META}},
    ("v1", "ConfigMap"): {
        "type": "object",
        "required": ["metadata", "data"],
        "properties": {"metadata": _META, "data": {"type": "object", "additionalProperties": {"type": "string"}}},
    },
    ("rbac.authorization.k8s.io/v1", "Role"): {
        "type": "object",
        "required": ["metadata", "rules"],
        "properties": {
            "rules": {
                "type": "array",
                "items": {"type": "object", "required": ["apiGroups", "resources", "verbs"]},
            }
        },
    },
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): {
        "type": "object",
        "required": ["metadata", "subjects", "roleRef"],
        "properties": {"roleRef": {"type": "object", "required": ["apiGroup", "kind", "name"]}},
    },
    ("kustomize.config.k8s.io/v1beta1", "Kustomization"): {
        "type": "object",
        "required": ["resources"],
        "properties": {"resources": {"type": "array", "items": {"type": "string"}}},
    },
}


def _docs() -> list[tuple[str, dict]]:
    """Every manifest: the kustomization's (infra/k8s/*.yaml) and the one-off Jobs (jobs/*.yaml)."""
    out = []
    for path in sorted(K8S.glob("*.yaml")) + sorted(K8S.glob("jobs/*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                out.append((path.name, doc))
    return out


def _containers(doc: dict) -> list[dict]:
    return doc.get("spec", {}).get("template", {}).get("spec", {}).get("containers", [])


def test_k8s_manifests_parse_and_match_schemas():
    docs = _docs()
    kinds = sorted({d["kind"] for _, d in docs})
    assert {"Deployment", "Service", "Role", "RoleBinding", "ServiceAccount", "ConfigMap", "Namespace",
            "PersistentVolumeClaim", "Job"} <= set(kinds)
    for name, doc in docs:
        key = (doc.get("apiVersion"), doc.get("kind"))
        assert key in SCHEMAS, f"{name}: unexpected {key}"
        errors = sorted(jsonschema.Draft7Validator(SCHEMAS[key]).iter_errors(doc), key=str)
        assert not errors, f"{name} {key[1]}/{doc.get('metadata', {}).get('name')}: " + "; ".join(
            f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors
        )
        if key[1] not in ("Namespace", "Kustomization"):
            assert doc["metadata"].get("namespace") == "sidn", f"{name}: {key[1]} outside namespace sidn"


def test_k8s_names_ports_and_secrets_are_consistent():
    docs = _docs()
    deployments = {d["metadata"]["name"]: d for _, d in docs if d["kind"] == "Deployment"}
    assert {"mlflow", "prefect-server", "prefect-worker"} <= set(deployments)
    for dep in deployments.values():
        assert not _deployment_problems(dep)
    for _, svc in [(n, d) for n, d in docs if d["kind"] == "Service"]:
        target = [d for d in deployments.values()
                  if svc["spec"]["selector"].items() <= d["spec"]["template"]["metadata"]["labels"].items()]
        assert len(target) == 1, f"service {svc['metadata']['name']} selects {len(target)} deployments"
        port_names = {p.get("name") for c in _containers(target[0]) for p in c.get("ports", [])}
        for p in svc["spec"]["ports"]:
            assert p["targetPort"] in port_names, f"service {svc['metadata']['name']}: unknown targetPort"
    # the worker's service account may create Jobs; the training service account exists
    roles = [d for _, d in docs if d["kind"] == "Role"]
    assert any("jobs" in r["resources"] and "create" in r["verbs"] for role in roles for r in role["rules"])
    accounts = {d["metadata"]["name"] for _, d in docs if d["kind"] == "ServiceAccount"}
    assert deployments["prefect-worker"]["spec"]["template"]["spec"]["serviceAccountName"] in accounts
    # kustomization lists every manifest
    kust = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert sorted(kust["resources"]) == sorted(p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
    # the worker polls the GPU pool with the kubernetes worker type
    cmd = _containers(deployments["prefect-worker"])[0]["command"]
    assert cmd[cmd.index("--pool") + 1] == "sidn-gpu" and cmd[cmd.index("--type") + 1] == "kubernetes"


def _deployment_problems(dep: dict) -> list[str]:
    """What is wrong with a Deployment beyond its schema: selectors, probe ports, secrets."""
    name = dep["metadata"]["name"]
    problems = []
    labels = dep["spec"]["template"]["metadata"]["labels"]
    if not dep["spec"]["selector"]["matchLabels"].items() <= labels.items():
        problems.append(f"{name}: selector misses the pod labels")
    for c in _containers(dep):
        problems += _container_problems(name, c)
    return problems


def _container_problems(name: str, c: dict) -> list[str]:
    """Probes on unknown ports, secrets as literals / from a ConfigMap / on the command line."""
    problems = []
    port_names = {p.get("name") for p in c.get("ports", [])}
    for probe in ("readinessProbe", "livenessProbe"):
        if probe in c and c[probe]["httpGet"]["port"] not in port_names:
            problems.append(f"{name}: {probe} names an unknown port")
    for env in c.get("env", []):
        if (SECRETISH.search(env["name"]) and "ENDPOINT" not in env["name"]
                and env["name"] != "PREFECT_API_URL" and "secretKeyRef" not in env.get("valueFrom", {})):
            problems.append(f"{name}: {env['name']} must come from a Secret, not a literal or ConfigMap")
    joined = " ".join(c.get("command", []) + c.get("args", []))
    if "postgresql://" in joined or "secret" in joined.lower():
        problems.append(f"{name}: a secret on the command line")
    return problems


def test_k8s_checks_catch_literal_secrets_and_bad_probes():
    dep = next(d for _, d in _docs() if d["kind"] == "Deployment" and d["metadata"]["name"] == "mlflow")
    bad = json.loads(json.dumps(dep))
    container = _containers(bad)[0]
    container["env"].append({"name": "AWS_SECRET_ACCESS_KEY", "value": "hunter2"})
    container["readinessProbe"]["httpGet"]["port"] = "nope"
    container["args"].append("--backend-store-uri=postgresql://u:p@db/mlflow")
    problems = _deployment_problems(bad)
    assert len(problems) == 3, problems
    container["image"] = "ghcr.io/mlflow/mlflow:latest"
    errors = list(jsonschema.Draft7Validator(SCHEMAS[("apps/v1", "Deployment")]).iter_errors(bad))
    assert any("image" in "/".join(map(str, e.absolute_path)) for e in errors), "an unpinned image passed"


def _render_job_template(template: dict, overrides: dict | None = None) -> dict:
    """Render the base job template the way a Prefect worker does (Prefect's own templating)."""
    from prefect.utilities.templating import apply_values, find_placeholders

    variables = template["variables"]
    placeholders = {p.name for p in find_placeholders(template["job_configuration"])}
    allowed = set(variables["properties"])
    assert placeholders <= allowed, f"placeholders without a variable: {sorted(placeholders - allowed)}"
    values = {k: v["default"] for k, v in variables["properties"].items() if "default" in v}
    values.update({"name": "sidn-train-carpet", "command": "prefect flow-run execute", "env": {}, "labels": {}})
    values.update(overrides or {})
    return apply_values(template["job_configuration"], values, remove_notset=True)


def test_prefect_gpu_job_template_renders_to_a_valid_gpu_job():
    template = json.loads((K8S / "prefect-work-pool-gpu.json").read_text())
    assert set(template) == {"job_configuration", "variables"}
    jsonschema.Draft7Validator.check_schema(template["variables"])
    defaults = {k: v["default"] for k, v in template["variables"]["properties"].items() if "default" in v}
    jsonschema.Draft7Validator(template["variables"]).validate(defaults)
    assert defaults["gpu_count"] == 1

    job = _render_job_template(template)["job_manifest"]
    # what prefect-kubernetes requires of a job manifest (its _get_base_job_manifest)
    assert job["apiVersion"] == "batch/v1" and job["kind"] == "Job"
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and pod["parallelism"] == 1 and pod["completions"] == 1
    (container,) = pod["containers"]
    assert container["name"] == "prefect-job"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1  # an integer after rendering
    assert isinstance(job["spec"]["ttlSecondsAfterFinished"], int)
    assert any(t.get("key") == "nvidia.com/gpu" for t in pod["tolerations"])
    # the worker turns the rendered command string into an argv list (prefect-kubernetes does so too)
    assert isinstance(container["args"], str)
    jsonschema.Draft7Validator(_CONTAINER).validate({**container, "args": shlex.split(container["args"])})
    secret_env = {e["name"] for e in container["env"] if "secretKeyRef" in e.get("valueFrom", {})}
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= secret_env
    for e in container["env"]:
        if SECRETISH.search(e["name"]) and "ENDPOINT" not in e["name"] and "TRACKING" not in e["name"]:
            assert e["name"] in secret_env, f"{e['name']} is not taken from a Secret"
    # a deployment may ask for two GPUs
    two = _render_job_template(template, {"gpu_count": 2})["job_manifest"]
    assert two["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 2


def test_dask_docs_match_the_pipeline_cli():
    text = (REPO / "infra" / "dask" / "README.md").read_text()
    for needle in ("dask scheduler", "dask cuda worker", "--resources", "GPU=1", "sidn pipeline run --dask"):
        assert needle in text, f"infra/dask/README.md does not mention {needle!r}"
    cli = REPO / "pipelines" / "orchestration" / "cli.py"
    if cli.exists():
        src = cli.read_text()
        assert '"--dask"' in src and '"--gpus"' in src, "the documented CLI flags are gone from orchestration/cli.py"


def test_dask_docs_state_the_shared_filesystem_requirement():
    text = (REPO / "infra" / "dask" / "README.md").read_text()
    assert "## Shared filesystem" in text
    section = text.split("## Shared filesystem", 1)[1].split("\n## ", 1)[0]
    for needle in ("same absolute path", "runs/", "data/", ".dvc/cache", "by path, not by value",
                   "What breaks otherwise"):
        assert needle in section, f"the shared-filesystem section does not mention {needle!r}"


# ----------------------------------------------------------------------------------------------
# The cluster path: storage, Secrets and ConfigMap keys that every pod uses exist; one GPU Job per
# category; the training image holds what the pipeline reads at run time (its file list is built
# from the Dockerfile's COPY lines and .dockerignore, without docker).

TRAIN_DOCKERFILE = K8S / "images" / "train.Dockerfile"
GPU_PREFECT_YAML = K8S / "prefect" / "prefect.yaml"
GPU_TEMPLATE = K8S / "prefect-work-pool-gpu.json"


def _documented_secrets() -> dict[str, dict[str, str]]:
    """{Secret: {key: example value}} of the `kubectl create secret generic` commands in infra/README.md."""
    text = (REPO / "infra" / "README.md").read_text().replace("\\\n", " ")
    secrets: dict[str, dict[str, str]] = {}
    for name, rest in re.findall(r"kubectl -n sidn create secret generic ([a-z0-9-]+)([^\n]*)", text):
        secrets.setdefault(name, {}).update(re.findall(r"--from-literal=([A-Za-z0-9_]+)=(\S*)", rest))
    return secrets


def _pod_specs() -> list[tuple[str, dict]]:
    """Every pod of the project: the Deployments, the one-off Jobs and the GPU pool's Job."""
    pods = [(f"{doc['kind']}/{doc['metadata']['name']}", doc["spec"]["template"]["spec"])
            for _, doc in _docs() if doc["kind"] in ("Deployment", "Job")]
    job = _render_job_template(json.loads(GPU_TEMPLATE.read_text()))["job_manifest"]
    return pods + [("work pool sidn-gpu Job", job["spec"]["template"]["spec"])]


def test_k8s_claims_mounts_secrets_and_config_keys_are_consistent():
    docs = _docs()
    claims = {d["metadata"]["name"]: d for _, d in docs if d["kind"] == "PersistentVolumeClaim"}
    config = {d["metadata"]["name"]: set(d["data"]) for _, d in docs if d["kind"] == "ConfigMap"}
    secrets = _documented_secrets()
    assert {"sidn-s3-credentials", "sidn-mlflow-db", "sidn-prefect-db"} <= set(secrets)
    mounted: dict[str, set[str]] = {}  # claim -> pods
    for where, pod in _pod_specs():
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        containers = pod.get("initContainers", []) + pod["containers"]
        for c in containers:
            for mount in c.get("volumeMounts", []):
                assert mount["name"] in volumes, f"{where}: mounts the unknown volume {mount['name']!r}"
            for env in c.get("env", []):
                ref = env.get("valueFrom", {})
                if "secretKeyRef" in ref:
                    name, key = ref["secretKeyRef"]["name"], ref["secretKeyRef"]["key"]
                    assert key in secrets.get(name, {}), f"{where}: Secret {name}/{key} is not in infra/README.md"
                if "configMapKeyRef" in ref:
                    name, key = ref["configMapKeyRef"]["name"], ref["configMapKeyRef"]["key"]
                    assert key in config.get(name, set()), f"{where}: ConfigMap {name} has no key {key}"
        for volume in volumes.values():
            if "persistentVolumeClaim" in volume:
                claim = volume["persistentVolumeClaim"]["claimName"]
                assert claim in claims, f"{where}: claim {claim!r} is not a manifest"
                mounted.setdefault(claim, set()).add(where)
        if where.startswith("Job/"):  # the Deployments are checked the same way in another test
            for c in containers:
                assert not _container_problems(where, c)
    assert set(mounted) == set(claims), f"claims nobody mounts: {sorted(set(claims) - set(mounted))}"

    # a ReadWriteOnce claim belongs to one Deployment of one replica, replaced with Recreate
    # (a rolling update would start the new pod while the old one holds the volume)
    deployments = {d["metadata"]["name"]: d for _, d in docs if d["kind"] == "Deployment"}
    for claim, pods in mounted.items():
        if claims[claim]["spec"]["accessModes"] == ["ReadWriteOnce"]:
            (where,) = pods
            dep = deployments[where.split("/", 1)[1]]
            assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"]["type"] == "Recreate", where
    # the training Jobs of all categories mount the workspace at once, from any node
    template = json.loads(GPU_TEMPLATE.read_text())
    workspace = template["variables"]["properties"]["workspace_claim"]["default"]
    assert "ReadWriteMany" in claims[workspace]["spec"]["accessModes"]

    # the sqlite databases the README suggests live on the server's claim, not in the container
    servers = {"sidn-mlflow-db": deployments["mlflow"], "sidn-prefect-db": deployments["prefect-server"]}
    for secret, dep in servers.items():
        (url,) = secrets[secret].values()
        assert url.startswith("sqlite"), f"infra/README.md: the default {secret} is not sqlite: {url}"
        db_file = "/" + url.split(":///", 1)[1].lstrip("/")
        pod = dep["spec"]["template"]["spec"]
        on_claim = {v["name"] for v in pod.get("volumes", []) if "persistentVolumeClaim" in v}
        assert any(m["name"] in on_claim and db_file.startswith(m["mountPath"].rstrip("/") + "/")
                   for c in pod["containers"] for m in c.get("volumeMounts", [])), f"{secret}: {db_file} not on a claim"


def test_k8s_gpu_deployment_runs_one_category_per_job_with_one_gpu():
    from pipelines.orchestration import flows

    spec = yaml.safe_load(GPU_PREFECT_YAML.read_text())
    (dep,) = spec["deployments"]
    module, _, name = dep["entrypoint"].partition(":")
    assert (REPO / module).is_file() and module == "pipelines/orchestration/flows.py"
    flow = getattr(flows, name)
    schema = flow.parameters
    # one category per flow run: a single string, without default, so every run names its own
    assert schema.properties["category"]["type"] == "string" and "category" in schema.required
    assert "category" not in dep.get("parameters", {})
    assert set(dep.get("parameters", {})) <= set(schema.properties)

    # the pool: the one the worker polls, of type kubernetes, created from the template in the README
    worker = next(d for _, d in _docs() if d["kind"] == "Deployment" and d["metadata"]["name"] == "prefect-worker")
    cmd = _containers(worker)[0]["command"]
    pool = dep["work_pool"]["name"]
    assert cmd[cmd.index("--pool") + 1] == pool and cmd[cmd.index("--type") + 1] == "kubernetes"
    readme = (REPO / "infra" / "README.md").read_text()
    assert (f"prefect work-pool create {pool} --type kubernetes --base-job-template "
            f"infra/k8s/{GPU_TEMPLATE.name}") in readme
    assert f"deploy --prefect-file {GPU_PREFECT_YAML.relative_to(REPO).as_posix()} --all" in readme
    assert f"prefect deployment run '{flow.name}/{dep['name']}' -p category=" in readme

    # its job variables are variables of the pool, valid there, and ask for exactly one GPU
    template = json.loads(GPU_TEMPLATE.read_text())
    variables = template["variables"]
    job_variables = dep["work_pool"]["job_variables"]
    assert set(job_variables) <= set(variables["properties"])
    defaults = {k: v["default"] for k, v in variables["properties"].items() if "default" in v}
    jsonschema.Draft7Validator(variables).validate({**defaults, **job_variables})
    assert job_variables["gpu_count"] == 1
    job = _render_job_template(template, job_variables)["job_manifest"]
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    # as the worker submits it: a name from generateName, the command string split into argv
    submitted = json.loads(json.dumps(job))
    submitted["metadata"]["name"] = submitted["metadata"].pop("generateName") + "x1"
    submitted["spec"]["template"]["spec"]["containers"][0]["args"] = shlex.split(container["args"])
    jsonschema.Draft7Validator(SCHEMAS[("batch/v1", "Job")]).validate(submitted)

    # the pull step enters the repository folder of the image, where the container starts too
    (step,) = dep.get("pull", spec.get("pull"))
    directory = step["prefect.deployments.steps.set_working_directory"]["directory"]
    workdir, _ = _image_files(TRAIN_DOCKERFILE)
    assert directory == workdir == container["workingDir"]
    # data/ and runs/ come from the workspace claim, at the paths params.yaml names relative to it
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert {f"{workdir}/data", f"{workdir}/runs"} <= set(mounts)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    assert params["data"]["root"].split("/")[0] == "data" and dep["parameters"].get("runs_root", "runs") == "runs"


def test_repository_prefect_yaml_targets_only_the_local_pool():
    """`make deploy` runs `prefect deploy --all` on prefect.yaml against `make up`'s server, whose only
    pool is the process pool; a deployment on another pool (sidn-gpu) would fail all of them."""
    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    assert {d["work_pool"]["name"] for d in spec["deployments"]} == {WORK_POOL}


@pytest.mark.skipif(importlib.util.find_spec("prefect_kubernetes") is None,
                    reason="prefect-kubernetes is the optional extra `k8s` (pip install -e '.[k8s]')")
def test_k8s_gpu_deployment_renders_through_prefect_kubernetes():
    """The Job a Kubernetes worker would create for one flow run of the GPU deployment."""
    import uuid

    from prefect.client.schemas.objects import FlowRun
    from prefect_kubernetes.worker import KubernetesWorkerJobConfiguration

    (dep,) = yaml.safe_load(GPU_PREFECT_YAML.read_text())["deployments"]
    rendered = _render_job_template(json.loads(GPU_TEMPLATE.read_text()), dep["work_pool"]["job_variables"])
    config = KubernetesWorkerJobConfiguration.model_validate(rendered)
    config.prepare_for_flow_run(FlowRun(flow_id=uuid.uuid4(), name="carpet-run", parameters={"category": "carpet"}))
    job = config.job_manifest
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["prefect", "flow-run", "execute"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    env = {e["name"]: e for e in container["env"]}
    assert "PREFECT__FLOW_RUN_ID" in env and "secretKeyRef" in env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]
    assert job["metadata"]["labels"]["prefect.io/flow-run-name"] == "carpet-run"


def _dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, comments dropped and continuation lines joined."""
    out, pending = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        pending += " " + (stripped[:-1] if stripped.endswith("\\") else stripped)
        if not stripped.endswith("\\"):
            word, _, args = pending.strip().partition(" ")
            out.append((word.upper(), args.strip()))
            pending = ""
    return out


def _dockerignore_rules(context: Path) -> list[tuple[bool, re.Pattern]]:
    """(exclude?, regex) per .dockerignore line: Go's filepath.Match plus Docker's `**`; `!` re-includes."""
    path = context / ".dockerignore"
    rules = []
    for line in path.read_text().splitlines() if path.exists() else []:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        include = line.startswith("!")
        pattern = posixpath.normpath(line.lstrip("!").strip().lstrip("/"))
        regex = ""
        for token in re.split(r"(\*\*/|\*\*|\*|\?)", pattern):
            regex += {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}.get(token, re.escape(token))
        rules.append((not include, re.compile(f"^{regex}(?:/.*)?$")))  # a folder excludes its content
    return rules


def _image_files(dockerfile: Path, context: Path = REPO) -> tuple[str, dict[str, str]]:
    """What a build of ``dockerfile`` copies from ``context``: the final WORKDIR and
    {absolute path in the image: path in the context}. Fails where docker build would (a source
    missing from the context or excluded by .dockerignore)."""
    rules = _dockerignore_rules(context)

    def ignored(rel: str) -> bool:
        verdict = False
        for exclude, regex in rules:
            if regex.match(rel):
                verdict = exclude
        return verdict

    workdir, files = "/", {}
    for word, args in _dockerfile_instructions(dockerfile.read_text()):
        if word == "WORKDIR":
            workdir = posixpath.normpath(posixpath.join(workdir, args))
        if word not in ("COPY", "ADD"):
            continue
        tokens = json.loads(args) if args.startswith("[") else shlex.split(args)
        assert not any(t.startswith("--from") for t in tokens), "only copies from the build context are listed"
        *sources, dest = [t for t in tokens if not t.startswith("--")]
        target = posixpath.normpath(posixpath.join(workdir, dest))
        into_folder = dest.endswith("/") or dest in (".", "..") or len(sources) > 1
        for src in sources:
            matches = sorted(context.glob(src)) if any(ch in src for ch in "*?[") else [context / src]
            matches = [m for m in matches if m.exists() and not ignored(m.relative_to(context).as_posix())]
            assert matches, f"{dockerfile.name}: {word} {src}: not in the build context (or .dockerignore'd)"
            for match in matches:
                rel = match.relative_to(context).as_posix()
                if match.is_file():
                    files[posixpath.join(target, match.name) if into_folder else target] = rel
                    continue
                for folder, dirs, names in os.walk(match):  # a folder's content goes into the target
                    here = Path(folder).relative_to(context).as_posix()
                    dirs[:] = [d for d in dirs if not ignored(posixpath.normpath(f"{here}/{d}"))]
                    for file in (posixpath.normpath(f"{here}/{name}") for name in names):
                        if not ignored(file):
                            files[posixpath.join(target, posixpath.relpath(file, rel))] = file
    return workdir, files


def _runtime_needs() -> set[str]:
    """What the pipeline reads from the repository folder at run time: the DVC and Prefect
    definitions, the package build files, every code dependency of a dvc.yaml stage, every module
    of the two packages and the entrypoint file of every deployment."""
    need = {"dvc.yaml", "dvc.lock", "params.yaml", ".dvc/config", "prefect.yaml", "pyproject.toml", "README.md"}
    for stage in yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"].values():
        for dep in stage.get("do", stage).get("deps", []):
            dep = dep if isinstance(dep, str) else next(iter(dep))
            if "${" not in dep and dep.split("/")[0] not in ("data", "runs", "reports"):
                need.add(dep)
    need |= {p.relative_to(REPO).as_posix() for pkg in ("sidn", "pipelines") for p in (REPO / pkg).rglob("*.py")
             if "__pycache__" not in p.parts}
    for spec in (REPO / "prefect.yaml", GPU_PREFECT_YAML):
        need |= {d["entrypoint"].partition(":")[0] for d in yaml.safe_load(spec.read_text())["deployments"]}
    return need


def _image_problems(dockerfile: Path, context: Path = REPO) -> list[str]:
    """What the image built from ``dockerfile`` lacks for the pipeline, or holds that it must not."""
    workdir, files = _image_files(dockerfile, context)
    inside = {posixpath.relpath(path, workdir) for path in files if path.startswith(workdir + "/")}
    problems = [f"missing in {workdir}: {need}" for need in sorted(_runtime_needs())
                if need not in inside and not any(p.startswith(need + "/") for p in inside)]
    secret_or_bulky = re.compile(r"^(\.dvc/config\.local|\.dvc/cache|\.dvc/tmp|\.infra|\.venv|\.git|data|runs|"
                                 r"experiments|mlruns|mlflow\.db)(/|$)|(^|/)__pycache__/")
    problems += [f"copied into the image: {src}" for src in sorted(files.values()) if secret_or_bulky.search(src)]
    runs = [args for word, args in _dockerfile_instructions(dockerfile.read_text()) if word == "RUN"]
    # editable, so pipelines.layout.REPO_ROOT is the WORKDIR and not site-packages; the worker type too
    if not any(re.search(r"pip install .*-e '?\.\[[^\]]*\bk8s\b", run) for run in runs):
        problems.append("the project is not installed editable (pip install -e '.[...,k8s]') in the WORKDIR")
    if not any("git init" in run for run in runs):
        problems.append("no git repository: DVC refuses a folder that is not one")
    return problems


def test_training_image_holds_what_the_pipeline_reads_and_nothing_secret():
    problems = _image_problems(TRAIN_DOCKERFILE)
    assert not problems, "\n".join(problems)
    workdir, files = _image_files(TRAIN_DOCKERFILE)
    # where the Jobs mount the workspace, the image has nothing (the mount would hide it)
    job = _render_job_template(json.loads(GPU_TEMPLATE.read_text()))["job_manifest"]
    pod = job["spec"]["template"]["spec"]
    for mount in pod["containers"][0]["volumeMounts"]:
        assert not [p for p in files if p.startswith(mount["mountPath"] + "/")], mount
    # the Jobs run as the image's user (a git repository owned by someone else is refused)
    user = [args for word, args in _dockerfile_instructions(TRAIN_DOCKERFILE.read_text()) if word == "USER"][-1]
    assert str(pod["securityContext"]["runAsUser"]) == user


def test_k8s_extra_is_optional_and_pinned_like_the_constraints():
    import tomllib

    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    (pin,) = extras["k8s"]
    assert pin.startswith("prefect-kubernetes==")
    assert not any(r.startswith("prefect-kubernetes") for name in ("stack", "dev") for r in extras[name])
    constraints = (REPO / "constraints.txt").read_text().splitlines()
    assert pin in constraints, "constraints.txt pins another prefect-kubernetes than the k8s extra"


def test_image_file_list_catches_missing_and_secret_files(tmp_path):
    """The lister on a Dockerfile like the one first shipped: no dvc.yaml, dvc.lock, params.yaml,
    .dvc/config or prefect.yaml, a non-editable install; and on one that copies everything
    without a .dockerignore."""
    old = tmp_path / "old.Dockerfile"
    old.write_text("FROM python:3.11\nWORKDIR /opt/sidn\nCOPY pyproject.toml constraints.txt README.md ./\n"
                   "COPY sidn ./sidn\nCOPY pipelines ./pipelines\n"
                   "RUN pip install --no-cache-dir -c constraints.txt '.[stack]'\n")
    problems = "\n".join(_image_problems(old))
    for needed in ("dvc.yaml", "dvc.lock", "params.yaml", ".dvc/config", "prefect.yaml", "editable"):
        assert needed in problems, needed
    context = tmp_path / "context"
    (context / ".dvc").mkdir(parents=True)
    (context / ".dvc" / "config.local").write_text("[core]\n")
    (context / "runs" / "carpet").mkdir(parents=True)
    (context / "runs" / "carpet" / "model.pt").write_bytes(b"x")
    everything = tmp_path / "all.Dockerfile"
    everything.write_text("FROM python:3.11\nWORKDIR /opt/sidn\nCOPY . .\n")
    assert set(_image_files(everything, context)[1].values()) == {".dvc/config.local", "runs/carpet/model.pt"}
    problems = _image_problems(everything, context)
    assert {"copied into the image: .dvc/config.local", "copied into the image: runs/carpet/model.pt"} <= set(problems)
    (context / ".dockerignore").write_text("runs\n.dvc/config.local\n")
    assert _image_files(everything, context)[1] == {"/opt/sidn/.dockerignore": ".dockerignore"}


# ----------------------------------------------------------------------------------------------
# DVC remote and MLflow artifacts in the real S3 store


@pytest.mark.integration
def test_dvc_push_wipe_pull_round_trip(s3_server, tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    env = clean_env()
    dvc = str(BIN / "dvc")
    run_cmd(["git", "init", "-q"], repo, env)
    run_cmd([dvc, "init", "-q"], repo, env)
    data = repo / "data" / "raw" / "carpet"
    files = {}
    for split, n in (("train/good", 6), ("test/crack", 3)):
        for i in range(n):
            p = data / split / f"{i:03d}.png"
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(40_000 + i))
            files[p.relative_to(repo).as_posix()] = p.read_bytes()
    run_cmd([dvc, "add", "-q", "data/raw"], repo, env)
    prefix = f"dvc-tests/{uuid.uuid4().hex[:8]}"
    configure_dvc_remote(repo, s3_server, prefix)
    # secrets only in the git-ignored config.local
    assert s3_server.secret_access_key not in (repo / ".dvc" / "config").read_text()
    assert s3_server.secret_access_key in (repo / ".dvc" / "config.local").read_text()
    run_cmd(["git", "check-ignore", "-q", ".dvc/config.local"], repo, env)

    t0 = time.monotonic()
    push = run_cmd([dvc, "push"], repo, env)
    t_push = time.monotonic() - t0
    assert s3_server.secret_access_key not in push.stdout + push.stderr
    keys = [o["Key"] for o in s3_server.client().list_objects_v2(Bucket="sidn-data", Prefix=prefix)["Contents"]]
    assert len(keys) >= len(files), keys

    shutil.rmtree(repo / ".dvc" / "cache")
    shutil.rmtree(repo / "data" / "raw")
    t0 = time.monotonic()
    run_cmd([dvc, "pull"], repo, env)
    t_pull = time.monotonic() - t0
    got = {p.relative_to(repo).as_posix(): p.read_bytes() for p in (repo / "data" / "raw").rglob("*") if p.is_file()}
    assert got == files
    print(f"dvc push {t_push:.1f}s, pull {t_pull:.1f}s for {len(files)} files")


@pytest.mark.integration
def test_mlflow_artifacts_live_in_the_s3_store(s3_server, tmp_path):
    prefix = f"mlflow-tests/{uuid.uuid4().hex[:8]}"
    server = start_mlflow_s3(s3_server, tmp_path / "state", prefix)
    uri = server.uri
    try:
        from mlflow import MlflowClient
        from mlflow.artifacts import download_artifacts

        client = MlflowClient(tracking_uri=uri)
        exp = client.create_experiment(f"s3-{uuid.uuid4().hex[:6]}")
        run = client.create_run(exp)
        client.log_param(run.info.run_id, "image_size", 64)
        payload = os.urandom(300_000)
        src = tmp_path / "model.bin"
        src.write_bytes(payload)
        client.log_artifact(run.info.run_id, str(src), artifact_path="bundle")
        client.set_terminated(run.info.run_id)
        out = download_artifacts(run_id=run.info.run_id, artifact_path="bundle/model.bin",
                                 dst_path=str(tmp_path / "dl"), tracking_uri=uri)
        assert Path(out).read_bytes() == payload
        # the bytes are in the object store, under the artifact destination
        objs = s3_server.client().list_objects_v2(Bucket="sidn-mlflow", Prefix=prefix)["Contents"]
        key = [o["Key"] for o in objs if o["Key"].endswith("bundle/model.bin")]
        assert len(key) == 1, [o["Key"] for o in objs]
        assert s3_server.client().get_object(Bucket="sidn-mlflow", Key=key[0])["Body"].read() == payload
        # nothing secret in params or the server log
        params = client.get_run(run.info.run_id).data.params
        assert all(s3_server.secret_access_key not in v for v in params.values())
        assert s3_server.secret_access_key not in server.log.read_text()
        print(f"mlflow server healthy in {server.startup_seconds:.1f}s")
    finally:
        assert server.stop() in ("stopped", "killed")
    assert port_is_free(server.port)


# ----------------------------------------------------------------------------------------------
# infra/up, infra/status, infra/down


def _infra_env(state: Path, ports: dict[str, int]) -> dict:
    env = clean_env(SIDN_INFRA_DIR=str(state), SIDN_SWIFT_VENV=str(swift_venv()), SIDN_INFRA_START_TIMEOUT="150")
    for name, (var, _) in PORT_DEFAULTS.items():
        env[var] = str(ports[name])
    return env


def _alive(pid: int) -> bool:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return text.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


@pytest.mark.integration
def test_up_refuses_a_taken_port_and_leaves_nothing_behind(tmp_path):
    ports = dict(zip(PORT_DEFAULTS, free_ports(len(PORT_DEFAULTS))))
    state = tmp_path / "infra"
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", ports["s3"]))
    blocker.listen(1)
    try:
        res = subprocess.run([str(REPO / "infra" / "up"), "s3", "--no-dvc"], env=_infra_env(state, ports),
                             capture_output=True, text=True, timeout=180)
    finally:
        blocker.close()
    assert res.returncode == 1, res.stdout + res.stderr
    assert f"port {ports['s3']}" in res.stderr and "taken by" in res.stderr and "SIDN_S3_PORT" in res.stderr
    assert f"pid {os.getpid()}" in res.stderr, res.stderr  # it names the process holding the port
    assert not list((state / "pids").glob("*.pid")), "storage servers started before the failure were left running"
    for name in ("swift-account", "swift-container", "swift-object"):
        assert port_is_free(ports[name]), f"{name} still listening"


FLOW_SRC = '''
from prefect import flow

@flow(name="sidn-infra-smoke")
def smoke(x: int = 2) -> int:
    return x * 21
'''


@pytest.mark.integration
@pytest.mark.slow
def test_up_status_down_full_stack(tmp_path):
    ports = dict(zip(PORT_DEFAULTS, free_ports(len(PORT_DEFAULTS))))
    state = tmp_path / "infra"
    env = _infra_env(state, ports)
    up = subprocess.run([str(REPO / "infra" / "up"), "--no-dvc"], env=env, capture_output=True, text=True, timeout=400)
    pids: dict[str, dict] = {p.stem: json.loads(p.read_text()) for p in (state / "pids").glob("*.pid")}
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        print(up.stdout)
        assert set(pids) == {"swift-account", "swift-container", "swift-object", "s3", "mlflow", "prefect", "prefect-worker"}
        st = subprocess.run([str(REPO / "infra" / "status"), "--json"], env=env, capture_output=True, text=True, timeout=60)
        assert st.returncode == 0, st.stdout + st.stderr
        rows = {r["name"]: r for r in json.loads(st.stdout)}
        assert all(r["state"] == "running" and r["healthy"] for r in rows.values()), rows
        assert rows["mlflow"]["port"] == ports["mlflow"] and rows["s3"]["port"] == ports["s3"]
        startup = json.loads((state / "startup.json").read_text())
        assert set(startup) >= {"s3", "mlflow", "prefect", "prefect-worker"}

        # env.sh: private, complete, and enough for a client to use the services
        env_sh = state / "env.sh"
        assert stat.S_IMODE(env_sh.stat().st_mode) == 0o600
        exported = dict(re.findall(r"^export (\w+)='([^']*)'$", env_sh.read_text(), re.M))
        for key in ("MLFLOW_TRACKING_URI", "PREFECT_API_URL", "AWS_ENDPOINT_URL", "MLFLOW_S3_ENDPOINT_URL",
                    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "DO_NOT_TRACK"):
            assert key in exported, key
        assert exported["MLFLOW_TRACKING_URI"] == f"http://127.0.0.1:{ports['mlflow']}"
        secret = exported["AWS_SECRET_ACCESS_KEY"]

        # every service listens on loopback only
        for name in ("s3", "mlflow", "prefect"):
            with socket.socket() as s:
                assert s.connect_ex(("127.0.0.1", ports[name])) == 0

        # the process worker runs a deployment of the sidn-process pool
        flow_dir = tmp_path / "flowsrc"
        flow_dir.mkdir()
        (flow_dir / "smoke.py").write_text(FLOW_SRC)
        script = (
            "from prefect import flow\n"
            "from prefect.deployments import run_deployment\n"
            f"f = flow.from_source(source={str(flow_dir)!r}, entrypoint='smoke.py:smoke')\n"
            "dep_id = f.deploy(name='smoke', work_pool_name='sidn-process', print_next_steps=False)\n"
            "run = run_deployment('sidn-infra-smoke/smoke', parameters={'x': 2}, timeout=240)\n"
            "print('STATE', run.state.type.value)\n"
        )
        client_env = {**env, **exported}
        res = subprocess.run([sys.executable, "-c", script], env=client_env, cwd=str(tmp_path),
                             capture_output=True, text=True, timeout=300)
        assert res.returncode == 0 and "STATE COMPLETED" in res.stdout, res.stdout[-3000:] + res.stderr[-3000:]

        # a second `up` finds everything running
        again = subprocess.run([str(REPO / "infra" / "up"), "--no-dvc"], env=env, capture_output=True, text=True, timeout=120)
        assert again.returncode == 0 and again.stdout.count("already running") == 7, again.stdout + again.stderr

        logs = "\n".join(p.read_text(errors="replace") for p in (state / "logs").glob("*.log"))
        assert secret not in logs and secret not in up.stdout + up.stderr
    finally:
        down = subprocess.run([str(REPO / "infra" / "down")], env=env, capture_output=True, text=True, timeout=180)
    assert down.returncode == 0, down.stdout + down.stderr
    assert not list((state / "pids").glob("*.pid"))
    time.sleep(0.5)
    leftovers = [(n, r["pid"]) for n, r in pids.items() if _alive(r["pid"])]
    assert not leftovers, f"still running after down: {leftovers}"
    # nothing left in any of the process groups either (uvicorn, gunicorn and flow-run children)
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] not in ("Z", "X"):
                assert int(fields[2]) not in {r["pgid"] for r in pids.values()}, f"pid {proc.name} left in a group"
    for name, port in ports.items():
        assert port_is_free(port), f"{name}: port {port} still bound"
    st = subprocess.run([str(REPO / "infra" / "status"), "--json"], env=env, capture_output=True, text=True, timeout=60)
    assert all(r["state"] == "stopped" for r in json.loads(st.stdout))


# ----------------------------------------------------------------------------------------------
# process management without any server


def test_stop_kills_the_whole_group_even_when_the_leader_died(tmp_path):
    pm = ProcessManager(tmp_path)
    spec = ServiceSpec(name="sleepers", argv=["bash", "-c", "sleep 300 & sleep 300 & wait"],
                       env=base_env(), port=None, health=lambda: True, timeout=10, cwd=tmp_path)
    st = pm.start(spec)
    deadline = time.monotonic() + 10
    while len(group_members(st.pid)) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    children = [p for p in group_members(st.pid) if p != st.pid]
    assert len(children) == 2
    os.kill(st.pid, 9)  # the leader dies; its children stay in the group
    pm.children["sleepers"].wait()
    assert pm.stop("sleepers", timeout=2) == "killed"
    assert not any(_alive(p) for p in children)
    assert not (tmp_path / "pids" / "sleepers.pid").exists()


def test_stop_never_signals_a_reused_pid(tmp_path):
    pm = ProcessManager(tmp_path)
    (tmp_path / "pids").mkdir()
    # a stale record whose PID now belongs to this very test process (another start time)
    (tmp_path / "pids" / "ghost.pid").write_text(json.dumps(
        {"name": "ghost", "pid": os.getpid(), "pgid": os.getpgid(0), "start_time": "1", "port": None}))
    assert pm.stop("ghost", timeout=1) == "not running"
    assert _alive(os.getpid())
    assert not (tmp_path / "pids" / "ghost.pid").exists()


# ----------------------------------------------------------------------------------------------
# the package itself


def test_the_package_runs_on_the_standard_library_alone():
    """`python -m infra` must work before the venv exists: no site-packages at all (-S)."""
    res = subprocess.run([sys.executable, "-S", "-m", "infra", "--help"], cwd=REPO, capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0 and res.stdout.startswith("usage: infra"), res.stdout + res.stderr


def test_the_wrappers_work_from_any_folder(tmp_path):
    env = clean_env(SIDN_INFRA_DIR=str(tmp_path / "state"))
    res = subprocess.run([str(REPO / "infra" / "status"), "--json"], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    assert {r["name"]: r["state"] for r in json.loads(res.stdout)} == dict.fromkeys(
        ("swift-account", "swift-container", "swift-object", "s3", "mlflow", "prefect", "prefect-worker"), "stopped")
