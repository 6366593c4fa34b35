"""Serve stage (`alt serve`): deploy deploy/serve.yaml on Ray Serve and run until Ctrl-C.

The config file is the same one `serve run`/`serve deploy` and KubeRay's RayService take; `alt serve` fills
in the model (`--model URI` or `--checkpoint DIR`), the tracking URI, host and port, deploys it the way
`serve run CONFIG` does, waits until the application runs, and prints its URL and model version.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.request
from pathlib import Path

import yaml
from ray import serve
from ray.serve.schema import ApplicationStatus, ServeDeploySchema

from alt_core.errors import ALTError, ConfigError
from pipelines.console import ensure_ray

logger = logging.getLogger(__name__)
DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "deploy" / "serve.yaml"
APP_NAME = "alt"


def serve_config(path: str | Path = DEFAULT_CONFIG, model: str | None = None, tracking_uri: str | None = None,
                 host: str | None = None, port: int | None = None) -> ServeDeploySchema:
    """The Serve config with the command line's overrides, checked against Ray's schema."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Serve config {path} does not exist; deploy/serve.yaml is the default")
    raw = yaml.safe_load(path.read_text())
    apps = [a for a in raw.get("applications", []) if a.get("name") == APP_NAME]
    if not apps:
        raise ConfigError(f"{path}: no application named {APP_NAME!r}")
    if model:
        apps[0].setdefault("args", {})["model"] = model
    if tracking_uri:
        apps[0].setdefault("args", {})["tracking_uri"] = tracking_uri
    http = raw.setdefault("http_options", {})
    if host:
        http["host"] = host
    if port:
        http["port"] = port
    try:
        return ServeDeploySchema.model_validate(raw)
    except Exception as err:
        raise ConfigError(f"{path}: not a valid Serve config ({str(err).splitlines()[0]})") from err


def deploy(config: ServeDeploySchema, timeout_s: float = 300.0) -> str:
    """Start Serve with the config's HTTP options, deploy its applications, wait until `alt` runs; its URL."""
    from ray.serve._private.api import serve_start  # what `serve run CONFIG` uses to deploy a config file

    ensure_ray()
    client = serve_start(http_options=config.http_options.model_dump(), proxy_location=config.proxy_location)
    client.deploy_apps(config, _blocking=False)
    deadline = time.monotonic() + timeout_s
    while True:
        status = serve.status().applications.get(APP_NAME)
        if status is not None and status.status == ApplicationStatus.RUNNING:
            break
        if status is not None and status.status == ApplicationStatus.DEPLOY_FAILED:
            raise ALTError(f"the Serve application failed to deploy: {status.message.strip().splitlines()[-1]}")
        if time.monotonic() > deadline:
            raise ALTError(f"the Serve application did not start within {timeout_s:.0f} s "
                           f"({status.status if status else 'not created'})")
        time.sleep(1)
    host = config.http_options.host
    return f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{config.http_options.port}"


def model_summary(url: str, token: str | None = None) -> dict:
    request = urllib.request.Request(f"{url}/v1/model",
                                     headers={"Authorization": f"Bearer {token}"} if token else {})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def run_server(config: ServeDeploySchema, token: str | None = None) -> None:
    """Deploy, print where the API is and which model it serves, and serve until Ctrl-C."""
    url = deploy(config)
    model = model_summary(url, token)
    version = f"version {model['version']} ({model.get('alias') or 'pinned'})" if model.get("version") \
        else model.get("checkpoint")
    logger.info(f"serve: {url} (API docs {url}/docs) serving {model['uri']} {version}; Ctrl-C stops")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        logger.info("serve: stopping")
    finally:
        serve.shutdown()
