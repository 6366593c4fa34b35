"""The KubeRay manifests (deploy/kuberay/): their Serve config against Ray Serve's schema and deploy/serve.yaml,
their job entrypoints against the `alt` CLI and docs/cluster.md, their pods against each other, the MLflow
tracking server's manifests against MLflow's CLI and the URI every job uses, and every Ray manifest against
KubeRay's own CRD schemas (strictly: unknown fields are errors) from the copy in $KUBERAY_CRDS. That copy is not
in this repository (we do not redistribute KubeRay's files): .ci/run points the variable at shared/, so in CI
(CI=true) a missing copy fails the test; elsewhere it is skipped."""

from __future__ import annotations

import copy
import os
import re
import shlex
from pathlib import Path
from urllib.parse import urlparse

import click
import jsonschema
import pytest
import ray
import typer.core
import typer.main
import yaml
from mlflow.cli import cli as mlflow_cli
from mlflow.server.security_utils import is_allowed_host_header
from ray.serve.schema import ServeDeploySchema

from pipelines.cli import app
from pipelines.serve import DEFAULT_CONFIG
from tests.helpers import KUBERAY, cluster_tracking_uri, kuberay_documents, mlflow_server_command, require

REPO = Path(__file__).resolve().parents[1]
IMAGE_HOME = "/home/ray/alt/"  # where the Dockerfile installs the repository
SHARED_CLAIM = "alt-shared"
RAY_KINDS = ("RayJob", "RayService")
# the only differences between the RayService's serveConfigV2 and deploy/serve.yaml (rayservice.yaml says why)
CLUSTER_CHANGES = {
    ("http_options", "host"): "0.0.0.0",
    ("applications", 0, "args", "tracking_uri"): "http://alt-mlflow:5000",  # the tracking server of mlflow.yaml
    ("applications", 0, "deployments", "ALTModel", "ray_actor_options"): {"num_cpus": 1, "num_gpus": 1},
}


def manifests() -> dict[str, dict]:
    """The Ray clusters' manifests and the shared volume's (one document per file), by file name."""
    return {name: doc for name, doc in kuberay_documents() if doc["kind"] in (*RAY_KINDS, "PersistentVolumeClaim")}


def kubernetes_object(kind: str, name: str) -> dict:
    return next(doc for _, doc in kuberay_documents() if (doc["kind"], doc["metadata"]["name"]) == (kind, name))


def ray_pods(doc: dict) -> list[dict]:
    """The pod templates of a RayService's or RayJob's cluster: head first, then every worker group."""
    cluster = doc["spec"].get("rayClusterConfig") or doc["spec"]["rayClusterSpec"]
    return [cluster["headGroupSpec"]["template"]] + [g["template"] for g in cluster["workerGroupSpecs"]]


def test_manifests_are_a_rayservice_five_rayjobs_their_shared_volume_and_the_tracking_server():
    kinds = sorted((d["apiVersion"], d["kind"], name) for name, d in kuberay_documents())
    assert kinds == [("apps/v1", "Deployment", "mlflow.yaml"), ("apps/v1", "StatefulSet", "postgres.yaml")] + [
        ("ray.io/v1", "RayJob", f"rayjob-{stage}.yaml") for stage in ("corpus", "decode", "infer", "train", "tune")] + [
        ("ray.io/v1", "RayService", "rayservice.yaml"), ("v1", "PersistentVolumeClaim", "shared-volume.yaml"),
        ("v1", "Service", "mlflow.yaml"), ("v1", "Service", "postgres.yaml")]
    docs = manifests()
    assert docs["shared-volume.yaml"]["metadata"]["name"] == SHARED_CLAIM
    assert docs["shared-volume.yaml"]["spec"]["accessModes"] == ["ReadWriteMany"]
    tracking_server = kubernetes_object("Deployment", "alt-mlflow")["spec"]["template"]["spec"]
    images = {container["image"] for container in tracking_server["containers"]}  # it runs the Ray pods' image
    for name, doc in docs.items():
        if doc["kind"] not in RAY_KINDS:
            continue
        cluster = doc["spec"].get("rayClusterConfig") or doc["spec"]["rayClusterSpec"]
        assert cluster["rayVersion"] == ray.__version__, name  # the image's Ray is the Ray the package pins
        for pod in ray_pods(doc):
            volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
            assert volumes["shared"]["persistentVolumeClaim"]["claimName"] == SHARED_CLAIM, name
            for container in pod["spec"]["containers"]:
                assert {"name": "shared", "mountPath": "/shared"} in container["volumeMounts"], name
                images.add(container["image"])
        if doc["kind"] == "RayJob":
            assert doc["spec"]["shutdownAfterJobFinishes"] is True, name
    assert len(images) == 1  # one image, built by deploy/kuberay/Dockerfile
    service = docs["rayservice.yaml"]["spec"]["rayClusterConfig"]
    assert service["enableInTreeAutoscaling"] is True
    gpu_groups = [g for g in service["workerGroupSpecs"]
                  if "nvidia.com/gpu" in g["template"]["spec"]["containers"][0]["resources"]["limits"]]
    assert gpu_groups and all(g["maxReplicas"] > g["minReplicas"] for g in service["workerGroupSpecs"])


def _set(document: dict, path: tuple, value) -> None:
    node = document
    for key in path[:-1]:
        node = next(d for d in node if d.get("name") == key) if isinstance(key, str) and isinstance(node, list) \
            else node[key]
    node[path[-1]] = value


def test_serve_config_v2_is_deploy_serve_yaml_with_only_the_declared_cluster_changes():
    in_cluster = yaml.safe_load(manifests()["rayservice.yaml"]["spec"]["serveConfigV2"])
    ServeDeploySchema.model_validate(in_cluster)
    expected = yaml.safe_load(DEFAULT_CONFIG.read_text())
    for path, value in CLUSTER_CHANGES.items():
        _set(expected, path, value)
    assert in_cluster == expected, "deploy/serve.yaml and deploy/kuberay/rayservice.yaml drifted: edit both"


def documented_commands() -> set[str]:
    """Every `alt ...` command submitted with `ray job submit` in docs/cluster.md, whitespace normalised."""
    text = (REPO / "docs" / "cluster.md").read_text()
    commands = re.findall(r"ray job submit [^\n]*-- \\\n((?:[^\n]*\\\n)*[^\n]*)", text)
    return {" ".join(command.replace("\\\n", " ").split()) for command in commands}


def parse_command(command, words: list[str]) -> dict:
    """Parse a command line as its Click CLI (`alt`'s Typer app, `mlflow`) would, without running it: unknown verbs
    or options raise."""
    ctx = command.make_context(words[0], list(words[1:]))
    while isinstance(command, click.Group | typer.core.TyperGroup):  # Typer carries its own copy of Click
        pending = [*getattr(ctx, "_protected_args", ()), *ctx.args]  # the verb is held apart from its arguments
        name, command, rest = command.resolve_command(ctx, pending)
        ctx = command.make_context(name, rest, parent=ctx)
    return ctx.params


def parse_cli(words: list[str]) -> dict:
    """Parse an `alt` command line as the CLI would."""
    return parse_command(typer.main.get_command(app), words)


def test_job_entrypoints_are_the_documented_commands_and_parse_with_the_cli():
    documented = documented_commands()
    stages = set()
    for name, doc in manifests().items():
        if doc["kind"] != "RayJob":
            continue
        entrypoint = " ".join(doc["spec"]["entrypoint"].split())
        assert entrypoint.replace(IMAGE_HOME, "") in documented, (name, entrypoint)
        words = shlex.split(entrypoint)
        params = parse_cli(words)
        stages.add(" ".join(words[1:3]) if words[1] == "corpus" else words[1])
        assert all(str(v).startswith(("/shared/", IMAGE_HOME)) for k, v in params.items()
                   if k in ("data", "corpus", "out", "manifest", "labels", "space") and v is not None), name
    assert stages == {"corpus build", "decode", "infer", "train", "tune"}
    with pytest.raises(typer.TyperException, match="No such option: --no-such-option"):  # it refuses as the CLI does
        parse_cli(["alt", "train", "--no-such-option", "1"])


def test_tracking_server_manifests_serve_the_uri_every_job_and_the_rayservice_use(monkeypatch):
    uris = {cluster_tracking_uri()}
    for doc in manifests().values():
        if doc["kind"] == "RayJob":
            uris.add(parse_cli(shlex.split(doc["spec"]["entrypoint"])).get("tracking_uri"))
    assert uris - {None} == {"http://alt-mlflow:5000"}  # train and tune log there; corpus and decode track nothing
    uri = urlparse(cluster_tracking_uri())
    deployment, service = kubernetes_object("Deployment", uri.hostname), kubernetes_object("Service", uri.hostname)
    pod = deployment["spec"]["template"]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    (container,) = pod["spec"]["containers"]
    monkeypatch.delenv("MLFLOW_BACKEND_STORE_URI", raising=False)
    server = parse_command(mlflow_cli, mlflow_server_command())  # as `mlflow server` reads it: a misspelt flag fails
    port = next(p for p in service["spec"]["ports"] if p["port"] == uri.port)
    container_ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert server["host"] == "0.0.0.0" and container_ports[port["targetPort"]] == server["port"]
    assert is_allowed_host_header(server["allowed_hosts"].split(","), uri.netloc)  # what the clients send as Host
    assert server["artifacts_destination"].startswith("/shared/")  # proxied to the shared volume
    assert {"name": "shared", "mountPath": "/shared"} in container["volumeMounts"]
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["shared"]["persistentVolumeClaim"]["claimName"] == SHARED_CLAIM

    # the backend store: the secret's `uri`, which docs/cluster.md creates pointing at postgres.yaml's database
    env = {e["name"]: e for e in container["env"]}
    assert server["backend_store_uri"] is None and env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"]["value"] == "false"
    uri_ref = env["MLFLOW_BACKEND_STORE_URI"]["valueFrom"]["secretKeyRef"]
    database = kubernetes_object("StatefulSet", "alt-postgres")
    (postgres,) = database["spec"]["template"]["spec"]["containers"]
    postgres_env = {e["name"]: e for e in postgres["env"]}
    password_ref = postgres_env["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert password_ref["name"] == uri_ref["name"]
    created = re.search(rf"kubectl create secret generic {uri_ref['name']} ((?:\\\n|[^\n])*)",
                        (REPO / "docs" / "cluster.md").read_text())
    assert created, f"docs/cluster.md does not say how to create the secret {uri_ref['name']}"
    literals = dict(re.findall(r"--from-literal=(\w+)=(\S+)", created.group(1)))
    assert set(literals) == {uri_ref["key"], password_ref["key"]}
    backend = urlparse(literals[uri_ref["key"]])
    database_service = kubernetes_object("Service", database["spec"]["serviceName"])
    assert backend.scheme == "postgresql+psycopg"  # the driver of the `postgres` extra the image installs
    assert (backend.hostname, backend.port) == (database_service["metadata"]["name"],
                                                database_service["spec"]["ports"][0]["port"])
    assert backend.password == literals[password_ref["key"]]
    assert (backend.username, backend.path) == (postgres_env["POSTGRES_USER"]["value"],
                                                "/" + postgres_env["POSTGRES_DB"]["value"])


def test_dockerfile_installs_this_package_on_the_pinned_ray_image():
    text = (KUBERAY / "Dockerfile").read_text()
    assert f"rayproject/ray:{ray.__version__}-py311" in text
    # the package with the `postgres` extra: the image runs the tracking server too (mlflow.yaml)
    assert re.search(r"pip install [^\n]*-e '\.\[postgres\]'", text) and f"WORKDIR {IMAGE_HOME.rstrip('/')}" in text
    copied = set(re.findall(r"^COPY (?:--\S+ )*(\S+) \1$", text, re.MULTILINE))
    assert {"alt_core", "pipelines", "deploy", "tune_spaces"} <= copied  # the packages pyproject.toml installs


def test_the_image_sets_the_cli_environment_defaults_it_needs_with_their_values():
    from pipelines.environment import DEFAULTS, LOCAL_RAY_DEFAULTS

    text = (KUBERAY / "Dockerfile").read_text()
    block = re.search(r"^ENV ((?:.*\\\n)*.*)$", text, re.MULTILINE).group(1)
    env = dict(pair.split("=", 1) for pair in block.replace("\\\n", " ").split())
    assert {"HF_HUB_OFFLINE", "MLFLOW_DISABLE_TELEMETRY"} <= set(env) <= set(DEFAULTS) | set(LOCAL_RAY_DEFAULTS)
    assert all(env[key] == DEFAULTS[key] for key in set(env) & set(DEFAULTS))  # one source: the CLI's defaults
    assert env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "1"  # pods bind their own address, unlike a local Ray


def strict(schema: dict) -> dict:
    """An OpenAPI v3 structural schema with unknown fields made errors (Kubernetes would prune them silently)."""
    schema = copy.deepcopy(schema)

    def tighten(node):
        if isinstance(node, dict):
            if "properties" in node and "additionalProperties" not in node \
                    and not node.get("x-kubernetes-preserve-unknown-fields"):
                node["additionalProperties"] = False
            for value in node.values():
                tighten(value)
        elif isinstance(node, list):
            for value in node:
                tighten(value)

    tighten(schema)
    return schema


def crd_schemas(directory: Path) -> dict[tuple[str, str], dict]:
    """(apiVersion, kind) -> the strict openAPIV3Schema of each served version of each CRD in a directory."""
    schemas = {}
    for path in sorted(directory.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        if not isinstance(crd, dict) or crd.get("kind") != "CustomResourceDefinition":
            continue
        for version in crd["spec"]["versions"]:
            key = (f"{crd['spec']['group']}/{version['name']}", crd["spec"]["names"]["kind"])
            schemas[key] = strict(version["schema"]["openAPIV3Schema"])
    return schemas


def test_manifests_validate_against_kuberays_crd_schemas():
    directory = os.environ.get("KUBERAY_CRDS")
    require(bool(directory), "set KUBERAY_CRDS to a directory of KubeRay's CRDs (ray-operator/config/crd/bases of a "
                             "release; .ci/run sets ../shared/kuberay-crds/v1.7.0) to validate the manifests")
    if not Path(directory).is_dir():
        pytest.fail(f"KUBERAY_CRDS={directory} is not a directory: point it at a copy of KubeRay's CRDs")
    schemas = crd_schemas(Path(directory))
    checked = 0
    for name, doc in manifests().items():
        key = (doc["apiVersion"], doc["kind"])
        if key[0].startswith("ray.io/"):
            assert key in schemas, f"{name}: no CRD for {key} in $KUBERAY_CRDS"
            jsonschema.validate(doc, schemas[key])
            checked += 1
            wrong = copy.deepcopy(doc)
            ray_pods(wrong)[0]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"  # a typo must not pass
            with pytest.raises(jsonschema.ValidationError, match="imagePullPolicyy"):
                jsonschema.validate(wrong, schemas[key])
    assert checked == 6  # five RayJobs and the RayService
