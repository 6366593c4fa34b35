"""The KubeRay manifests (deploy/kuberay/): their Serve config against Ray Serve's schema and deploy/serve.yaml,
their job entrypoints against the `alt` CLI and docs/cluster.md, their pods against each other, and every
manifest against KubeRay's own CRD schemas (strictly: unknown fields are errors) when a copy of those is at
hand in $KUBERAY_CRDS. That copy is not in this repository: we do not redistribute KubeRay's files."""

from __future__ import annotations

import copy
import os
import re
import shlex
from pathlib import Path

import jsonschema
import pytest
import ray
import typer
import typer.core
import typer.main
import yaml
from ray.serve.schema import ServeDeploySchema

from pipelines.cli import app
from pipelines.serve import DEFAULT_CONFIG

REPO = Path(__file__).resolve().parents[1]
KUBERAY = REPO / "deploy" / "kuberay"
IMAGE_HOME = "/home/ray/alt/"  # where the Dockerfile installs the repository
SHARED_CLAIM = "alt-shared"
# the only differences between the RayService's serveConfigV2 and deploy/serve.yaml (rayservice.yaml says why)
CLUSTER_CHANGES = {
    ("http_options", "host"): "0.0.0.0",
    ("applications", 0, "args", "tracking_uri"): "sqlite:////shared/alt/mlflow.db",
    ("applications", 0, "deployments", "ALTModel", "ray_actor_options"): {"num_cpus": 1, "num_gpus": 1},
}


def manifests() -> dict[str, dict]:
    return {path.name: yaml.safe_load(path.read_text()) for path in sorted(KUBERAY.glob("*.yaml"))}


def ray_pods(doc: dict) -> list[dict]:
    """The pod templates of a RayService's or RayJob's cluster: head first, then every worker group."""
    cluster = doc["spec"].get("rayClusterConfig") or doc["spec"]["rayClusterSpec"]
    return [cluster["headGroupSpec"]["template"]] + [g["template"] for g in cluster["workerGroupSpecs"]]


def test_manifests_are_a_rayservice_four_rayjobs_and_their_shared_volume():
    docs = manifests()
    kinds = sorted((d["apiVersion"], d["kind"]) for d in docs.values())
    assert kinds == [("ray.io/v1", "RayJob")] * 4 + [("ray.io/v1", "RayService"), ("v1", "PersistentVolumeClaim")]
    assert docs["shared-volume.yaml"]["metadata"]["name"] == SHARED_CLAIM
    assert docs["shared-volume.yaml"]["spec"]["accessModes"] == ["ReadWriteMany"]
    images = set()
    for name, doc in docs.items():
        if doc["kind"] == "PersistentVolumeClaim":
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


def parse_cli(words: list[str]) -> dict:
    """Parse an `alt` command line as the CLI would, without running it: unknown verbs or options raise."""
    command = typer.main.get_command(app)
    ctx = command.make_context("alt", list(words[1:]))
    while isinstance(command, typer.core.TyperGroup):
        pending = [*getattr(ctx, "_protected_args", ()), *ctx.args]  # the verb is held apart from its arguments
        name, command, rest = command.resolve_command(ctx, pending)
        ctx = command.make_context(name, rest, parent=ctx)
    return ctx.params


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
    assert stages == {"corpus build", "decode", "train", "tune"}
    with pytest.raises(typer.TyperException, match="No such option: --no-such-option"):  # it refuses as the CLI does
        parse_cli(["alt", "train", "--no-such-option", "1"])


def test_dockerfile_installs_this_package_on_the_pinned_ray_image():
    text = (KUBERAY / "Dockerfile").read_text()
    assert f"rayproject/ray:{ray.__version__}-py311" in text
    assert re.search(r"pip install [^\n]*-e \.", text) and f"WORKDIR {IMAGE_HOME.rstrip('/')}" in text
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


@pytest.mark.skipif(not os.environ.get("KUBERAY_CRDS"),
                    reason="set KUBERAY_CRDS to a directory of KubeRay's CRDs (ray-operator/config/crd/bases of a "
                           "release, e.g. v1.7.0) to validate the manifests against them")
def test_manifests_validate_against_kuberays_crd_schemas():
    schemas = crd_schemas(Path(os.environ["KUBERAY_CRDS"]))
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
    assert checked == 5
