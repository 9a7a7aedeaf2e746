"""deploy/kubernetes*.yaml: every manifest validates offline against the Kubernetes API
schemas (kubernetes-validate, strict: unknown fields are errors), the manifests agree with
the config they mount, and that config runs a real gateway whose secrets rotate without a
restart."""

from __future__ import annotations

import re
import signal
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.support.config import DEPLOY, ROOT, free_port
from tests.support.payloads import payload
from tests.support.process import gateway_process, post, run_cli
from tests.support.waiting import wait_until

MANIFESTS = sorted(DEPLOY.glob("kubernetes*.yaml"))
#: the oldest Kubernetes still commonly run, and the newest the validator knows
VERSIONS = ("1.28.0", kubernetes_validate.latest_version())
SECRETS_DIR = "/run/secrets/idwise-gateway"
RULES_DIR = "/etc/idwise-gateway/rules"

# The validator bundles the Kubernetes API's schemas only; a custom resource has no schema
# there (it would come from the operator's CRD, which we do not vendor). PodMonitor is checked
# against the part of monitoring.coreos.com/v1 that the example uses, unknown fields refused.
_SELECTOR = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"matchLabels": {"type": "object", "additionalProperties": {"type": "string"}}},
}
_SECRET_KEY = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "key"],
    "properties": {"name": {"type": "string"}, "key": {"type": "string"}},
}
POD_MONITOR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "PodMonitor"},
        "metadata": {"type": "object"},
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["selector", "podMetricsEndpoints"],
            "properties": {
                "selector": _SELECTOR,
                "podMetricsEndpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string"},
                            "interval": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                            "authorization": {
                                "type": "object",
                                "additionalProperties": False,
                                "properties": {
                                    "type": {"type": "string"},
                                    "credentials": _SECRET_KEY,
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}
CUSTOM_SCHEMAS = {("monitoring.coreos.com/v1", "PodMonitor"): POD_MONITOR_SCHEMA}


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def all_documents() -> list[dict[str, Any]]:
    return [doc for path in MANIFESTS for doc in documents(path)]


def of_kind(kind: str, path: Path) -> list[dict[str, Any]]:
    return [doc for doc in documents(path) if doc["kind"] == kind]


def config_text() -> str:
    (configmap,) = of_kind("ConfigMap", DEPLOY / "kubernetes-config.yaml")
    text: str = configmap["data"]["config.yaml"]
    return text


def gateway_container(deployment: dict[str, Any]) -> dict[str, Any]:
    (container,) = [
        c
        for c in deployment["spec"]["template"]["spec"]["containers"]
        if c["name"] == "idwise-gateway"
    ]
    return container


def test_the_manifests_exist() -> None:
    assert [p.name for p in MANIFESTS] == [
        "kubernetes-config.yaml",
        "kubernetes-postgres.yaml",
        "kubernetes-sidecar.yaml",
        "kubernetes.yaml",
    ]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifests_validate_strictly(path: Path, version: str) -> None:
    for doc in documents(path):
        custom = CUSTOM_SCHEMAS.get((doc["apiVersion"], doc["kind"]))
        if custom is not None:
            jsonschema.validate(doc, custom)
        else:
            kubernetes_validate.validate(doc, version, strict=True)  # raises on any problem


def test_the_validators_refuse_an_unknown_field() -> None:
    (deployment,) = of_kind("Deployment", DEPLOY / "kubernetes.yaml")
    deployment["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, VERSIONS[-1], strict=True)
    (monitor,) = of_kind("PodMonitor", DEPLOY / "kubernetes.yaml")
    monitor["spec"]["podMetricsEndpoints"][0]["bearerTokenFile"] = "/x"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(monitor, POD_MONITOR_SCHEMA)


def test_every_kind_is_validated() -> None:
    kinds = {(doc["apiVersion"], doc["kind"]) for doc in all_documents()}
    custom = {k for k in kinds if "." in k[0].split("/")[0] and not k[0].endswith(".k8s.io/v1")}
    assert custom == set(CUSTOM_SCHEMAS)


@pytest.mark.parametrize("name", ["kubernetes.yaml", "kubernetes-sidecar.yaml"])
def test_workload_is_one_recreated_replica_reading_secrets_from_files(name: str) -> None:
    (deployment,) = of_kind("Deployment", DEPLOY / name)
    spec = deployment["spec"]
    pod = spec["template"]["spec"]
    container = gateway_container(deployment)
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
    assert pod["automountServiceAccountToken"] is False
    assert container["lifecycle"]["preStop"]["exec"]["command"][0] == "/bin/sleep"
    pause = int(container["lifecycle"]["preStop"]["exec"]["command"][1])
    grace = int(re.search(r"shutdown_grace: (\d+)s", config_text())[1])  # type: ignore[index]
    assert pause + grace < pod["terminationGracePeriodSeconds"]
    # secrets never as environment variables: rotation must need no restart
    assert "envFrom" not in container
    assert all("valueFrom" not in env for env in container["env"])
    # every volume a directory, no items lists, no subPath (it never sees updates)
    assert all("subPath" not in mount for mount in container["volumeMounts"])
    assert all("items" not in (v.get("configMap") or {}) for v in pod["volumes"])
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["rules"]["configMap"]["name"] == "idwise-gateway-rules"
    assert mounts["rules"] == RULES_DIR
    assert volumes["secrets"]["secret"]["secretName"] == "idwise-gateway-secrets"
    assert mounts["secrets"] == SECRETS_DIR
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["IDWISE_GATEWAY_CONFIG"] == mounts["config"] + "/config.yaml"


def test_the_primary_example_has_a_network_policy_and_a_pod_monitor() -> None:
    path = DEPLOY / "kubernetes.yaml"
    (deployment,) = of_kind("Deployment", path)
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    (policy,) = of_kind("NetworkPolicy", path)
    (monitor,) = of_kind("PodMonitor", path)
    (service,) = of_kind("Service", path)
    assert policy["spec"]["podSelector"]["matchLabels"] == labels
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    assert monitor["spec"]["selector"]["matchLabels"] == labels
    assert service["spec"]["selector"] == labels
    ports = {p["name"] for p in gateway_container(deployment)["ports"]}
    assert monitor["spec"]["podMetricsEndpoints"][0]["port"] in ports
    assert monitor["spec"]["podMetricsEndpoints"][0]["authorization"]["credentials"] == {
        "name": "idwise-gateway-secrets",
        "key": "admin-token",
    }


def test_every_secret_file_the_config_reads_is_a_key_of_the_documented_secret() -> None:
    header = (DEPLOY / "kubernetes-config.yaml").read_text().split("apiVersion:")[0]
    documented = set(re.findall(r"--from-literal=([\w-]+)=", header.split("create secret")[1]))
    read = set(re.findall(r"\$\{file:" + SECRETS_DIR + r"/([\w-]+)\}", config_text()))
    assert read and read == documented


# -------------------------------------------------- the mounted config, run for real
def materialise(tmp_path: Path, secrets: dict[str, str]) -> Path:
    """The ConfigMap's config.yaml with the pod's paths mapped into tmp_path: the Secret's
    files, the rules ConfigMap (the repository's rules/), the image's scripts, the PVC."""
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir(exist_ok=True)
    keys = set(re.findall(r"\$\{file:" + SECRETS_DIR + r"/([\w-]+)\}", config_text()))
    for key in keys:
        (secrets_dir / key).write_text(secrets.get(key, "") + "\n")
    text = (
        config_text()
        .replace(SECRETS_DIR, str(secrets_dir))
        .replace(RULES_DIR, str(ROOT / "rules"))
        .replace("/usr/local/libexec/idwise-gateway", str(ROOT / "scripts"))
        .replace("/var/lib/idwise-gateway", str(tmp_path))
    )
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


SECRETS = {
    "idwise-token": "k8s-token-one-0123456789",
    "admin-token": "k8s-admin-token-0123456789",
    "slack-compliance-url": "http://127.0.0.1:9/slack",
    "activation-token": "activation-0123456789",
    "activation-signing-secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
}
ENV = {
    "SMTP_HOST": "127.0.0.1",
    "COMPLIANCE_MAIL_FROM": "gateway@example.com",
    "COMPLIANCE_MAIL_TO": "compliance@example.com",
    "ACTIVATION_URL": "http://127.0.0.1:9/activate",
}


@pytest.mark.slow
def test_the_mounted_config_passes_check(tmp_path: Path) -> None:
    result = run_cli("check", "-c", str(materialise(tmp_path, SECRETS)), env=ENV)
    assert result.returncode == 0, result.stdout + result.stderr
    for secret in SECRETS.values():
        assert secret not in result.stdout + result.stderr


@pytest.mark.slow
def test_a_rotated_secret_file_applies_on_reload_without_restart(tmp_path: Path) -> None:
    path = materialise(tmp_path, SECRETS)
    # the pod's listeners are 0.0.0.0:8080/9091; give the test free loopback ports
    text = path.read_text().replace("port: 8080", f"port: {free_port()}")
    path.write_text(
        text.replace("port: 9091", f"port: {free_port()}").replace("0.0.0.0", "127.0.0.1")
    )
    old = {"Authorization": f"Bearer {SECRETS['idwise-token']}"}
    new = {"Authorization": "Bearer k8s-token-two-0123456789"}
    with gateway_process(path, env=ENV) as gateway:
        assert post(gateway.url, payload("Finished Step"), old)[0] == 200
        assert post(gateway.url, payload("Finished Journey"), new)[0] == 401
        # the kubelet swaps the Secret's files; the operator sends SIGHUP (kill -HUP 1)
        (tmp_path / "secrets" / "idwise-token").write_text("k8s-token-two-0123456789\n")
        gateway.signal(signal.SIGHUP)
        wait_until(lambda: post(gateway.url, payload("Finished Journey"), new)[0] == 200)
        assert post(gateway.url, payload("Updated Journey"), old)[0] == 401
        assert gateway.process is not None and gateway.process.poll() is None
    assert SECRETS["idwise-token"] not in gateway.logs()
