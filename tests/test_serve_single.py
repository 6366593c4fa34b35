"""`single` mode (deploy/serve-single.yaml) against a live server: one deployment decodes and runs the model,
with the same API, batching, live reconfiguration and bad-input answers as split mode (tests/test_serve.py)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
import yaml
from ray import serve

from alt_core.checkpoint import save_checkpoint
from pipelines.serve import APP_NAME, deploy, serve_config
from tests.helpers import LABELS, free_port, make_model
from tests.test_serve import SINGLE_CONFIG, clip_bytes

pytestmark = [pytest.mark.ray, pytest.mark.usefixtures("local_ray")]


@pytest.fixture(scope="module")
def single(tmp_path_factory, micro_backbone, micro_corpus):
    root = tmp_path_factory.mktemp("serve-single")
    checkpoint = save_checkpoint(make_model(micro_backbone, micro_corpus), root / "checkpoint")
    raw = yaml.safe_load(SINGLE_CONFIG.read_text())
    raw["applications"][0]["args"]["watch_s"] = 0
    raw["applications"][0]["deployments"][0]["autoscaling_config"].update(max_replicas=1)
    path = root / "serve.yaml"
    path.write_text(yaml.safe_dump(raw))

    def redeploy(user_config: dict | None = None) -> str:
        if user_config is not None:
            raw["applications"][0]["deployments"][0]["user_config"] = user_config
            path.write_text(yaml.safe_dump(raw))
        return deploy(serve_config(path, model=str(checkpoint), port=port))

    port = free_port()
    url = redeploy()
    yield {"url": url, "redeploy": redeploy}
    serve.shutdown()


def upload(url: str, data: bytes, **params) -> requests.Response:
    return requests.post(f"{url}/v1/predict", data=data, params=params, headers={"Content-Type": "video/mp4"},
                         timeout=120)


def concurrent_batches(url: str, count: int = 12) -> list[dict]:
    with ThreadPoolExecutor(count) as pool:
        responses = list(pool.map(lambda seed: upload(url, clip_bytes(seed=seed)), range(count)))
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses if r.status_code != 200]
    return [r.json()["timing_ms"] for r in responses]


def test_one_deployment_decodes_and_predicts(single):
    deployments = serve.status().applications[APP_NAME].deployments
    assert set(deployments) == {"Ingress"}
    response = upload(single["url"], clip_bytes(), top_k=3)
    assert response.status_code == 200, response.text
    body = response.json()
    assert len(body["predictions"]) == 3 and {p["label"] for p in body["predictions"]} <= set(LABELS)
    assert body["entities"] and body["timing_ms"]["forward"] > 0
    stats = requests.get(f"{single['url']}/v1/stats", timeout=30).json()
    assert stats["deployment"] == "Ingress" and stats["requests"] >= 1  # the model ran in the ingress replica


def test_concurrent_requests_share_batches_and_user_config_reaches_the_model(single):
    assert max(t["batch_size"] for t in concurrent_batches(single["url"])) > 1
    single["redeploy"]({"max_batch_size": 1})
    try:
        assert {t["batch_size"] for t in concurrent_batches(single["url"])} == {1}
    finally:
        single["redeploy"]({"max_batch_size": 8})


def test_bad_input_gets_its_4xx_and_the_server_stays_healthy(single):
    response = upload(single["url"], clip_bytes()[:2000])
    assert response.status_code == 422 and response.json()["error"]["code"] == "undecodable_video"
    assert requests.get(f"{single['url']}/readyz", timeout=30).status_code == 200
