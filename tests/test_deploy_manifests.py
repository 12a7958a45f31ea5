"""deploy/ without a container engine: the compose file and the Kubernetes manifests against
their published JSON schemas, the build context against .dockerignore, and the properties a
container needs to run safely (probes, health checks, a non-root user with writable caches,
shared memory for vLLM, memory limits, NATS not open to the network)."""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from stream.config import load_config

ROOT = Path(__file__).parents[1]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
K8S = DEPLOY / "k8s" / "vidcap.yaml"
DOCKERFILE = DEPLOY / "Dockerfile"
# compose-spec's schema as check-jsonschema 0.39.0 vendors it (tests/schemas/README.md).
COMPOSE_SCHEMA = Path(__file__).parent / "schemas" / "compose-spec.json"
# The oldest Kubernetes release still supported upstream when this was written.
K8S_VERSION = "1.33"
CONFIG_PATH = "/etc/vidcap/config.yaml"


# --- Dockerfile and build context -------------------------------------------------------------


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order; comments dropped, continuation lines joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in text.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.lstrip().startswith("#"):
            continue  # a comment inside a continued instruction
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        keyword, _, args = (pending + line).strip().partition(" ")
        instructions.append((keyword.upper(), args.strip()))
        pending = ""
    return instructions


def instruction_args(name: str) -> list[str]:
    return [
        args for keyword, args in dockerfile_instructions(DOCKERFILE.read_text()) if keyword == name
    ]


def exec_form(args: str) -> list[str]:
    parsed = json.loads(args)
    assert isinstance(parsed, list), f"{args!r}: use the exec (JSON) form"
    return [str(part) for part in parsed]


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for args in instruction_args("ENV"):
        for pair in shlex.split(args):
            key, _, value = pair.partition("=")
            env[key] = value
    return env


def test_dockerfile_healthcheck_gets_healthz() -> None:
    (healthcheck,) = instruction_args("HEALTHCHECK")
    command = healthcheck[healthcheck.index("CMD") :]
    assert "/healthz" in command
    assert "--start-period" in healthcheck  # model loading must not count as failures


def test_dockerfile_runs_vidcap_as_a_numeric_non_root_user() -> None:
    users = instruction_args("USER")
    assert users, "no USER: the container would run as root"
    uid = users[-1].split(":")[0]
    # Kubernetes can only check runAsNonRoot against a numeric user.
    assert uid.isdigit() and int(uid) != 0, users[-1]
    (entrypoint,) = instruction_args("ENTRYPOINT")
    (cmd,) = instruction_args("CMD")
    assert exec_form(entrypoint)[-1] == "vidcap"
    assert exec_form(cmd) == ["run", "--config", CONFIG_PATH]


def test_dockerfile_has_a_c_compiler_for_triton() -> None:
    (base,) = instruction_args("FROM")
    installs = " ".join(args for args in instruction_args("RUN") if "apt-get install" in args)
    assert base.startswith("vllm/vllm-openai") or re.search(
        r"\b(gcc|build-essential|clang)\b", installs
    )


def test_dockerfile_caches_live_in_the_users_home() -> None:
    env = dockerfile_env()
    home = env["HOME"]
    assert home.startswith("/home/")
    made = " ".join(instruction_args("RUN"))
    assert re.search(rf"useradd\b.*--home-dir {home}\b", made), "the user's home is not created"
    for name in (
        "HF_HOME",
        "VLLM_CACHE_ROOT",
        "VIDCAP_CACHE",
        "TRITON_CACHE_DIR",
        "NUMBA_CACHE_DIR",
    ):
        assert env[name].startswith(f"{home}/.cache/"), name
        assert env[name] in made, f"{name} ({env[name]}) is not created in the image"
    assert f"chown -R vidcap:vidcap {home}" in made


def test_dockerfile_listens_beyond_loopback() -> None:
    port = dockerfile_env()["VIDCAP_HTTP_LISTEN"].rpartition(":")[2]
    assert dockerfile_env()["VIDCAP_HTTP_LISTEN"].startswith("0.0.0.0:")
    assert instruction_args("EXPOSE") == [port]


def ignore_pattern(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern (Go filepath.Match, plus ``**`` for any number of dirs)."""
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"\Z")


def in_build_context(path: str, ignore_text: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    included = True
    for line in ignore_text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = ignore_pattern(line.lstrip("!").strip("/"))
        if any(pattern.match(candidate) for candidate in candidates):
            included = negated
    return included


def copied_files() -> Iterator[str]:
    for args in instruction_args("COPY"):
        if "--from" in args:
            continue
        for source in shlex.split(args)[:-1]:
            path = ROOT / source
            assert path.exists(), f"COPY {source}: not in the repository"
            files = [path] if path.is_file() else sorted(path.rglob("*"))
            for file in files:
                if file.is_file() and "__pycache__" not in file.parts:
                    yield file.relative_to(ROOT).as_posix()


def test_build_context_leaves_out_venv_and_keeps_what_is_copied() -> None:
    ignore = (ROOT / ".dockerignore").read_text()
    for left_out in (
        ".venv/bin/python",
        ".venv/lib/python3.11/site-packages/torch/__init__.py",
        ".git/HEAD",
        "tests/conftest.py",
        "stream/__pycache__/cli.cpython-311.pyc",
    ):
        assert not in_build_context(left_out, ignore), f"{left_out} would be sent to the builder"
    copied = list(copied_files())
    assert "stream/cli.py" in copied and "deploy/requirements.lock" in copied
    for path in copied:
        assert in_build_context(path, ignore), f"{path} is copied but left out of the context"


def env_references(config_text: str) -> list[str]:
    """The ${VAR}s vidcap expands in a config file (comments left out)."""
    return re.findall(r"\$\{(\w+)\}", json.dumps(yaml.safe_load(config_text)))


def provide_env(config_text: str, given: Iterable[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Each ${VAR} of the config must be among the variables ``given`` to its container; set
    them all, so that the config loads."""
    given = set(given)
    for variable in env_references(config_text):
        assert variable in given, f"the config needs {variable}"
        monkeypatch.setenv(variable, "x" * 24)


# --- compose ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def validate_compose(compose: dict[str, Any]) -> None:
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    jsonschema.validators.validator_for(schema)(schema).validate(compose)


def test_compose_matches_the_compose_spec_schema(compose: dict[str, Any]) -> None:
    validate_compose(compose)


def test_compose_nats_is_on_loopback_and_authenticated(compose: dict[str, Any]) -> None:
    check_compose_nats(compose["services"]["nats"])


def volume_mounts(service: dict[str, Any]) -> dict[str, str]:
    """A compose service's volumes: {path in the container: volume or host path}."""
    return dict(volume.split(":")[:2][::-1] for volume in service["volumes"])


def check_compose_nats(nats: dict[str, Any]) -> None:
    for port in nats.get("ports", []):
        assert str(port).startswith("127.0.0.1:"), f"NATS port {port} is open to the network"
    # The server's config file, found through the volume that mounts it.
    config_arg = nats["command"][nats["command"].index("--config") + 1]
    conf_dir = DEPLOY / volume_mounts(nats)[str(Path(config_arg).parent)]
    conf = (conf_dir / Path(config_arg).name).read_text()
    assert re.search(r"^include \./vidcap-users\.conf$", conf, re.MULTILINE)
    users = (conf_dir / "vidcap-users.conf").read_text()
    for variable in re.findall(r"password: \$(\w+)", users):
        assert variable in nats["environment"], f"{variable} is not passed to nats-server"


def test_compose_health_checks_and_memory_limits(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        test = service["healthcheck"]["test"]
        assert test[0] == "CMD" and not service["healthcheck"].get("disable"), name
        limit = service.get("mem_limit") or service["deploy"]["resources"]["limits"]["memory"]
        assert limit, name
    assert any("/healthz" in part for part in compose["services"]["vidcap"]["healthcheck"]["test"])
    assert compose["services"]["vidcap"]["depends_on"]["nats"]["condition"] == "service_healthy"


def test_compose_vidcap_has_shared_memory_and_its_config(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    vidcap = compose["services"]["vidcap"]
    shm = str(vidcap.get("shm_size", ""))
    assert vidcap.get("ipc") == "host" or re.fullmatch(r"([1-9]\d*)gb?", shm), shm
    assert vidcap["command"] == ["run", "--config", CONFIG_PATH]
    mounts = volume_mounts(vidcap)
    assert mounts[dockerfile_env()["XDG_CACHE_HOME"]], "the caches are not on a volume"
    config_file = DEPLOY / mounts[str(Path(CONFIG_PATH).parent)] / Path(CONFIG_PATH).name
    provide_env(config_file.read_text(), vidcap["environment"], monkeypatch)
    config = load_config(config_file)
    assert config.nats.url == "nats://127.0.0.1:4222" and config.nats.user == "vidcap_run"


# --- Kubernetes ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def manifests() -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(K8S.read_text()) if doc]


def of_kind(manifests: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in manifests if doc["kind"] == kind]


@pytest.fixture(scope="module")
def pod(manifests: list[dict[str, Any]]) -> dict[str, Any]:
    (deployment,) = of_kind(manifests, "Deployment")
    spec: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return spec


@pytest.fixture(scope="module")
def container(pod: dict[str, Any]) -> dict[str, Any]:
    (vidcap,) = pod["containers"]
    return dict(vidcap)


def test_k8s_manifests_match_the_kubernetes_schemas(manifests: list[dict[str, Any]]) -> None:
    assert {doc["kind"] for doc in manifests} >= {"Deployment", "Service", "PersistentVolumeClaim"}
    for doc in manifests:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_k8s_probes_hit_healthz_and_readyz_on_the_http_port(container: dict[str, Any]) -> None:
    check_probes(container)


def check_probes(container: dict[str, Any]) -> None:
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    env = {e["name"]: e.get("value") for e in container["env"]}
    listen_port = int(env["VIDCAP_HTTP_LISTEN"].rpartition(":")[2])
    assert env["VIDCAP_HTTP_LISTEN"].startswith("0.0.0.0:") and listen_port in ports.values()
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = container[probe]["httpGet"]
        assert get["path"] == path, probe
        assert ports.get(get["port"], get["port"]) == listen_port, probe


def test_k8s_security_context_is_restrictive(
    pod: dict[str, Any], container: dict[str, Any]
) -> None:
    check_restrictive(pod, container)


def check_restrictive(pod: dict[str, Any], container: dict[str, Any]) -> None:
    pod_ctx, ctx = pod.get("securityContext", {}), container["securityContext"]

    def setting(key: str) -> Any:
        return ctx.get(key, pod_ctx.get(key))

    assert setting("runAsNonRoot") is True
    assert setting("runAsUser") not in (0, None)
    assert setting("seccompProfile") == {"type": "RuntimeDefault"}
    assert ctx["allowPrivilegeEscalation"] is False
    assert ctx.get("privileged", False) is False
    assert ctx["readOnlyRootFilesystem"] is True
    assert ctx["capabilities"]["drop"] == ["ALL"] and not ctx["capabilities"].get("add")
    assert pod.get("automountServiceAccountToken") is False


def test_k8s_writable_mounts_cover_what_the_image_writes(
    pod: dict[str, Any], container: dict[str, Any]
) -> None:
    check_writable_mounts(pod, container)
    env = dockerfile_env()
    volumes = {v["name"]: v for v in pod["volumes"]}
    shm = [m for m in container["volumeMounts"] if m["mountPath"] == "/dev/shm"]
    assert shm and volumes[shm[0]["name"]]["emptyDir"]["medium"] == "Memory"
    cache = [m for m in container["volumeMounts"] if m["mountPath"] == env["XDG_CACHE_HOME"]]
    assert cache and "persistentVolumeClaim" in volumes[cache[0]["name"]], "caches are not kept"


def writable_volume(pod: dict[str, Any], container: dict[str, Any], path: str) -> dict[str, Any]:
    """The pod volume that makes ``path`` writable (an emptyDir or a claim)."""
    volumes = {v["name"]: v for v in pod["volumes"]}
    for mount in sorted(container["volumeMounts"], key=lambda m: -len(m["mountPath"])):
        if path == mount["mountPath"] or path.startswith(mount["mountPath"] + "/"):
            volume = volumes[mount["name"]]
            writable = "emptyDir" in volume or "persistentVolumeClaim" in volume
            assert writable and not mount.get("readOnly"), f"{path} is read-only"
            return volume
    raise AssertionError(f"{path} is on the read-only root file system")


def check_writable_mounts(pod: dict[str, Any], container: dict[str, Any]) -> None:
    env = dockerfile_env()
    for path in ("/tmp", env["HOME"], env["HF_HOME"], env["VLLM_CACHE_ROOT"], env["VIDCAP_CACHE"]):
        writable_volume(pod, container, path)


def created_secret_keys(text: str) -> set[tuple[str, str]]:
    """(secret, key) of every `kubectl create secret generic` in a file's header comment."""
    created = re.findall(r"kubectl create secret generic (\S+)((?:.*\\\n#)*.*)", text)
    return {
        (name, key)
        for name, rest in created
        for key in re.findall(r"--from-literal=([\w-]+)=", rest)
    }


def check_secrets_created(container: dict[str, Any], keys: set[tuple[str, str]]) -> None:
    for var in container["env"]:
        ref = var.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            assert (ref["name"], ref["key"]) in keys, f"secret {ref} is never created"


def test_k8s_references_resolve(
    manifests: list[dict[str, Any]], pod: dict[str, Any], container: dict[str, Any]
) -> None:
    defined = {(doc["kind"], doc["metadata"]["name"]) for doc in manifests}
    for volume in pod["volumes"]:
        if "persistentVolumeClaim" in volume:
            claim = volume["persistentVolumeClaim"]["claimName"]
            assert ("PersistentVolumeClaim", claim) in defined, f"PVC {claim} is not defined"
        if "configMap" in volume:
            assert ("ConfigMap", volume["configMap"]["name"]) in defined
    # Secrets are created by hand: the command in the header must create every key used.
    check_secrets_created(container, created_secret_keys(K8S.read_text()))
    (service,) = of_kind(manifests, "Service")
    (deployment,) = of_kind(manifests, "Deployment")
    assert (
        service["spec"]["selector"].items()
        <= deployment["spec"]["template"]["metadata"]["labels"].items()
    )
    port_names = {p["name"] for p in container["ports"]}
    assert all(p["targetPort"] in port_names for p in service["spec"]["ports"])


def test_k8s_memory_limit_and_a_valid_config(
    manifests: list[dict[str, Any]],
    pod: dict[str, Any],
    container: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert container["resources"]["limits"]["memory"]
    assert container["args"] == ["run", "--config", CONFIG_PATH]
    config_dir = str(Path(CONFIG_PATH).parent)
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == config_dir]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    (config_map,) = [
        doc
        for doc in of_kind(manifests, "ConfigMap")
        if doc["metadata"]["name"] == volume["configMap"]["name"]
    ]
    text = config_map["data"][Path(CONFIG_PATH).name]
    provide_env(text, (e["name"] for e in container["env"]), monkeypatch)
    (tmp_path / "config.yaml").write_text(text)
    assert load_config(tmp_path / "config.yaml").http.token is not None
