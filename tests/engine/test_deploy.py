"""`manymodels deploy`: MLflow's Dockerfile for the registered model and Kubernetes manifests that
validate against the Kubernetes schemas (offline), and an image model folder that loads and answers."""
from __future__ import annotations

import json
import subprocess
import sys

import kubernetes_validate
import pytest
import yaml

from engine.deploy import KUBERNETES_VERSION, validate
from engine.errors import ConfigError
from tests.conftest import run_forecasts


@pytest.fixture(scope="module")
def deployed(published, tmp_path_factory):
    config = published[0]
    folder = tmp_path_factory.mktemp("deploy")
    path = folder / "nightly.yaml"
    path.write_text(yaml.safe_dump({"name": "Grid_Zones", "lake": {"root": str(config.lake.root)},
                                    "mlflow": {"tracking_uri": config.mlflow.tracking_uri,
                                               "registered_model": "test-router"}}))
    out = subprocess.run([sys.executable, "-m", "engine", "deploy", "--config", str(path), "--output",
                          str(folder / "out"), "--image", "example.azurecr.io/zones-router:v1", "--replicas", "3"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return folder / "out", out.stdout


def documents(path) -> list[dict]:
    return list(yaml.safe_load_all(path.read_text()))


def test_manifests_validate_against_the_kubernetes_schemas(deployed):
    out, stdout = deployed
    serving, nightly = documents(out / "k8s" / "serving.yaml"), documents(out / "k8s" / "nightly.yaml")
    assert [d["kind"] for d in serving] == ["Deployment", "Service", "HorizontalPodAutoscaler",
                                            "PodDisruptionBudget"]
    assert [d["kind"] for d in nightly] == ["ConfigMap", "CronJob"]
    for document in serving + nightly:
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
    deployment = serving[0]
    assert deployment["metadata"]["name"] == "grid-zones-router" and deployment["spec"]["replicas"] == 3
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "example.azurecr.io/zones-router:v1"
    assert container["readinessProbe"]["httpGet"] == {"path": "/ping", "port": 8080}
    assert container["livenessProbe"]["httpGet"]["path"] == "/ping"
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    assert pod["securityContext"]["runAsNonRoot"] is True and not container["securityContext"][
        "allowPrivilegeEscalation"]
    assert serving[2]["spec"]["minReplicas"] == 3
    cronjob = nightly[1]
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    job = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert job["envFrom"] == [{"secretRef": {"name": "grid-zones-credentials", "optional": True}}]
    assert "Grid_Zones" in nightly[0]["data"]["nightly.yaml"]
    assert "kubectl apply -f" in stdout


def test_a_manifest_the_schema_rejects_is_one_line_naming_it():
    broken = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"},
              "spec": {"replicas": "two", "selector": {}, "template": {}}}
    with pytest.raises(ConfigError, match="Deployment x: .* \\(at spec/replicas\\)"):
        validate([broken])


def test_the_image_entry_point_loads_the_model_it_was_given(deployed, published, tmp_path):
    """The Dockerfile is MLflow's, serving model_dir; that folder loads outside the checkout and
    answers what training published."""
    out, _ = deployed
    config, report, _ = published
    dockerfile = (out / "serving" / "Dockerfile").read_text()
    assert "COPY model_dir /opt/ml/model" in dockerfile and "USER 10001" in dockerfile
    entry = json.loads(dockerfile.split("ENTRYPOINT", 1)[1].strip())
    assert entry[:5] == ["mlflow", "models", "serve", "-m", "/opt/ml/model"] and "0.0.0.0" in entry
    model_dir = out / "serving" / "model_dir"
    assert (model_dir / "MLmodel").exists() and (model_dir / "code" / "engine").is_dir()
    trained = run_forecasts(config, report.run_id)
    entity = trained["entity_id"].iloc[0]
    rows = trained[trained["entity_id"] == entity]
    request = [{"entity_id": entity, "ds": ts.strftime("%Y-%m-%dT%H:%M:%SZ"), "temperature": 55.0}
               for ts in rows["ds"]]
    script = ("import json, sys, mlflow, pandas as pd; m = mlflow.pyfunc.load_model(sys.argv[1]); "
              "print(json.dumps(m.predict(pd.DataFrame(json.loads(sys.argv[2])))['yhat'].tolist()))")
    answer = subprocess.run([sys.executable, "-c", script, str(model_dir), json.dumps(request)], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert answer.returncode == 0, answer.stderr
    assert len(json.loads(answer.stdout.strip().splitlines()[-1])) == len(rows)
