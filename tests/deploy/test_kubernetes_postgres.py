"""deploy/kubernetes-postgres.yaml: three replicas on one PostgreSQL database with a rolling
update that never goes below three ready pods, a PodDisruptionBudget, a Service, and the
DSN from the Secret mounted as a file; its config passes `check` with the password masked.
(Strict validation against the Kubernetes schemas: test_kubernetes.py, over every manifest.)"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from tests.support.config import DEPLOY
from tests.support.process import run_cli

MANIFEST = DEPLOY / "kubernetes-postgres.yaml"
SECRETS_DIR = "/run/secrets/idwise-gateway"


def kinds() -> dict[str, dict[str, Any]]:
    return {d["kind"]: d for d in yaml.safe_load_all(MANIFEST.read_text()) if d}


def test_three_replicas_rolling_with_a_disruption_budget_and_a_service() -> None:
    docs = kinds()
    assert set(docs) == {"ConfigMap", "Deployment", "PodDisruptionBudget", "Service"}
    spec = docs["Deployment"]["spec"]
    assert spec["replicas"] == 3
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    assert docs["PodDisruptionBudget"]["spec"]["minAvailable"] == 2
    labels = spec["template"]["metadata"]["labels"]
    assert docs["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"] == labels
    assert docs["Service"]["spec"]["selector"] == labels
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    assert "envFrom" not in container and all("valueFrom" not in e for e in container["env"])
    assert not any("persistentVolumeClaim" in v for v in pod["volumes"])  # no local state
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["secrets"] == SECRETS_DIR


def test_its_config_reads_the_dsn_from_the_secret_file_and_passes_check(tmp_path: Path) -> None:
    config = kinds()["ConfigMap"]["data"]["config.yaml"]
    assert yaml.safe_load(config)["storage"]["dsn"] == f"${{file:{SECRETS_DIR}/database-url}}"
    # every secret file it reads is a key of the documented `kubectl create secret`
    documented = set(re.findall(r"--from-literal=([a-z-]+)=", MANIFEST.read_text()))
    read = set(re.findall(rf"\$\{{file:{SECRETS_DIR}/([a-z-]+)\}}", config))
    assert read and read <= documented
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    password = "k8s-db-password-93e1"
    values = {
        "database-url": f"postgresql://idwise_gateway:{password}@postgres.db.svc/idwise_gateway",
        "admin-token": "a" * 32,
        "idwise-token": "idwise-token-0123456789",
        "idwise-token-next": "",
        "risk-signing-secret": "whsec_" + "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE=",
    }
    for key, value in values.items():
        (secrets / key).write_text(value + "\n")
    path = tmp_path / "config.yaml"
    path.write_text(config.replace(SECRETS_DIR, str(secrets)))
    result = run_cli("check", "-c", str(path), env={"RISK_API_URL": "http://risk:8000/idwise"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert password not in result.stdout + result.stderr
