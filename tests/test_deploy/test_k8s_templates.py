"""The Kubernetes templates stay in step with the code: their commands parse, their settings
validate, and every XDREC_* variable they set names a real setting."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from stream.cli import parser as cli_parser
from stream.settings import Settings, load_settings
from testkit.deployment import REPO

K8S = REPO / "deploy" / "k8s"


def documents() -> list[dict]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        docs.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    return docs


def containers() -> list[dict]:
    found = []
    for doc in documents():
        spec = doc.get("spec", {})
        template = spec.get("template", {}).get("spec", {})
        found.extend(template.get("containers", []))
    return found


def names_a_setting(variable: str) -> bool:
    path = variable.removeprefix("XDREC_").lower().split("__")
    model: type = Settings
    for part in path:
        fields = getattr(model, "model_fields", None)
        if fields is None or part not in fields:
            return False
        model = fields[part].annotation
    return True


def test_every_container_command_parses() -> None:
    parser = cli_parser()
    commands = {tuple(c["args"]) for c in containers()}
    assert ("worker", "--state-dir", "/state") in commands
    assert ("trainer",) in commands and ("trainer", "--once") in commands
    for args in commands:
        parser.parse_args(list(args))


def test_every_xdrec_variable_names_a_setting() -> None:
    variables = [
        env["name"]
        for c in containers()
        for env in c.get("env", [])
        if env["name"] != "XDREC_CONFIG"
    ]
    secret = next(d for d in documents() if d["kind"] == "Secret")
    variables += list(secret["stringData"])
    assert variables
    for variable in variables:
        assert variable.startswith("XDREC_") or variable == "HF_HUB_OFFLINE"
        if variable.startswith("XDREC_"):
            assert names_a_setting(variable), variable


def test_the_shared_config_is_valid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = next(d for d in documents() if d["kind"] == "ConfigMap")
    toml = tmp_path / "xdrec.toml"
    toml.write_text(config["data"]["xdrec.toml"])
    monkeypatch.delenv("XDREC_CONFIG", raising=False)
    settings = load_settings(toml)
    assert settings.models.store == "/models"
    assert settings.kafka.sasl_mechanism == "SCRAM-SHA-256"
    assert settings.trainer.window_days == 90.0


def test_the_trainer_asks_for_a_gpu_and_lets_its_job_finish() -> None:
    trainer = next(d for d in documents() if d["metadata"]["name"] == "xdrec-trainer")
    pod = trainer["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert pod["terminationGracePeriodSeconds"] >= 600
    assert trainer["spec"]["replicas"] == 1


def test_workers_are_probed_for_liveness_and_readiness() -> None:
    import yaml

    documents = list(yaml.safe_load_all((REPO / "deploy" / "k8s" / "workers.yaml").read_text()))
    (workers,) = [d for d in documents if d and d.get("kind") == "StatefulSet"]
    (container,) = workers["spec"]["template"]["spec"]["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
