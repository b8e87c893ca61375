"""Where the lake lives: `lake.root` (a path or an object-store URI) and `lake.storage`, read once.

This is the one module that knows which store a lake is on. It turns the root into the URI each
client needs (delta-rs: `s3://`, `az://`, `gs://`; Spark's Hadoop connectors: `s3a://`,
`abfss://`, `gs://`), maps the storage settings into delta-rs `storage_options` and Spark
`spark.hadoop.fs.*` keys, names the connector JARs a Spark session needs, and reads and writes
plain objects (logs, checkpoints) through obstore, which shares delta-rs's object_store client.
Secrets are read from the environment variables the config names, on the driver, when a client
is built; they are never part of the config, a log line or an error message.
"""
from __future__ import annotations

import os
import shutil
import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from engine.errors import ConfigError, ManymodelsError, Unavailable

if TYPE_CHECKING:
    from engine.config import LakeConfig, StorageConfig

KINDS = ("local", "s3", "azure", "gcs")
_SCHEMES = {"": "local", "file": "local", "s3": "s3", "s3a": "s3", "abfss": "azure", "abfs": "azure", "az": "azure",
            "gs": "gcs"}
# The credentials `lake.storage.credentials` may name, with the variables read when it names none.
CREDENTIALS = ("access_key_id", "secret_access_key", "session_token", "account_key", "sas_token", "client_id",
               "client_secret", "tenant_id", "service_account")
_DEFAULT_ENV = {
    "s3": {"access_key_id": "AWS_ACCESS_KEY_ID", "secret_access_key": "AWS_SECRET_ACCESS_KEY",
           "session_token": "AWS_SESSION_TOKEN"},
    "azure": {"account_key": "AZURE_STORAGE_ACCOUNT_KEY", "sas_token": "AZURE_STORAGE_SAS_TOKEN",
              "client_id": "AZURE_CLIENT_ID", "client_secret": "AZURE_CLIENT_SECRET", "tenant_id": "AZURE_TENANT_ID"},
    "gcs": {"service_account": "GOOGLE_APPLICATION_CREDENTIALS"},
    "local": {},
}
# object_store's keys for each credential (delta-rs and obstore take the same ones).
_RS_CREDENTIAL_KEYS = {
    "s3": {"access_key_id": "aws_access_key_id", "secret_access_key": "aws_secret_access_key",
           "session_token": "aws_session_token"},
    "azure": {"account_key": "azure_storage_account_key", "sas_token": "azure_storage_sas_key",
              "client_id": "azure_client_id", "client_secret": "azure_client_secret", "tenant_id": "azure_tenant_id"},
    "gcs": {"service_account": "google_service_account"},
    "local": {},
}
# The Hadoop connector each store needs beside pyspark's own Hadoop client.
_CONNECTORS = {"s3": "org.apache.hadoop:hadoop-aws:{hadoop}", "azure": "org.apache.hadoop:hadoop-azure:{hadoop}",
               "gcs": "com.google.cloud.bigdataoss:gcs-connector:hadoop3-2.2.26"}
# Azurite's fixed development account key, published in its documentation: not a secret.
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
_CLIENT_OPTIONS = ("allow_http", "timeout", "connect_timeout", "allow_invalid_certificates", "proxy_url")


class StorageError(ManymodelsError):
    """The lake's store refused the request: wrong credentials, no such bucket or container."""


class StorageUnavailable(Unavailable):
    """The lake's store did not answer in time."""


@dataclass(frozen=True)
class LakeStore:
    """A lake root on one store, with the settings to reach it."""

    kind: str                 # local | s3 | azure | gcs
    root: str                 # as configured
    rs_root: str              # delta-rs and obstore: an absolute path or s3:// az:// gs://
    spark_root: str           # Spark: an absolute path or s3a:// abfss:// gs://
    storage: "StorageConfig"
    account: Optional[str] = None

    @classmethod
    def of(cls, lake: "LakeConfig | LakeStore | str | Path") -> "LakeStore":
        """The store of a lake config (or of a bare root with default storage settings)."""
        if isinstance(lake, LakeStore):
            return lake
        from engine.config import LakeConfig
        if not isinstance(lake, LakeConfig):
            lake = LakeConfig(root=str(lake))
        return cls.parse_root(lake.root, lake.storage)

    @classmethod
    def parse_root(cls, root: str, storage: "StorageConfig") -> "LakeStore":
        root = str(root).strip()
        match = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://", root)
        scheme = match.group(1).lower() if match else ""
        if scheme not in _SCHEMES:
            raise ConfigError(f"config key 'lake.root' has the unsupported scheme {scheme}:// in {root!r}; use a "
                              "local path, file://, s3:// (or s3a://), abfss:// (or az://) or gs://")
        kind = _SCHEMES[scheme]
        if kind == "local":
            local = root[len("file://"):] if scheme == "file" else root
            path = str(Path(local).expanduser().resolve())
            return cls(kind, root, path, path, storage)
        rest = root[match.end():].rstrip("/")
        host, _, key = rest.partition("/")
        if not host:
            raise ConfigError(f"config key 'lake.root' {root!r} names no bucket or container after {scheme}://")
        suffix = f"/{key}" if key else ""
        if kind == "s3":
            return cls(kind, root, f"s3://{host}{suffix}", f"s3a://{host}{suffix}", storage)
        if kind == "gcs":
            return cls(kind, root, f"gs://{host}{suffix}", f"gs://{host}{suffix}", storage)
        container, at, account_host = host.partition("@")
        account = account_host.split(".")[0] if at else storage.account
        if storage.emulator and not account:
            account = "devstoreaccount1"      # Azurite's well-known account
        if not account:
            raise ConfigError(f"config key 'lake.storage.account' is required for {root!r}: name the Azure "
                              "storage account (or use abfss://container@account.dfs.core.windows.net/...)")
        return cls(kind, root, f"az://{container}{suffix}", f"abfss://{container}@{account}.dfs.core.windows.net"
                   f"{suffix}", storage, account)

    # --- paths -----------------------------------------------------------------------------------

    @property
    def is_local(self) -> bool:
        return self.kind == "local"

    def rs_path(self, name: str) -> str:
        """`name` (a table or object path relative to the root) for delta-rs and obstore."""
        return f"{self.rs_root}/{name}" if name else self.rs_root

    def spark_path(self, name: str) -> str:
        return f"{self.spark_root}/{name}" if name else self.spark_root

    def describe(self) -> str:
        """The store and root, for messages (never a secret)."""
        where = {"local": "local disk", "s3": "S3", "azure": "Azure storage", "gcs": "Google Cloud Storage"}[self.kind]
        endpoint = f" at {self.storage.endpoint}" if self.storage.endpoint else ""
        if self.kind == "azure" and self.storage.emulator and not endpoint:
            endpoint = " (emulator)"
        return f"{where}{endpoint}, lake {self.root}"

    # --- client settings ---------------------------------------------------------------------------

    def _secrets(self) -> dict[str, str]:
        """Credential -> value, from the variables the config names (else the usual ones)."""
        names = {**_DEFAULT_ENV[self.kind], **self.storage.credentials}
        return {cred: os.environ[var] for cred, var in names.items() if os.environ.get(var)}

    def storage_options(self) -> dict[str, str]:
        """delta-rs `storage_options` (object_store keys, strings)."""
        s, options = self.storage, {}
        if self.kind == "local":
            return {}
        seconds = f"{s.timeout:g}s"
        options.update({"timeout": seconds, "connect_timeout": f"{min(s.timeout, 5.0):g}s",
                        "max_retries": str(s.retries), "retry_timeout": f"{s.timeout * (s.retries + 1):g}s"})
        if s.allow_http:
            options["allow_http"] = "true"
        if self.kind == "s3":
            options["aws_region"] = s.region or "us-east-1"
            # delta-rs commits with put-if-absent; S3 (and compatible servers) do it with If-None-Match.
            options["aws_conditional_put"] = "etag"
            if s.endpoint:
                options["aws_endpoint_url"] = s.endpoint
            if s.path_style:
                options["aws_virtual_hosted_style_request"] = "false"
        elif self.kind == "azure":
            options["azure_storage_account_name"] = self.account
            if s.emulator:
                # object_store's use_emulator pins port 10000; an explicit endpoint and Azurite's
                # published development key reach an emulator on any port.
                options.update({"azure_storage_endpoint": s.endpoint or f"http://127.0.0.1:10000/{self.account}",
                                "azure_storage_account_key": AZURITE_KEY, "allow_http": "true"})
            elif s.endpoint:
                options["azure_storage_endpoint"] = s.endpoint
        options.update({_RS_CREDENTIAL_KEYS[self.kind][k]: v for k, v in self._secrets().items()
                        if k in _RS_CREDENTIAL_KEYS[self.kind]})
        options.update(s.options)
        return options

    def spark_conf(self) -> dict[str, str]:
        """`spark.hadoop.*` settings for this store (empty for a local lake)."""
        s, secrets, conf = self.storage, self._secrets(), {}
        retries, timeout_ms = s.retries, int(s.timeout * 1000)
        if self.kind == "s3":
            conf.update({"fs.s3a.endpoint.region": s.region or "us-east-1",
                         "fs.s3a.path.style.access": str(s.path_style).lower(),
                         "fs.s3a.connection.timeout": str(timeout_ms),
                         "fs.s3a.connection.establish.timeout": str(min(timeout_ms, 5000)),
                         "fs.s3a.attempts.maximum": str(retries + 1), "fs.s3a.retry.limit": str(retries),
                         "fs.s3a.retry.throttle.limit": str(retries)})
            if s.endpoint:
                conf["fs.s3a.endpoint"] = s.endpoint
                conf["fs.s3a.connection.ssl.enabled"] = str(not s.endpoint.startswith("http://")).lower()
            if "access_key_id" in secrets and "secret_access_key" in secrets:
                conf.update({"fs.s3a.access.key": secrets["access_key_id"],
                             "fs.s3a.secret.key": secrets["secret_access_key"]})
                if "session_token" in secrets:
                    conf["fs.s3a.session.token"] = secrets["session_token"]
                    conf["fs.s3a.aws.credentials.provider"] = \
                        "org.apache.hadoop.fs.s3a.TemporaryAWSCredentialsProvider"
                else:
                    conf["fs.s3a.aws.credentials.provider"] = "org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider"
        elif self.kind == "azure":
            host = f"{self.account}.dfs.core.windows.net"
            if "account_key" in secrets:
                conf[f"fs.azure.account.key.{host}"] = secrets["account_key"]
            elif "sas_token" in secrets:
                conf.update({f"fs.azure.account.auth.type.{host}": "SAS",
                             f"fs.azure.sas.fixed.token.{host}": secrets["sas_token"]})
            elif {"client_id", "client_secret", "tenant_id"} <= set(secrets):
                conf.update({f"fs.azure.account.auth.type.{host}": "OAuth",
                             f"fs.azure.account.oauth.provider.type.{host}":
                                 "org.apache.hadoop.fs.azurebfs.oauth2.ClientCredsTokenProvider",
                             f"fs.azure.account.oauth2.client.id.{host}": secrets["client_id"],
                             f"fs.azure.account.oauth2.client.secret.{host}": secrets["client_secret"],
                             f"fs.azure.account.oauth2.client.endpoint.{host}":
                                 f"https://login.microsoftonline.com/{secrets['tenant_id']}/oauth2/token"})
            conf.update({"fs.azure.io.retry.max.retries": str(retries),
                         "fs.azure.http.connection.timeout": str(min(timeout_ms, 5000)),
                         "fs.azure.http.read.timeout": str(timeout_ms)})
        elif self.kind == "gcs":
            conf.update({"fs.gs.impl": "com.google.cloud.hadoop.fs.gcs.GoogleHadoopFileSystem",
                         "fs.AbstractFileSystem.gs.impl": "com.google.cloud.hadoop.fs.gcs.GoogleHadoopFS",
                         "fs.gs.http.max.retry": str(retries), "fs.gs.http.connect-timeout": str(timeout_ms)})
            if "service_account" in secrets:
                conf.update({"fs.gs.auth.service.account.enable": "true",
                             "fs.gs.auth.service.account.json.keyfile": secrets["service_account"]})
        conf.update(s.spark_conf)
        settings = {f"spark.hadoop.{k}": v for k, v in conf.items()}
        if self.kind == "s3":
            # One writer per lake at a time (the nightly lease), so Delta's default single-driver S3
            # log store is safe; concurrent writers from several clusters need the DynamoDB log store.
            settings.setdefault("spark.delta.logStore.s3a.impl", "io.delta.storage.S3SingleDriverLogStore")
        return settings

    def spark_packages(self) -> list[str]:
        """Maven coordinates of the Hadoop connector this store needs (none for a local lake)."""
        if self.kind == "local":
            return []
        if self.kind == "azure" and self.storage.emulator:
            raise StorageError(f"Spark cannot reach the Azure Storage emulator ({self.describe()}): Hadoop 3.5's "
                               "abfss:// connector needs a real ADLS Gen2 account. Use --backend local (delta-rs) "
                               "on the emulator, or point lake.root at a real account")
        return [_CONNECTORS[self.kind].format(hadoop=hadoop_version())]

    # --- plain objects (logs, checkpoints) -------------------------------------------------------

    def object_store_args(self, name: str = "") -> dict:
        """`obstore.store.from_url` arguments for the folder `name` under the root: plain data, so
        they travel to a worker (which then needs no environment of its own)."""
        if self.is_local:
            return {"url": Path(self.rs_path(name)).as_uri()}
        options = self.storage_options()
        client = {k: options.pop(k) for k in list(options) if k in _CLIENT_OPTIONS}
        retry = {"max_retries": int(options.pop("max_retries")),
                 "retry_timeout": _seconds(options.pop("retry_timeout"))}
        options.pop("aws_conditional_put", None)
        return {"url": self.rs_path(name), "config": options, "client_options": client, "retry_config": retry}

    def _object_store(self):
        from obstore.store import from_url
        if self.is_local:
            Path(self.rs_root).mkdir(parents=True, exist_ok=True)
        return from_url(**self.object_store_args())

    def put_object(self, name: str, data: bytes) -> str:
        """Write `data` to `name` under the root; returns its URI."""
        with storage_errors(self):
            self._object_store().put(name, data)
        return self.rs_path(name)

    def delete_prefix(self, name: str) -> None:
        """Delete every object under the folder `name` (nothing there is fine)."""
        if self.is_local:
            shutil.rmtree(self.rs_path(name), ignore_errors=True)
            return
        with storage_errors(self):
            store = self._object_store()
            for chunk in store.list(name.rstrip("/") + "/"):
                store.delete([meta["path"] for meta in chunk])

    def check(self) -> None:
        """One cheap request that fails fast, with a message that says what to fix, when the store
        cannot be reached or refuses these credentials (a missing lake folder is fine)."""
        if self.is_local:
            return
        with storage_errors(self):
            store = self._object_store()
            next(iter(store.list(None, chunk_size=1)), None)


def hadoop_version() -> str:
    """The Hadoop version pyspark ships (its connectors must match it exactly)."""
    import pyspark
    jars = Path(pyspark.__file__).parent / "jars"
    for jar in jars.glob("hadoop-client-api-*.jar"):
        return jar.stem.removeprefix("hadoop-client-api-")
    raise StorageError(f"cannot tell pyspark's Hadoop version: no hadoop-client-api JAR in {jars}")


def _seconds(text: str):
    from datetime import timedelta
    return timedelta(seconds=float(text.rstrip("s")))


# How stores say no: an HTTP status in object_store's message, or the store's own error code.
_REFUSED = re.compile(r"status code: 40[13]|InvalidAccessKeyId|SignatureDoesNotMatch|AccessDenied|AuthenticationFailed|"
                      r"AuthorizationFailure|InvalidAuthenticationInfo|Forbidden")
_MISSING = re.compile(r"NoSuchBucket|ContainerNotFound|The specified container does not exist|"
                      r"bucket does not exist")
_UNREACHABLE = re.compile(r"error sending request|onnection refused|error trying to connect|dns error|timed out|"
                          r"tcp connect error|onnection reset|operation timed out|Could not connect")


def storage_error(store: LakeStore, exc: BaseException) -> Optional[ManymodelsError]:
    """The user-facing error for a store failure, or None when `exc` is no store failure."""
    if isinstance(exc, ManymodelsError):
        return exc
    text = f"{type(exc).__name__}: {exc}"
    where = store.describe()
    if _REFUSED.search(text):
        names = {**_DEFAULT_ENV[store.kind], **store.storage.credentials}
        return StorageError(f"{where} refused the credentials: set {', '.join(names.values())} (or "
                            "lake.storage.credentials to the names of your variables) to credentials that may read "
                            "and write the lake")
    if _MISSING.search(text):
        kind = "container" if store.kind == "azure" else "bucket"
        return StorageError(f"{where}: the {kind} does not exist; create it, or fix lake.root")
    if _UNREACHABLE.search(text):
        return StorageUnavailable(f"cannot reach {where}: no answer from the store ({_first_line(text)}); check "
                                  "lake.storage.endpoint and the network, then rerun: Delta commits are atomic, so "
                                  "a rerun finishes the job")
    return None


def _first_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= 200 else line[:197] + "..."


@contextmanager
def storage_errors(store: LakeStore):
    """Turns a store failure inside the block into a StorageError/StorageUnavailable."""
    try:
        yield
    except Exception as exc:
        error = None if store.is_local else storage_error(store, exc)
        if error is None or error is exc:
            raise
        raise error from None
