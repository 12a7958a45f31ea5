"""deploy/ scaled out, without a container engine: the fleet's Kubernetes manifests (ingest
nodes, GPU workers) against the Kubernetes schemas, the NATS Helm chart's values, and the
one-host compose file against the compose schema; every vidcap config in them loads."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from stream.config import Config, WorkerConfig, load_yaml, parse_config, parse_section
from tests.test_deploy_manifests import (
    DEPLOY,
    K8S_VERSION,
    check_compose_nats,
    check_probes,
    check_restrictive,
    check_secrets_created,
    check_writable_mounts,
    created_secret_keys,
    provide_env,
    validate_compose,
    volume_mounts,
    writable_volume,
)

FLEET = DEPLOY / "k8s" / "fleet.yaml"
NATS_VALUES = DEPLOY / "k8s" / "nats-values.yaml"
COMPOSE_FLEET = DEPLOY / "compose.fleet.yaml"
USERS = DEPLOY / "nats" / "vidcap-users.conf"
COMPOSE_NATS_URL = "nats://nats:4222"  # compose's NATS service


def helm_cluster_urls() -> str:
    """nats.url for the Helm release "nats": each server of its StatefulSet."""
    replicas = read_yaml(NATS_VALUES)["config"]["cluster"]["replicas"]
    return ",".join(f"nats://nats-{n}.nats-headless:4222" for n in range(replicas))


def read_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def parsed_args(args: list[str]) -> tuple[str, str]:
    """(command, config file) of `vidcap <command> --config <file>`."""
    command, flag, config = args
    assert flag == "--config"
    return command, config


def header_command(path: Path, start: str) -> list[str]:
    """The shell command starting with ``start`` in a file's header comment, its continuation
    lines joined."""
    lines = [line.lstrip("#").strip() for line in path.read_text().splitlines()]
    first = next(n for n, line in enumerate(lines) if line.startswith(start))
    command = lines[first]
    for line in lines[first + 1 :]:
        if not command.endswith("\\"):
            break
        command = command[:-1] + line
    return shlex.split(command)


# --- Kubernetes ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fleet() -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(FLEET.read_text()) if doc]


def deployment(fleet: list[dict[str, Any]], name: str) -> dict[str, Any]:
    (found,) = [d for d in fleet if d["kind"] == "Deployment" and d["metadata"]["name"] == name]
    return found


def pod_and_container(
    fleet: list[dict[str, Any]], name: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    pod: dict[str, Any] = deployment(fleet, name)["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    return pod, container


def mounted_config(
    fleet: list[dict[str, Any]],
    name: str,
    model: type[Config] | type[WorkerConfig],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> Config | WorkerConfig:
    """The config file the Deployment's container is started with, loaded as vidcap does."""
    pod, container = pod_and_container(fleet, name)
    path = Path(parsed_args(container["args"])[1])
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == str(path.parent)]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    (config_map,) = [
        d
        for d in fleet
        if d["kind"] == "ConfigMap" and d["metadata"]["name"] == volume["configMap"]["name"]
    ]
    text = config_map["data"][path.name]
    provide_env(text, (e["name"] for e in container["env"]), monkeypatch)
    (tmp_path / path.name).write_text(text)
    return parse_section(model, load_yaml(tmp_path / path.name), f"{name}:{path}")


def test_fleet_manifests_match_the_kubernetes_schemas(fleet: list[dict[str, Any]]) -> None:
    assert {d["metadata"]["name"] for d in fleet if d["kind"] == "Deployment"} == {
        "vidcap-ingest",
        "vidcap-worker",
    }
    for doc in fleet:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_ingest_nodes_share_streams_through_leases_without_a_gpu(
    fleet: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    ingest = deployment(fleet, "vidcap-ingest")
    assert ingest["spec"]["replicas"] >= 2  # one config, N replicas: the same stream set
    pod, container = pod_and_container(fleet, "vidcap-ingest")
    assert parsed_args(container["args"])[0] == "run"
    assert not any("gpu" in key for key in container["resources"].get("limits", {}))
    assert container["resources"]["limits"]["memory"]
    check_probes(container)
    check_restrictive(pod, container)
    check_writable_mounts(pod, container)
    config = mounted_config(fleet, "vidcap-ingest", Config, monkeypatch, tmp_path)
    assert isinstance(config, Config) and len(config.streams) >= 2
    assert config.engine.kind == "nats" and config.nats.url == helm_cluster_urls()
    assert config.nats.replicas == read_yaml(NATS_VALUES)["config"]["cluster"]["replicas"]
    assert config.leases.enabled and config.spool.enabled and config.spool.path is not None
    # The spool is on the pod's emptyDir: it outlives a container restart (docs/scaling.md).
    assert "emptyDir" in writable_volume(pod, container, str(config.spool.path))


def test_workers_request_a_gpu_each_and_serve_the_ingest_nodes(
    fleet: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    pod, container = pod_and_container(fleet, "vidcap-worker")
    assert parsed_args(container["args"])[0] == "worker"
    assert str(container["resources"]["limits"]["nvidia.com/gpu"]) == "1"
    check_restrictive(pod, container)
    check_writable_mounts(pod, container)
    shm = writable_volume(pod, container, "/dev/shm")
    assert shm["emptyDir"]["medium"] == "Memory"
    config = mounted_config(fleet, "vidcap-worker", WorkerConfig, monkeypatch, tmp_path)
    assert isinstance(config, WorkerConfig) and config.engine.kind == "vllm"
    assert config.nats.url == helm_cluster_urls() and config.nats.user == "vidcap_worker"
    ingest = mounted_config(fleet, "vidcap-ingest", Config, monkeypatch, tmp_path)
    assert ingest.engine.model_id == config.engine.model_id  # events name the workers' model
    assert ingest.nats.subject_prefix == config.nats.subject_prefix  # the same request subject


def test_fleet_secrets_are_created_in_the_header(fleet: list[dict[str, Any]]) -> None:
    keys = created_secret_keys(FLEET.read_text())
    for name in ("vidcap-ingest", "vidcap-worker"):
        check_secrets_created(pod_and_container(fleet, name)[1], keys)
    (service,) = [d for d in fleet if d["kind"] == "Service"]
    labels = deployment(fleet, "vidcap-ingest")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()


def test_nats_helm_values_make_a_three_node_jetstream_cluster_with_vidcaps_users() -> None:
    values = read_yaml(NATS_VALUES)
    config = values["config"]
    assert config["cluster"] == {"enabled": True, "replicas": 3}
    jetstream = config["jetstream"]
    assert jetstream["enabled"] and jetstream["fileStore"]["enabled"]
    assert jetstream["fileStore"]["pvc"]["enabled"] and not jetstream["memoryStore"]["enabled"]
    # The users file comes in with --set-file under the name nats.conf includes.
    included = config["merge"]["$include"]
    helm = header_command(NATS_VALUES, "helm install")
    set_file = helm[helm.index("--set-file") + 1]
    key, _, path = set_file.partition("=")
    assert key == "configMap.merge.data." + included.replace(".", "\\.")
    assert (DEPLOY.parent / path).resolve() == USERS.resolve()
    # Every password the users file reads is in the server's environment, from a secret
    # created in the header.
    keys = created_secret_keys(NATS_VALUES.read_text())
    env = values["container"]["env"]
    for variable in re.findall(r"password: \$(\w+)", USERS.read_text()):
        ref = env[variable]["valueFrom"]["secretKeyRef"]
        assert (ref["name"], ref["key"]) in keys, variable


# --- compose ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose_fleet() -> dict[str, Any]:
    data = read_yaml(COMPOSE_FLEET)
    assert isinstance(data, dict)
    return data


def compose_config(service: dict[str, Any]) -> tuple[str, Path]:
    """(command, config file on this machine) of a vidcap compose service."""
    command, config = parsed_args(service["command"])
    host_dir = volume_mounts(service)[str(Path(config).parent)]
    return command, COMPOSE_FLEET.parent / host_dir / Path(config).name


def test_compose_fleet_matches_the_compose_spec_schema(compose_fleet: dict[str, Any]) -> None:
    validate_compose(compose_fleet)
    check_compose_nats(compose_fleet["services"]["nats"])


def test_compose_fleet_runs_two_ingest_nodes_with_one_config(
    compose_fleet: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    services = compose_fleet["services"]
    ingest = [services["ingest-1"], services["ingest-2"]]
    (command, config_file), second = compose_config(ingest[0]), compose_config(ingest[1])
    assert command == "run" and second == (command, config_file)  # the same streams
    for node in ingest:
        assert "devices" not in node["deploy"]["resources"].get("reservations", {})
        assert node["depends_on"]["nats"]["condition"] == "service_healthy"
        assert all(str(port).startswith("127.0.0.1:") for port in node["ports"])
        assert "/healthz" in " ".join(node["healthcheck"]["test"])
    assert ingest[0]["hostname"] != ingest[1]["hostname"]
    provide_env(config_file.read_text(), ingest[0]["environment"], monkeypatch)
    config = parse_config(load_yaml(config_file), str(config_file))
    assert config.engine.kind == "nats" and config.nats.url == COMPOSE_NATS_URL
    assert config.leases.enabled and config.spool.enabled and config.nats.replicas == 1
    # Each node's spool on its own volume: a restarted node delivers what it left.
    spools = [volume_mounts(node)[str(config.spool.path)] for node in ingest]
    assert len(set(spools)) == 2 and set(spools) <= set(compose_fleet["volumes"])


def test_compose_fleet_has_one_gpu_worker(
    compose_fleet: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    worker = compose_fleet["services"]["worker"]
    command, config_file = compose_config(worker)
    assert command == "worker"
    (device,) = worker["deploy"]["resources"]["reservations"]["devices"]
    assert device["capabilities"] == ["gpu"] and device["count"] == 1
    assert re.fullmatch(r"[1-9]\d*gb?", str(worker["shm_size"]))
    assert worker["healthcheck"] == {"disable": True}  # no HTTP server for the image's check
    provide_env(config_file.read_text(), worker["environment"], monkeypatch)
    config = parse_section(WorkerConfig, load_yaml(config_file), str(config_file))
    assert config.nats.url == COMPOSE_NATS_URL and config.nats.user == "vidcap_worker"
    for name, service in compose_fleet["services"].items():
        assert service["deploy"]["resources"]["limits"]["memory"], name
