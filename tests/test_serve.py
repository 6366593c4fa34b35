"""The Serve stage against a live server on a free loopback port: real Ray Serve, FastAPI, decord, PyAV and an
MLflow (sqlite) registry. One deployment of deploy/serve.yaml serves the whole module."""

from __future__ import annotations

import http.client
import io
import json
import shutil
import subprocess
import sys
import threading
import time
from base64 import b64decode
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import av
import matplotlib.pyplot as plt
import numpy as np
import pytest
import requests
import yaml
from mlflow.tracking import MlflowClient
from PIL import Image
from ray import serve
from ray.serve.schema import ServeDeploySchema

from alt_core.checkpoint import save_checkpoint
from alt_core.errors import ConfigError
from alt_core.registry import load_model
from alt_core.synthetic.synth import render_clip, sample_clip_spec, write_mp4
from deploy.app import ServeSettings
from pipelines import tracking
from pipelines.serve import DEFAULT_CONFIG, MODE_CONFIGS, deploy, serve_config
from tests.browser import MISSING, browser_available, chromium, save_page, submit_clip
from tests.helpers import LABELS, free_port, make_model

pytestmark = [pytest.mark.ray, pytest.mark.usefixtures("local_ray")]
TOKEN = "test-token-7f3a"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CAP_MB = 2
SINGLE_CONFIG = MODE_CONFIGS["single"]


def clip_bytes(label: str = "circle moving left", seed: int = 3, frames: int = 16, size: int = 64) -> bytes:
    path = Path(f"/tmp/alt-serve-clip-{label.replace(' ', '_')}-{seed}-{frames}-{size}.mp4")
    write_mp4(path, render_clip(sample_clip_spec(label, seed=seed, frames=frames, size=size)))
    data = path.read_bytes()
    path.unlink()
    return data


def register(client: MlflowClient, tracking_uri: str, artifacts: Path, checkpoint: Path) -> int:
    experiment = tracking.experiment_id(tracking_uri, artifacts)
    run = client.create_run(experiment)
    client.log_artifacts(run.info.run_id, str(checkpoint), "checkpoint")
    client.set_terminated(run.info.run_id)
    return tracking.register_version(client, run.info.run_id, "checkpoint", {"data_hash": "test"})


@pytest.fixture(scope="module")
def server(tmp_path_factory, micro_backbone, micro_corpus):
    """Two registered versions of a tiny model; the server starts on version 1 (`champion`)."""
    root = tmp_path_factory.mktemp("serve")
    tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri)
    versions = []
    for seed in (0, 1):
        model = make_model(micro_backbone, micro_corpus)
        model.logit_scale.data += seed  # two distinguishable versions
        versions.append(register(client, tracking_uri, root / "artifacts",
                                 save_checkpoint(model, root / f"ckpt{seed}")))
    client.set_registered_model_alias("alt", "champion", str(versions[0]))
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    app = raw["applications"][0]
    app["args"].update(model="models:/alt@champion", tracking_uri=tracking_uri, max_upload_mb=CAP_MB, watch_s=1,
                       request_timeout_s=60)
    ingress = next(d for d in app["deployments"] if d["name"] == "Ingress")
    ingress["ray_actor_options"]["runtime_env"] = {"env_vars": {"ALT_SERVE_TOKEN": TOKEN}}
    (root / "serve.yaml").write_text(yaml.safe_dump(raw))
    url = deploy(serve_config(root / "serve.yaml", port=free_port()))
    yield {"url": url, "client": client, "versions": versions, "root": root, "tracking_uri": tracking_uri}
    serve.shutdown()


def post(server: dict, data: bytes = b"", params=None, files=None, headers=None, **kwargs) -> requests.Response:
    headers = AUTH | (headers or {})
    if files is None and "content-type" not in {k.lower() for k in headers}:
        headers["Content-Type"] = "video/mp4"
    return requests.post(f"{server['url']}/v1/predict", params=params, files=files, headers=headers,
                         data=None if files else data, timeout=120, **kwargs)


REMADE_STORE = """
import sys
from pathlib import Path
from mlflow.tracking import MlflowClient
from alt_core.manifest import read_labels
from alt_core.registry import resolve_model
from tests.test_serve import register
uri, artifacts, checkpoint = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
assert register(MlflowClient(uri), uri, artifacts, checkpoint) == 1
print(read_labels(resolve_model("models:/alt/1", uri).directory / "labels.txt"))
"""


def test_a_remade_registry_at_the_same_uri_never_serves_the_old_cached_version(tmp_path, micro_backbone,
                                                                                micro_corpus):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first, second = make_model(micro_backbone, micro_corpus), make_model(micro_backbone, micro_corpus)
    first.set_labels(LABELS[:2])
    second.set_labels(LABELS[2:])
    assert register(MlflowClient(uri), uri, tmp_path / "artifacts", save_checkpoint(first, tmp_path / "a")) == 1
    assert load_model("models:/alt/1", uri)[0].labels == LABELS[:2]  # now cached
    shutil.rmtree(tmp_path / "artifacts")
    (tmp_path / "mlflow.db").unlink()  # the store made again at the same URI (a rerun of `alt demo`), in a fresh
    # process as a rerun is: its version 1 is another model
    result = subprocess.run([sys.executable, "-c", REMADE_STORE, uri, str(tmp_path / "artifacts"),
                             str(save_checkpoint(second, tmp_path / "b"))], capture_output=True, text=True,
                            timeout=300, cwd=Path(__file__).resolve().parents[1])
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == str(LABELS[2:])


def test_serve_config_file_validates_against_rays_schema():
    config = ServeDeploySchema.model_validate(yaml.safe_load(DEFAULT_CONFIG.read_text()))
    deployments = {d.name: d for d in config.applications[0].deployments}
    assert set(deployments) == {"Ingress", "ALTModel"}
    model = deployments["ALTModel"]
    assert model.autoscaling_config["min_replicas"] >= 1 and model.autoscaling_config["max_replicas"] > 1
    assert model.max_ongoing_requests >= config.applications[0].args["max_batch_size"]
    assert config.http_options.host == "127.0.0.1"


def test_serve_config_args_are_the_serve_settings_defaults():
    """ServeSettings is the one source of the application's settings: deploy/serve.yaml spells them out for
    operators, and must say what the code does (the RayService's copy is checked against this file)."""
    args = yaml.safe_load(DEFAULT_CONFIG.read_text())["applications"][0]["args"]
    assert args == ServeSettings().to_dict(), "deploy/serve.yaml and deploy.app.ServeSettings drifted: edit both"


def test_serve_config_overrides_reach_the_replicas_and_bad_files_are_one_line(tmp_path):
    config = serve_config(DEFAULT_CONFIG, model="models:/alt@challenger", port=9123,
                          env_vars={"ALT_SERVE_TOKEN": "s3cret"})
    app = config.applications[0]
    assert app.args["model"] == "models:/alt@challenger" and config.http_options.port == 9123
    assert app.runtime_env["env_vars"] == {"ALT_SERVE_TOKEN": "s3cret"}  # not only a Ray started by `alt serve`
    for text, message in (("applications: [\n", "not valid YAML"), ("- 1\n", "applications` list"),
                          ("applications: []\n", "no application named")):
        (tmp_path / "bad.yaml").write_text(text)
        with pytest.raises(ConfigError, match=message):
            serve_config(tmp_path / "bad.yaml")


def test_single_mode_config_is_the_split_config_with_only_its_declared_changes():
    """deploy/serve-single.yaml says what it changes: the mode, and one deployment (Ingress) with the model
    deployment's queue and autoscaling and a whole CPU for decoding and the forward; nothing else drifts."""
    split, single = (yaml.safe_load(path.read_text()) for path in (DEFAULT_CONFIG, SINGLE_CONFIG))
    ServeDeploySchema.model_validate(single)
    split_app, single_app = split["applications"][0], single["applications"][0]
    assert single_app["args"] == split_app["args"] | {"mode": "single"}
    model = next(d for d in split_app["deployments"] if d["name"] == "ALTModel")
    assert single_app["deployments"] == [model | {"name": "Ingress", "ray_actor_options": {"num_cpus": 1}}]
    strip = lambda raw: raw | {"applications": [raw["applications"][0] | {"args": None, "deployments": None}]}  # noqa: E731
    assert strip(single) == strip(split)


def test_a_config_whose_deployments_are_not_its_modes_is_one_line(tmp_path):
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    raw["applications"][0]["args"]["mode"] = "single"
    (tmp_path / "mixed.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="mode single builds no ALTModel deployment.*deploy/serve.yaml"):
        serve_config(tmp_path / "mixed.yaml")
    raw["applications"][0]["args"]["mode"] = "both"
    (tmp_path / "mixed.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="args.mode must be one of split, single, got 'both'"):
        serve_config(tmp_path / "mixed.yaml")
    assert serve_config(SINGLE_CONFIG).applications[0].args["mode"] == "single"


def test_predict_returns_sorted_top_k_and_entities_with_frames(server):
    response = post(server, files={"file": ("clip.mp4", clip_bytes(), "video/mp4")}, params={"top_k": 3})
    assert response.status_code == 200, response.text
    body = response.json()
    scores = [p["score"] for p in body["predictions"]]
    assert len(scores) == 3 and scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1.0001
    assert {p["label"] for p in body["predictions"]} <= set(LABELS)
    entities = body["entities"]
    assert entities and all(e["frames"] and {"unit", "description", "contribution", "score"} <= set(e)
                            for e in entities)
    assert body["model"]["version"] == server["versions"][0] and body["model"]["alias"] == "champion"
    assert {"decode", "model", "total"} <= set(body["timing_ms"])
    raw = post(server, clip_bytes(seed=4), params={"explain": "false"})
    assert raw.status_code == 200 and raw.json()["entities"] == [] and len(raw.json()["predictions"]) == 4


def test_explanation_picture_as_png_and_inline_in_the_json(server):
    clip = clip_bytes(seed=6)
    png = post(server, clip, params={"format": "png", "top_k": 2})
    assert png.status_code == 200 and png.headers["content-type"] == "image/png", png.text[:200]
    inline = post(server, clip, params={"picture": "true"})
    assert inline.status_code == 200
    prefix = "data:image/png;base64,"
    assert inline.json()["picture"].startswith(prefix) and inline.json()["entities"]
    inline_png = b64decode(inline.json()["picture"][len(prefix):])
    with Image.open(io.BytesIO(png.content)) as a, Image.open(io.BytesIO(inline_png)) as b:
        assert a.format == b.format == "PNG" and a.width == b.width > 4 * 32  # the strip of the model's 4 frames
    assert "picture" not in post(server, clip).json()  # only when asked for


@pytest.mark.skipif(not browser_available(), reason=MISSING)
def test_web_page_in_a_real_browser_shows_labels_picture_and_api_errors(server, tmp_path):
    from selenium.webdriver.common.by import By

    clip, notes = tmp_path / "clip.mp4", tmp_path / "notes.txt"
    clip.write_bytes(clip_bytes(seed=7))
    notes.write_text("this is not a video\n" * 20)
    api_error = post(server, files={"file": ("notes.txt", notes.read_bytes(), "text/plain")}).json()["error"]
    with chromium() as driver:
        assert submit_clip(driver, server["url"], clip, token=TOKEN) == "result"
        rows = [[td.text for td in tr.find_elements(By.TAG_NAME, "td")]
                for tr in driver.find_elements(By.CSS_SELECTOR, "#predictions tbody tr")]
        assert sorted(row[0] for row in rows) == sorted(LABELS)  # top-k defaults to every label when under 5
        scores = [float(row[1]) for row in rows]
        assert scores == sorted(scores, reverse=True)
        assert driver.find_elements(By.CSS_SELECTOR, "#entities tbody tr")
        width = driver.execute_script("return document.getElementById('picture').naturalWidth")
        assert width > 4 * 32
        save_page(driver, tmp_path / "page.png")
        assert submit_clip(driver, server["url"], notes, token=TOKEN) == "error"
        shown = driver.find_element(By.ID, "error").text
        assert api_error["message"] in shown and api_error["code"] in shown
        assert not driver.find_element(By.ID, "result").is_displayed()
        assert submit_clip(driver, server["url"], clip, token="wrong") == "error"
        assert "Bearer" in driver.find_element(By.ID, "error").text
    with Image.open(tmp_path / "page.png") as shot:
        assert shot.format == "PNG" and shot.width >= 1000


def test_the_cli_and_the_server_give_the_same_labels_scores_and_entities(server, tmp_path):
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(clip_bytes(seed=8))
    version = server["versions"][0]
    cli = subprocess.run([sys.executable, "-m", "pipelines.cli", "predict", str(clip), "--model",
                          f"models:/alt/{version}", "--tracking-uri", server["tracking_uri"], "--top-k", "4", "--json"],
                         capture_output=True, text=True, timeout=300)
    assert cli.returncode == 0, cli.stderr[-2000:]
    printed = json.loads(cli.stdout)
    served = post(server, clip.read_bytes(), params={"top_k": 4}).json()
    assert served["model"]["version"] == printed["model"]["version"] == version
    assert served["predictions"] == printed["predictions"] and len(served["predictions"]) == 4
    assert served["entities"] == printed["entities"] and served["entities"]


def strings(value) -> list[str]:
    """Every string in a JSON value."""
    if isinstance(value, dict):
        return [s for v in value.values() for s in strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    return [value] if isinstance(value, str) else []


def test_models_are_named_never_located_in_responses(server):
    card = requests.get(f"{server['url']}/v1/model", headers=AUTH, timeout=30)
    prediction = post(server, clip_bytes(seed=9))
    for response in (card, prediction):
        assert response.status_code == 200, response.text
        assert str(server["root"]) not in response.text and "alt-models-" not in response.text
        assert not [s for s in strings(response.json()) if s.startswith("/") or "://" in s]
    assert card.json()["name"] == "alt" and prediction.json()["model"]["name"] == "alt"


def test_per_request_labels_are_an_open_vocabulary(server):
    labels = ["hexagon orbiting", "cross shrinking", "a red circle moving left"]
    response = post(server, clip_bytes(), params={"labels": labels, "top_k": 3})
    assert response.status_code == 200, response.text
    assert sorted(p["label"] for p in response.json()["predictions"]) == sorted(labels)


def test_model_labels_health_readiness_and_openapi(server):
    model = requests.get(f"{server['url']}/v1/model", headers=AUTH, timeout=30).json()
    assert model["labels"] == LABELS and model["data_hash"] == "test" and model["run_id"]
    assert requests.get(f"{server['url']}/v1/labels", headers=AUTH, timeout=30).json() == {"labels": LABELS}
    assert requests.get(f"{server['url']}/healthz", timeout=30).json() == {"status": "alive"}
    assert requests.get(f"{server['url']}/readyz", timeout=30).status_code == 200
    schema = requests.get(f"{server['url']}/openapi.json", timeout=30).json()
    assert "/v1/predict" in schema["paths"] and requests.get(f"{server['url']}/docs", timeout=30).status_code == 200


def test_bearer_token_is_required_and_compared(server):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        response = requests.get(f"{server['url']}/v1/model", headers=headers, timeout=30)
        assert response.status_code == 401 and response.json()["error"]["code"] == "unauthorized"
    no_token = requests.post(f"{server['url']}/v1/predict", data=clip_bytes(), timeout=60,
                             headers={"Content-Type": "video/mp4"})
    assert no_token.status_code == 401


def _png() -> bytes:
    buffer = io.BytesIO()
    plt.imsave(buffer, np.random.default_rng(0).random((64, 64, 3)), format="png")
    return buffer.getvalue()


def _audio_only() -> bytes:
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("aac", rate=16000)
        samples = (np.sin(np.arange(16000) / 10) * 0.3).astype(np.float32)[None]
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
        frame.sample_rate = 16000
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buffer.getvalue()


def _tiny_video() -> bytes:
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width = stream.height = 2  # the smallest frame x264 encodes in 4:2:0
        stream.pix_fmt = "yuv420p"
        for _ in range(8):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.zeros((2, 2, 3), np.uint8), format="rgb24")))
        container.mux(stream.encode())
    return buffer.getvalue()


def _zero_frames() -> bytes:
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width = stream.height = 64
        stream.pix_fmt = "yuv420p"
        container.start_encoding()
    return buffer.getvalue()


def _garbage_middle() -> bytes:
    data = clip_bytes(seed=5)
    third = len(data) // 3
    return data[:third] + np.random.default_rng(0).integers(0, 256, third, dtype=np.uint8).tobytes() + data[2 * third:]


BAD_INPUTS = {
    "empty body": (lambda s: post(s, b""), 400, "empty_upload"),
    "missing file field": (lambda s: post(s, files={"labels": (None, "circle bouncing")}), 400, "missing_file"),
    "text file named .mp4": (lambda s: post(s, files={"file": ("notes.mp4", b"not a video\n" * 40)}), 422,
                             "undecodable_video"),
    "truncated mp4": (lambda s: post(s, clip_bytes()[:2000]), 422, "undecodable_video"),
    "garbage in the middle": (lambda s: post(s, _garbage_middle()), 422, "undecodable_video"),
    "zero-frame video": (lambda s: post(s, _zero_frames()), 422, "undecodable_video"),
    "PNG image": (lambda s: post(s, files={"file": ("frame.png", _png(), "image/png")}), 422, "undecodable_video"),
    "audio-only file": (lambda s: post(s, _audio_only()), 422, "undecodable_video"),
    "2x2-pixel video": (lambda s: post(s, _tiny_video()), 422, "undecodable_video"),
    "wrong content type": (lambda s: post(s, clip_bytes(), headers={"Content-Type": "text/plain"}), 415,
                           "unsupported_media_type"),
    "top_k 0": (lambda s: post(s, clip_bytes(), params={"top_k": 0}), 422, "invalid_parameter"),
    "top_k negative": (lambda s: post(s, clip_bytes(), params={"top_k": -2}), 422, "invalid_parameter"),
    "top_k above the labels": (lambda s: post(s, clip_bytes(), params={"top_k": 5}), 422, "invalid_parameter"),
    "top_k not a number": (lambda s: post(s, clip_bytes(), params={"top_k": "many"}), 422, "invalid_parameter"),
    "clips 0": (lambda s: post(s, clip_bytes(), params={"clips": 0}), 422, "invalid_parameter"),
    "labels empty": (lambda s: post(s, clip_bytes(), params={"labels": ""}), 422, "invalid_labels"),
    "over 1000 labels": (lambda s: post(s, files=[("file", ("c.mp4", clip_bytes()))] +
                                         [("labels", (None, f"class {i}")) for i in range(1001)]), 422,
                         "invalid_labels"),
    "a label over 200 characters": (lambda s: post(s, clip_bytes(), params={"labels": "x" * 201}), 422,
                                    "invalid_labels"),
    "non-UTF-8 label bytes": (lambda s: requests.post(f"{s['url']}/v1/predict?labels=%FF%FEcircle", data=clip_bytes(),
                                                      headers=AUTH | {"Content-Type": "video/mp4"}, timeout=60), 400,
                              "invalid_encoding"),
    "malformed JSON": (lambda s: post(s, b'{"top_k": 3,', headers={"Content-Type": "application/json"}), 400,
                       "malformed_json"),
    "unknown parameter": (lambda s: post(s, clip_bytes(), params={"topk": 3}), 400, "unknown_parameter"),
    "format gif": (lambda s: post(s, clip_bytes(), params={"format": "gif"}), 422, "invalid_parameter"),
    "picture without explain": (lambda s: post(s, clip_bytes(), params={"picture": "true", "explain": "false"}), 422,
                                "invalid_parameter"),
    "file name with ../": (lambda s: post(s, files={"file": ("../../etc/passwd.mp4", clip_bytes())}), 400,
                           "invalid_filename"),
    "wrong bearer token": (lambda s: post(s, clip_bytes(), headers={"Authorization": "Bearer nope"}), 401,
                           "unauthorized"),
    "GET on /v1/predict": (lambda s: requests.get(f"{s['url']}/v1/predict", headers=AUTH, timeout=30), 405,
                           "method_not_allowed"),
    "upload over the cap": (lambda s: post(s, b"\0" * (CAP_MB * 2**20 + 1)), 413, "upload_too_large"),
}


@pytest.mark.parametrize("kind", list(BAD_INPUTS))
def test_bad_input_gets_its_4xx_json_and_the_server_stays_healthy(server, kind):
    send, status, code = BAD_INPUTS[kind]
    response = send(server)
    assert response.status_code == status, (kind, response.status_code, response.text[:300])
    error = response.json()["error"]
    assert error["code"] == code and error["message"], (kind, error)
    assert requests.get(f"{server['url']}/readyz", timeout=30).status_code == 200
    assert post(server, clip_bytes()).status_code == 200


def test_upload_over_the_cap_is_refused_before_the_body_is_read(server):
    host, port = server["url"].removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    connection.putrequest("POST", "/v1/predict")
    for key, value in (AUTH | {"Content-Type": "video/mp4", "Content-Length": str(200 * 2**20)}).items():
        connection.putheader(key, value)
    connection.endheaders()
    connection.send(b"\0" * 4096)  # 4 KB of an announced 200 MB: the answer must not wait for the rest
    response = connection.getresponse()
    assert response.status == 413 and json.loads(response.read())["error"]["code"] == "upload_too_large"
    connection.close()


def test_a_ten_minute_video_decodes_only_its_sampled_frames(server, tmp_path):
    path = tmp_path / "long.mp4"
    frames = np.zeros((10 * 60 * 8, 32, 32, 3), dtype=np.uint8)  # 10 minutes at 8 fps
    frames[:, 8:24, 8:24] = np.linspace(0, 255, len(frames), dtype=np.uint8)[:, None, None, None]
    write_mp4(path, frames)
    start = time.monotonic()
    response = post(server, path.read_bytes(), params={"clips": 2})
    assert response.status_code == 200, response.text
    assert time.monotonic() - start < 60 and response.json()["timing_ms"]["decode"] < 30000


def test_concurrent_requests_share_batches(server):
    clips = [clip_bytes(seed=s) for s in range(12)]
    with ThreadPoolExecutor(12) as pool:
        responses = list(pool.map(lambda data: post(server, data, params={"labels": ["a", "b"], "top_k": 2}
                                                    if len(data) % 2 else None), clips))
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses if r.status_code != 200]
    timings = [r.json()["timing_ms"] for r in responses]
    assert max(t["batch_size"] for t in timings) > 1  # with no batch wait: what queued during a forward
    assert all(t["queue"] + t["forward"] + t["hop"] == pytest.approx(t["model"], abs=0.3) for t in timings)
    stats = requests.get(f"{server['url']}/v1/stats", headers=AUTH, timeout=30).json()
    assert sum(int(size) * count for size, count in stats["batches"].items()) >= 1


def test_moving_the_champion_alias_switches_replicas_without_failing_requests(server):
    client, (first, second) = server["client"], server["versions"]
    failures, seen, stop = [], set(), threading.Event()

    def keep_asking() -> None:
        while not stop.is_set():
            response = post(server, clip_bytes(seed=7))
            if response.status_code != 200:
                failures.append(response.text)
            else:
                seen.add(response.json()["model"]["version"])

    worker = threading.Thread(target=keep_asking)
    worker.start()
    try:
        client.set_registered_model_alias("alt", "champion", str(second))
        deadline = time.monotonic() + 60
        while requests.get(f"{server['url']}/v1/model", headers=AUTH, timeout=30).json()["version"] != second:
            assert time.monotonic() < deadline, "the replica never switched to the new champion"
            time.sleep(0.5)
        time.sleep(2)
    finally:
        stop.set()
        worker.join()
        client.set_registered_model_alias("alt", "champion", str(first))
    assert not failures and second in seen
