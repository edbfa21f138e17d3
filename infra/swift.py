"""The S3 object store: one-node OpenStack Swift with its ``s3api`` middleware (a real S3 server),
and the buckets the project uses.

Swift is installed from PyPI by ``infra/install-swift.sh`` into ``.infra/venv-swift`` (its own venv)
and runs as four processes: the account, container and object servers and the proxy that speaks
S3. MinIO's server is not installable from the package registries these machines reach; moto is an
in-process mock, not a server.
"""

from __future__ import annotations

import getpass
import json
import secrets
import subprocess
import time
from pathlib import Path
from typing import Any, Iterable

from infra import REPO, InfraError
from infra.credentials import S3Credentials, write_private
from infra.environment import base_env
from infra.http_client import http_get
from infra.ports import HOST_DEFAULT, port_is_listening
from infra.processes import ServiceSpec

#: Bucket conventions shared by DVC, MLflow and pipelines/tracking/storage.py (see infra/README.md).
DATA_BUCKET = "sidn-data"  # s3://sidn-data/dvc (DVC remote), s3://sidn-data/bundles/... (publish_bundle)
MLFLOW_BUCKET = "sidn-mlflow"  # s3://sidn-mlflow/artifacts (MLflow artifact destination)
BUCKETS = (DATA_BUCKET, MLFLOW_BUCKET)
S3_REGION = "us-east-1"


def ensure_installed(venv: Path) -> None:
    """Install Swift into ``venv`` with ``infra/install-swift.sh`` unless it is there already."""
    if (venv / "bin" / "swift-proxy-server").exists():
        return
    script = REPO / "infra" / "install-swift.sh"
    print(f"installing OpenStack Swift into {venv} ...", flush=True)
    res = subprocess.run(["bash", str(script)], env=base_env({"SIDN_SWIFT_VENV": str(venv)}))
    if res.returncode != 0:
        raise InfraError(f"{script} failed (exit {res.returncode})")


_RING_SCRIPT = r"""
import json, sys
from swift.common.ring import RingBuilder
cfg = json.loads(sys.argv[1])
for kind, port in cfg["ports"].items():
    b = RingBuilder(8, 1, 1)          # 2**8 partitions, 1 replica, min_part_hours 1
    b.add_dev({"id": 0, "region": 1, "zone": 1, "ip": cfg["host"], "port": port,
               "device": "d1", "weight": 100, "meta": ""})
    b.rebalance()
    b.save(f"{cfg['etc']}/{kind}.builder")
    b.get_ring().save(f"{cfg['etc']}/{kind}.ring.gz")
"""


class SwiftS3:
    """One-node OpenStack Swift with s3api: configuration, rings, process specs, buckets.

    Layout under ``root``: ``etc/`` (swift.conf, *-server.conf, rings), ``srv/d1`` (object data; the
    filesystem must support user extended attributes: ext4/xfs do, tmpfs before Linux 6.6 may not),
    ``run/`` (recon cache).
    """

    def __init__(
        self,
        root: Path,
        ports: dict[str, int],
        credentials: S3Credentials,
        venv: Path,
        host: str = HOST_DEFAULT,
        log_level: str = "INFO",
    ) -> None:
        self.root = Path(root).resolve()
        self.etc = self.root / "etc"
        self.srv = self.root / "srv"
        self.run = self.root / "run"
        self.ports = ports  # keys: s3, swift-account, swift-container, swift-object
        self.credentials = credentials
        self.venv = Path(venv)
        self.host = host
        self.log_level = log_level

    @property
    def endpoint(self) -> str:
        """``http://HOST:PORT`` of the S3 API."""
        return f"http://{self.host}:{self.ports['s3']}"

    def check_installed(self) -> None:
        """Raise :class:`InfraError` if Swift is missing from the venv."""
        if not (self.venv / "bin" / "swift-proxy-server").exists():
            raise InfraError(
                f"OpenStack Swift is not installed in {self.venv}: run infra/install-swift.sh "
                "(or `make up`, which runs it)"
            )

    def configure(self) -> None:
        """Write the configuration and (re)build the rings when the ports changed. Idempotent."""
        self.check_installed()
        for d in (self.etc, self.srv / "d1", self.run):
            d.mkdir(parents=True, exist_ok=True)
        user = getpass.getuser()
        swift_conf = self.etc / "swift.conf"
        if not swift_conf.exists():
            write_private(
                swift_conf,
                "[swift-hash]\n"
                f"swift_hash_path_suffix = {secrets.token_hex(8)}\n"
                f"swift_hash_path_prefix = {secrets.token_hex(8)}\n\n"
                "[storage-policy:0]\nname = Policy-0\ndefault = yes\n",
            )
        common = (
            "[DEFAULT]\n"
            f"swift_dir = {self.etc}\n"
            f"devices = {self.srv}\n"
            "mount_check = false\n"
            f"bind_ip = {self.host}\n"
            "workers = 0\n"
            f"user = {user}\n"
            f"recon_cache_path = {self.run}\n"
            f"log_level = {self.log_level}\n"
        )
        for kind in ("account", "container", "object"):
            write_private(
                self.etc / f"{kind}-server.conf",
                common
                + f"bind_port = {self.ports['swift-' + kind]}\nlog_name = {kind}-server\n\n"
                f"[pipeline:main]\npipeline = {kind}-server\n\n"
                f"[app:{kind}-server]\nuse = egg:swift#{kind}\n\n"
                f"[{kind}-replicator]\n\n[{kind}-auditor]\n"
                + ("\n[container-updater]\n\n[container-sync]\n" if kind == "container" else "")
                + ("\n[object-updater]\n" if kind == "object" else ""),
            )
        account, user_name = self.credentials.access_key_id.split(":", 1)
        write_private(
            self.etc / "proxy-server.conf",
            "[DEFAULT]\n"
            f"swift_dir = {self.etc}\n"
            f"bind_ip = {self.host}\n"
            f"bind_port = {self.ports['s3']}\n"
            "workers = 0\n"
            f"user = {user}\n"
            "log_name = proxy-server\n"
            f"log_level = {self.log_level}\n\n"
            "[pipeline:main]\n"
            "pipeline = catch_errors gatekeeper healthcheck proxy-logging listing_formats s3api tempauth "
            "copy slo dlo proxy-logging proxy-server\n\n"
            "[app:proxy-server]\nuse = egg:swift#proxy\naccount_autocreate = true\n\n"
            "[filter:catch_errors]\nuse = egg:swift#catch_errors\n\n"
            "[filter:gatekeeper]\nuse = egg:swift#gatekeeper\n\n"
            "[filter:healthcheck]\nuse = egg:swift#healthcheck\n\n"
            "[filter:proxy-logging]\nuse = egg:swift#proxy_logging\n\n"
            "[filter:listing_formats]\nuse = egg:swift#listing_formats\n\n"
            "[filter:s3api]\nuse = egg:swift#s3api\n"
            f"location = {S3_REGION}\n\n"
            "[filter:tempauth]\nuse = egg:swift#tempauth\n"
            f"user_{account}_{user_name} = {self.credentials.secret_access_key} .admin\n\n"
            "[filter:copy]\nuse = egg:swift#copy\n\n"
            "[filter:slo]\nuse = egg:swift#slo\n\n"
            "[filter:dlo]\nuse = egg:swift#dlo\n",
        )
        ring_ports = {k: self.ports["swift-" + k] for k in ("account", "container", "object")}
        stamp = self.etc / "rings.json"
        wanted = json.dumps({"host": self.host, "ports": ring_ports}, sort_keys=True)
        if not stamp.exists() or stamp.read_text() != wanted or not (self.etc / "object.ring.gz").exists():
            cfg = json.dumps({"host": self.host, "ports": ring_ports, "etc": str(self.etc)})
            res = subprocess.run(
                [str(self.venv / "bin" / "python"), "-c", _RING_SCRIPT, cfg],
                capture_output=True,
                text=True,
                env=base_env(),
            )
            if res.returncode != 0:
                raise InfraError(f"building Swift rings in {self.etc} failed:\n{res.stderr[-2000:]}")
            stamp.write_text(wanted)

    def specs(self, timeout: float = 60.0) -> list[ServiceSpec]:
        """The account, container and object servers, then the S3 proxy (which needs them)."""
        env = base_env()
        specs = []
        for kind in ("account", "container", "object"):
            port = self.ports["swift-" + kind]
            specs.append(
                ServiceSpec(
                    name=f"swift-{kind}",
                    argv=[str(self.venv / "bin" / f"swift-{kind}-server"), str(self.etc / f"{kind}-server.conf"), "-v"],
                    env=env,
                    port=port,
                    health=lambda port=port: port_is_listening(port, self.host),
                    timeout=timeout,
                    describe=f"Swift {kind} server",
                )
            )
        specs.append(
            ServiceSpec(
                name="s3",
                argv=[str(self.venv / "bin" / "swift-proxy-server"), str(self.etc / "proxy-server.conf"), "-v"],
                env=env,
                port=self.ports["s3"],
                health=self.healthy,
                timeout=timeout,
                describe="S3 API (Swift proxy + s3api)",
            )
        )
        return specs

    def healthy(self) -> bool:
        """The proxy answers ``/healthcheck`` with ``OK``."""
        status, body = http_get(f"{self.endpoint}/healthcheck", timeout=2)
        return status == 200 and body.strip() == b"OK"

    def client(self, **config_kwargs: Any) -> Any:
        """A boto3 S3 client for this store (path-style addressing, a few retries)."""
        import boto3
        from botocore.config import Config

        cfg = Config(
            s3={"addressing_style": "path"},
            signature_version="s3v4",
            retries={"mode": "standard", "max_attempts": 3},
            connect_timeout=5,
            read_timeout=30,
            **config_kwargs,
        )
        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.credentials.access_key_id,
            aws_secret_access_key=self.credentials.secret_access_key,
            region_name=S3_REGION,
            config=cfg,
        )

    def ensure_buckets(self, buckets: Iterable[str] = BUCKETS, timeout: float = 30.0) -> None:
        """Create the buckets if missing (this exercises account, container and S3 auth end to end)."""
        from botocore.exceptions import ClientError, EndpointConnectionError

        s3 = self.client()
        deadline = time.monotonic() + timeout
        for bucket in buckets:
            while True:
                try:
                    s3.head_bucket(Bucket=bucket)
                    break
                except ClientError as exc:
                    code = exc.response.get("Error", {}).get("Code", "")
                    try:
                        if code in ("404", "NoSuchBucket", "NotFound"):
                            s3.create_bucket(Bucket=bucket)
                            break
                        raise
                    except ClientError as exc2:
                        code2 = exc2.response.get("Error", {}).get("Code", "")
                        if code2 in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                            break
                        if time.monotonic() > deadline or code2 in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403"):
                            raise InfraError(f"creating bucket {bucket} at {self.endpoint} failed: {code2 or exc2}") from None
                        time.sleep(0.5)
                except EndpointConnectionError as exc:
                    if time.monotonic() > deadline:
                        raise InfraError(f"S3 endpoint {self.endpoint} does not answer: {exc}") from None
                    time.sleep(0.5)
