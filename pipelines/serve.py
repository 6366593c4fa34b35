"""Serve stage (`alt serve`): deploy deploy/serve.yaml on Ray Serve and run until Ctrl-C.

The config file is the same one `serve run`/`serve deploy` and KubeRay's RayService take; `alt serve` fills
in the model (`--model URI` or `--checkpoint DIR`), the tracking URI, host and port, deploys it the way
`serve run CONFIG` does, waits until the application runs, and prints its URL and model version.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from pathlib import Path

import ray
import yaml
from ray import serve
from ray.serve.schema import ApplicationStatus, ServeDeploySchema

from alt_core.errors import ALTError, ConfigError
from alt_core.registry import check_model
from pipelines.console import ensure_ray

logger = logging.getLogger(__name__)
DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "deploy" / "serve.yaml"
MODE_CONFIGS = {"split": DEFAULT_CONFIG, "single": DEFAULT_CONFIG.with_name("serve-single.yaml")}  # each mode's file
APP_NAME = "alt"


def serve_config(path: str | Path = DEFAULT_CONFIG, model: str | None = None, tracking_uri: str | None = None,
                 host: str | None = None, port: int | None = None,
                 env_vars: dict[str, str] | None = None) -> ServeDeploySchema:
    """The Serve config with the command line's overrides, checked against Ray's schema. `env_vars` reach
    the replicas wherever they run (the bearer token, MLflow's URI), not only on a Ray started here."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Serve config {path} does not exist; deploy/serve.yaml is the default")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML ({str(err).splitlines()[0]})") from err
    if not isinstance(raw, dict) or not isinstance(raw.get("applications"), list):
        raise ConfigError(f"{path}: a Serve config is a mapping with an `applications` list (see deploy/serve.yaml)")
    apps = [a for a in raw["applications"] if isinstance(a, dict) and a.get("name") == APP_NAME]
    if not apps:
        raise ConfigError(f"{path}: no application named {APP_NAME!r}")
    args = apps[0]["args"] = apps[0].get("args") or {}
    check_mode(path, args.get("mode", "split"), [d.get("name") for d in apps[0].get("deployments") or []])
    if model:
        args["model"] = model
    if tracking_uri:
        args["tracking_uri"] = tracking_uri
    if env_vars:
        runtime_env = apps[0]["runtime_env"] = apps[0].get("runtime_env") or {}
        runtime_env["env_vars"] = {**(runtime_env.get("env_vars") or {}), **env_vars}
    http = raw.setdefault("http_options", {})
    if host:
        http["host"] = host
    if port:
        http["port"] = port
    try:
        return ServeDeploySchema.model_validate(raw)
    except Exception as err:
        raise ConfigError(f"{path}: not a valid Serve config ({str(err).splitlines()[0]})") from err


def check_mode(path: Path, mode: str, deployments: list[str]) -> None:
    """The deployments a config lists must be those its mode builds (Serve's own error names neither file
    nor fix)."""
    from deploy.app import MODES

    if mode not in MODES:
        raise ConfigError(f"{path}: args.mode must be one of {', '.join(MODES)}, got {mode!r}")
    extra = sorted(set(deployments) - set(MODES[mode]))
    if extra:
        other = next(f"deploy/{path.name}" for m, path in MODE_CONFIGS.items() if m != mode)
        raise ConfigError(f"{path}: mode {mode} builds no {', '.join(extra)} deployment (it builds "
                          f"{', '.join(MODES[mode])}); remove that entry, or start from {other}")


def deploy(config: ServeDeploySchema, timeout_s: float = 300.0) -> str:
    """Check the application's settings and the model they name (a corrupt checkpoint refuses to start, with
    one line naming the file), start Serve with the config's HTTP options, deploy its applications and wait
    until `alt` runs; returns its URL."""
    from ray.serve._private.api import serve_start  # what `serve run CONFIG` uses to deploy a config file

    from deploy.app import ServeSettings

    settings = ServeSettings.from_dict(next(app.args for app in config.applications if app.name == APP_NAME))
    check_model(settings.model, settings.tracking_uri)
    ensure_ray()
    client = serve_start(http_options=config.http_options.model_dump(), proxy_location=config.proxy_location)
    client.deploy_apps(config, _blocking=False)
    deadline = time.monotonic() + timeout_s
    while True:
        status = serve.status().applications.get(APP_NAME)
        if status is not None and status.status == ApplicationStatus.RUNNING:
            break
        if status is not None and status.status in (ApplicationStatus.DEPLOY_FAILED, ApplicationStatus.UNHEALTHY):
            reason = (status.message.strip().splitlines() or ["no message; see the Serve logs"])[-1]
            raise ALTError(f"the Serve application failed to deploy: {reason}")
        if time.monotonic() > deadline:
            raise ALTError(f"the Serve application did not start within {timeout_s:.0f} s "
                           f"({status.status if status else 'not created'})")
        time.sleep(1)
    host = config.http_options.host
    return f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{config.http_options.port}"


def model_summary(url: str, token: str | None = None) -> dict:
    request = urllib.request.Request(f"{url}/v1/model",
                                     headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())
    except (urllib.error.URLError, TimeoutError) as err:
        raise ALTError(f"the server at {url} deployed but does not answer /v1/model ({err})") from err


def run_server(config: ServeDeploySchema, token: str | None = None) -> None:
    """Deploy, print where the API is and which model it serves, and serve until Ctrl-C; whatever happens
    after the deploy starts, the application is taken down on the way out."""
    try:
        url = deploy(config)
        model = model_summary(url, token)
        version = f" version {model['version']} ({model['alias'] or 'pinned'})" if model["version"] else ""
        logger.info(f"serve: {url} (API docs {url}/docs) serving {model['name']}{version}; Ctrl-C stops")
        serve_until_ctrl_c()
    finally:
        stop_app()


def serve_until_ctrl_c() -> None:
    """Keep the deployed application up until Ctrl-C; the caller takes it down."""
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        logger.info("serve: stopping")


def stop_app() -> None:
    """Take our application down; Serve itself only when no other application runs on the cluster."""
    if not ray.is_initialized():
        return
    serve.delete(APP_NAME)
    if not serve.status().applications:
        serve.shutdown()
