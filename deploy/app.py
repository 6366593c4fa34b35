"""The Ray Serve application (docs/serving.md): an ingress that checks requests and decodes uploads, and the
model, whose forward is dynamically batched across requests; in `split` mode (deploy/serve.yaml) the model is
its own deployment (GPU replicas on a cluster), in `single` mode (deploy/serve-single.yaml) it runs inside the
ingress replica, so a request makes no hop between replicas.

- `Ingress` (FastAPI): authentication, the upload cap (checked from Content-Length and while reading),
  parameter checks, decoding from memory at the model's scale (decord; frames sampled as in evaluation),
  a time budget per request, JSON errors `{"error": {"code", "message"}}` with a 4xx status for the
  client's fault, per-stage timings in every answer; no error takes a replica down.
- `ModelRunner` (the `ALTModel` deployment in split mode): loads `models:/alt@champion` (or a checkpoint
  directory), batches requests as they queue (deploy/batching.py; clips of different label sets and view
  counts share one backbone + adapter forward), caches the class matrix of each label set (bounded), and
  switches to a new version when the alias moves, without failing requests in flight.

`build_app(args)` is the application builder `serve run deploy/serve.yaml` and `alt serve` call.
"""


import asyncio
import base64
import hmac
import json
import logging
import os
import threading
import time
from collections import Counter, OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl

import torch
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from ray import serve
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from alt_core.config import DEFAULT_TOP_K, Settings, setting
from alt_core.errors import ConfigError
from alt_core.model import ALTModel
from alt_core.predict import VideoRequest, predict_batch
from alt_core.registry import is_registry_uri, load_model, registry_version
from alt_core.video import VideoDecodeError, load_views
from deploy.batching import QueueBatcher

logger = logging.getLogger(__name__)
MAX_LABELS, MAX_LABEL_CHARS, MAX_CLIPS = 1000, 200, 8
DECODE_THREADS = 2  # per ingress replica
MODES = {"split": ("Ingress", "ALTModel"), "single": ("Ingress",)}  # the deployments each mode builds
OPTION_NAMES = ("top_k", "labels", "explain", "clips", "picture", "format")
PAGE = Path(__file__).with_name("page.html")


@dataclass
class ServeSettings(Settings):
    """The application's arguments (`args` in deploy/serve.yaml)."""

    model: str = setting("models:/alt@champion", "registry URI (models:/NAME@ALIAS or models:/NAME/VERSION) or "
                                                 "a checkpoint directory")
    tracking_uri: str | None = setting(None, "MLflow tracking URI of the registry (default: $MLFLOW_TRACKING_URI)")
    max_upload_mb: float = setting(64.0, "largest upload accepted (413 above)")
    request_timeout_s: float = setting(30.0, "time budget of one request: decode + model (504 when exceeded)")
    mode: str = setting("split", "split: a CPU ingress decodes, a model deployment (a GPU on a cluster) batches "
                                 "the forward; single: one deployment decodes and runs the model (CPU nodes, "
                                 "small models: no hop between replicas)")
    max_batch_size: int = setting(8, "requests one forward may batch")
    batch_wait_timeout_s: float = setting(0.0, "how long a batch that is not full may wait to fill (0: never; "
                                               "requests that arrive during a forward form the next batch)")
    label_cache_size: int = setting(64, "label sets whose class matrix stays cached per replica")
    watch_s: float = setting(10.0, "how often a replica checks whether the registry alias moved (0: never)")


class APIError(Exception):
    """A request the server refuses: HTTP status, a short code and a sentence."""

    def __init__(self, status: int, code: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


def error_response(status: int, code: str, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


api = FastAPI(title="ALT on Ray", version="1",
              description="Video action recognition with ALT (Align before Adapt): top-k labels for an uploaded "
                          "clip, open-vocabulary label sets, and the entities each prediction was built from.")
# The upload cap reaches the middleware through the replica's environment: Serve rebuilds the FastAPI app
# inside the replica, so module state set by the deployment's constructor is not what the middleware reads.
UPLOAD_CAP_ENV = "ALT_MAX_UPLOAD_BYTES"


@api.exception_handler(APIError)
async def _api_error(_: Request, err: APIError) -> JSONResponse:
    return error_response(err.status, err.code, err.message, err.headers)


@api.exception_handler(RequestValidationError)
async def _invalid(_: Request, err: RequestValidationError) -> JSONResponse:
    first = err.errors()[0] if err.errors() else {}
    where = ".".join(str(p) for p in first.get("loc", ())[1:]) or "request"
    return error_response(422, "invalid_parameter", f"{where}: {first.get('msg', 'invalid value')}")


@api.exception_handler(HTTPException)
async def _http_error(_: Request, err: HTTPException) -> JSONResponse:
    codes = {404: "not_found", 405: "method_not_allowed", 413: "upload_too_large"}
    return error_response(err.status_code, codes.get(err.status_code, "http_error"), str(err.detail),
                          getattr(err, "headers", None))


@api.exception_handler(Exception)
async def _unexpected(_: Request, err: Exception) -> JSONResponse:
    logger.exception("unexpected error while serving a request")
    return error_response(500, "internal_error", f"the server failed on this request ({type(err).__name__})")


class UploadLimit:
    """ASGI middleware: refuse bodies over the cap from Content-Length before reading, and while reading when
    the length is not announced (chunked uploads)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = int(os.environ.get(UPLOAD_CAP_ENV, ServeSettings.max_upload_mb * 2**20))
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and not length.isdigit():
            response = error_response(400, "malformed_body", "the Content-Length header is not a number")
            return await response(scope, receive, send)
        if length is not None and int(length) > limit:
            response = error_response(413, "upload_too_large", f"the upload is larger than {limit} bytes")
            return await response(scope, receive, send)
        received = 0

        async def capped_receive():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:
                raise HTTPException(413, f"the upload is larger than {limit} bytes")
            return message

        await self.app(scope, capped_receive, send)


api.add_middleware(UploadLimit)


@dataclass
class Options:
    top_k: int | None = None  # None: the default, 5 or every label if there are fewer
    labels: list[str] | None = None
    explain: bool = True
    clips: int = 1
    picture: bool = False  # the explanation picture, inline in the JSON as a data: URL
    format: str = "json"  # "png": answer with the explanation picture itself


def parse_options(pairs: list[tuple[str, str]]) -> Options:
    """Request parameters (query string or form fields) -> Options; anything unknown or out of range is a 4xx."""
    unknown = sorted({k for k, _ in pairs} - set(OPTION_NAMES))
    if unknown:
        raise APIError(400, "unknown_parameter", f"unknown parameter(s) {unknown}; known: {list(OPTION_NAMES)}")
    options = Options()
    values: dict[str, list[str]] = {}
    for key, value in pairs:
        values.setdefault(key, []).append(value)
    for key in ("top_k", "explain", "clips", "picture", "format"):
        if len(values.get(key, [])) > 1:
            raise APIError(400, "invalid_parameter", f"{key} is given more than once")
    try:
        if "top_k" in values:
            options.top_k = int(values["top_k"][0])
        if "clips" in values:
            options.clips = int(values["clips"][0])
    except ValueError as err:
        raise APIError(422, "invalid_parameter", "top_k and clips must be integers") from err
    for key in ("explain", "picture"):
        if key in values:
            flag = values[key][0].lower()
            if flag not in ("true", "false", "1", "0"):
                raise APIError(422, "invalid_parameter", f"{key} must be true or false")
            setattr(options, key, flag in ("true", "1"))
    if "format" in values:
        if values["format"][0] not in ("json", "png"):
            raise APIError(422, "invalid_parameter", f"format must be json or png, got {values['format'][0]!r}")
        options.format = values["format"][0]
    if (options.picture or options.format == "png") and not options.explain:
        raise APIError(422, "invalid_parameter", "the explanation picture needs explain=true")
    if "labels" in values:
        labels = [label.strip() for label in values["labels"]]
        if not labels or any(not label for label in labels):
            raise APIError(422, "invalid_labels", "labels must be non-empty class names")
        if len(labels) > MAX_LABELS:
            raise APIError(422, "invalid_labels", f"at most {MAX_LABELS} labels, got {len(labels)}")
        if any(len(label) > MAX_LABEL_CHARS for label in labels):
            raise APIError(422, "invalid_labels", f"a label is longer than {MAX_LABEL_CHARS} characters")
        if len(set(labels)) != len(labels):
            raise APIError(422, "invalid_labels", "labels must not repeat")
        options.labels = labels
    if options.top_k is not None and options.top_k < 1:
        raise APIError(422, "invalid_parameter", f"top_k must be >= 1, got {options.top_k}")
    if not 1 <= options.clips <= MAX_CLIPS:
        raise APIError(422, "invalid_parameter", f"clips must be between 1 and {MAX_CLIPS}, got {options.clips}")
    return options


def query_pairs(request: Request) -> list[tuple[str, str]]:
    """The query string, decoded strictly: non-UTF-8 bytes are a client error, not replacement characters."""
    try:
        return parse_qsl(request.scope.get("query_string", b"").decode("ascii"), keep_blank_values=True,
                         encoding="utf-8", errors="strict")
    except UnicodeError as err:
        raise APIError(400, "invalid_encoding", "parameters must be UTF-8") from err


async def read_upload(request: Request) -> tuple[bytes, list[tuple[str, str]]]:
    """The clip's bytes and any form fields: multipart `file`, or the raw body with a video/* content type."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        try:
            form = await request.form(max_files=1, max_fields=MAX_LABELS + 10)
        except HTTPException:
            raise
        except Exception as err:  # a malformed multipart body
            raise APIError(400, "malformed_body", f"cannot parse the multipart body ({err})") from err
        try:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise APIError(400, "missing_file", "the multipart body has no `file` field with the clip")
            name = upload.filename or ""
            if "/" in name or "\\" in name or ".." in name or "\x00" in name:
                raise APIError(400, "invalid_filename", "the file name must not contain a path")
            fields = [(k, v) for k, v in form.multi_items() if k != "file"]
            if any(not isinstance(v, str) for _, v in fields):
                raise APIError(400, "unexpected_file", "only one file, in the `file` field, is accepted")
            return await upload.read(), fields
        finally:
            await form.close()  # spooled temporary files are deleted here
    if content_type.startswith("video/") or content_type == "application/octet-stream":
        return await request.body(), []
    if content_type == "application/json":
        try:
            json.loads(await request.body())
        except ValueError as err:
            raise APIError(400, "malformed_json", f"the JSON body does not parse ({err})") from err
    raise APIError(415, "unsupported_media_type",
                   "send the clip as multipart/form-data (field `file`) or as the raw body with a video/* type")


# Serve pickles a deployment's class when it is decorated: what its methods use is defined above it.
def stage_timings(start: float, read: float, decoded: float, done: float, result: dict) -> dict:
    """Where a request's time went in this replica (ms): reading and parsing the upload, decoding (with its
    wait for a decode thread), the model call in all (`model`) and, inside it, the wait for a batch, the
    batch's forward and the rest (`hop`: the handle's round trip in split mode; ~0 in single mode)."""
    model_ms = 1000 * (done - decoded)
    return {"read": round(1000 * (read - start), 1), "decode": round(1000 * (decoded - read), 1),
            "model": round(model_ms, 1), "queue": result["queue_ms"], "forward": result["forward_ms"],
            "hop": round(model_ms - result["queue_ms"] - result["forward_ms"], 1),
            "total": round(1000 * (done - start), 1), "batch_size": result["batch_size"]}


class LoadedModel:
    """One model version with its metadata and a bounded cache of class matrices per label set."""

    def __init__(self, model: ALTModel, meta: dict, cache_size: int):
        self.model, self.meta, self.cache_size = model, meta, cache_size
        self.classes: OrderedDict[tuple[str, ...], torch.Tensor] = OrderedDict()
        self.lock = threading.Lock()

    def class_matrix(self, labels: list[str] | None) -> torch.Tensor:
        if labels is None:
            return self.model.class_embeddings
        key = tuple(labels)
        with self.lock:
            if key in self.classes:
                self.classes.move_to_end(key)
                return self.classes[key]
        matrix = self.model.class_matrix(labels)  # (C, D), outside the lock: the text tower is the slow part
        with self.lock:
            self.classes[key] = matrix
            while len(self.classes) > self.cache_size:
                self.classes.popitem(last=False)
        return matrix


class ModelRunner:
    """The model side of serving, wherever it runs (its own deployment, or inside the ingress in `single`
    mode): loads the reference, batches requests as they queue, caches label sets, and swaps versions when
    the registry alias moves."""

    def __init__(self, settings: ServeSettings):
        self.settings = settings
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.loaded = self.load(self.settings.model)
        self.batch_sizes: Counter[int] = Counter()
        self.served = 0
        self.batcher = QueueBatcher(self.forward_batch, settings.max_batch_size, settings.batch_wait_timeout_s)
        self.swap = threading.Lock()  # one load at a time: the watcher and reconfigure may both want one
        threading.Thread(target=self.watch, name="alias-watcher", daemon=True).start()

    def load(self, reference: str) -> LoadedModel:
        """Load what a reference names now (an alias is pinned to its version); the model is described by its
        name, version, alias and run, never by where its files are."""
        model, source = load_model(reference, self.settings.tracking_uri, device=self.device)
        meta = source.card() | {"adapter": model.config.adapter}
        size, frames = model.backbone.image_size, model.config.num_frames
        with torch.inference_mode():  # warm: the first request should not pay for allocator and kernel set-up
            model(pixels=torch.zeros(1, frames, 3, size, size, dtype=torch.uint8, device=self.device))
        logger.info(f"serving {source.title()}")
        return LoadedModel(model, meta, self.settings.label_cache_size)

    def watch(self) -> None:
        """While the served reference is a registry alias, poll it; load a moved alias's version beside the
        old one, then swap (requests in flight keep theirs). A version that failed to load is not retried."""
        failed = None
        while self.settings.watch_s > 0:
            time.sleep(self.settings.watch_s)
            reference = self.settings.model
            if not (is_registry_uri(reference) and "@" in reference):
                continue
            try:
                now = registry_version(reference, self.settings.tracking_uri)["version"]
            except Exception:
                logger.exception("checking the registry alias failed; keeping the current model")
                continue
            if now in (self.loaded.meta.get("version"), failed):
                continue
            try:
                self.switch(reference)
            except Exception:
                failed = now
                logger.exception(f"loading version {now} of {reference} failed; keeping the current model")

    def switch(self, reference: str) -> None:
        with self.swap:
            self.loaded = self.load(reference)
            self.settings.model = reference

    def reconfigure(self, user_config: dict) -> None:
        """`user_config` of deploy/serve.yaml: batching knobs, and `model` to switch models without a restart."""
        if "max_batch_size" in user_config or "batch_wait_timeout_s" in user_config:
            self.batcher.configure(int(user_config.get("max_batch_size", self.settings.max_batch_size)),
                                   float(user_config.get("batch_wait_timeout_s", self.settings.batch_wait_timeout_s)))
        if user_config.get("model") and user_config["model"] != self.settings.model:
            self.switch(user_config["model"])

    async def info(self) -> dict:
        model = self.loaded.model
        return {"model": self.loaded.meta, "labels": model.labels, "num_frames": model.config.num_frames,
                "image_size": model.backbone.image_size}

    async def stats(self) -> dict:
        context = serve.get_replica_context()
        return {"replica": context.replica_id.unique_id, "deployment": context.deployment, "requests": self.served,
                "batches": {str(k): v for k, v in sorted(self.batch_sizes.items())}}

    async def predict(self, request: VideoRequest) -> dict:
        """The request's result, with how long it queued for the model and its batch's forward took."""
        result, queued_s = await self.batcher.submit(request)
        return result | {"queue_ms": round(1000 * queued_s, 1)}

    def forward_batch(self, requests: list[VideoRequest]) -> list[dict]:
        loaded = self.loaded  # one version for the whole batch, even if the alias moves meanwhile
        start = time.perf_counter()
        results = self.forward(loaded, requests)
        forward_ms = round(1000 * (time.perf_counter() - start), 1)
        self.batch_sizes[len(requests)] += 1
        self.served += len(requests)
        return [result | {"forward_ms": forward_ms} for result in results]

    def forward(self, loaded: LoadedModel, requests: list[VideoRequest]) -> list[dict]:
        """One forward over the batch's clips that fit the loaded version's input shape; a clip decoded for a
        version that has just been replaced gets an error to retry."""
        model = loaded.model
        expected = (model.config.num_frames, 3, model.backbone.image_size, model.backbone.image_size)
        fits = [tuple(request.views.shape[1:]) == expected for request in requests]
        predictions = iter(predict_batch(model, [r for r, ok in zip(requests, fits, strict=True) if ok],
                                         loaded.class_matrix))
        results = []
        for ok in fits:
            if not ok:
                results.append({"error": "the model changed while the clip was decoded; retry"})
                continue
            prediction = next(predictions)
            results.append({"model": loaded.meta, "batch_size": len(requests), **prediction.to_dict(),
                            "picture": prediction.picture.png() if prediction.picture else None})
        return results


@serve.deployment(name="ALTModel")
class ALTModelServer(ModelRunner):
    """The model deployment of `split` mode, behind the CPU ingress (a GPU replica on a cluster)."""

    def __init__(self, settings: dict):
        super().__init__(ServeSettings.from_dict(settings))


@serve.deployment(name="Ingress")
@serve.ingress(api)
class Ingress:
    """HTTP front: checks, decoding, time budget; forwards decoded views to the model deployment."""

    def __init__(self, model: DeploymentHandle | None, settings: dict):
        self.settings = ServeSettings.from_dict(settings)
        # split mode: the model deployment's handle; single mode: the model runs here, in this replica
        self.in_process = model is None
        self.model = ModelRunner(self.settings) if self.in_process else model
        os.environ[UPLOAD_CAP_ENV] = str(int(self.settings.max_upload_mb * 2**20))
        self.token = os.environ.get("ALT_SERVE_TOKEN") or None
        self.info: dict | None = None
        self.info_at = 0.0
        # decodes run here, a few at a time: a decode past its deadline cannot be interrupted, so the pool bounds
        # how many such threads (and their uploads) a replica can hold; queued decodes wait within their deadline
        self.decoders = ThreadPoolExecutor(max_workers=DECODE_THREADS, thread_name_prefix="decode")

    async def call(self, method: str, *args):
        """A method of the model, through the deployment handle (split mode) or in this process (single)."""
        if self.in_process:
            return await getattr(self.model, method)(*args)
        return await getattr(self.model, method).remote(*args)

    def reconfigure(self, user_config: dict) -> None:
        """single mode: the model's `user_config` is this deployment's (deploy/serve-single.yaml)."""
        if self.in_process:
            self.model.reconfigure(user_config)

    def authorize(self, request: Request) -> None:
        if self.token is None:
            return
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), self.token.encode()):
            raise APIError(401, "unauthorized", "send Authorization: Bearer <token>", {"WWW-Authenticate": "Bearer"})

    async def model_info(self, max_age_s: float = 5.0) -> dict:
        if self.info is None or time.monotonic() - self.info_at > max_age_s:
            self.info = await self.call("info")
            self.info_at = time.monotonic()
        return self.info

    @api.get("/", response_class=HTMLResponse, summary="The web page: upload a clip, see labels and why")
    async def page(self) -> HTMLResponse:
        return HTMLResponse(PAGE.read_text())

    @api.get("/healthz", summary="Liveness: the process answers")
    async def healthz(self) -> dict:
        return {"status": "alive"}

    @api.get("/readyz", summary="Readiness: the model is loaded and warm")
    async def readyz(self) -> dict:
        try:
            info = await asyncio.wait_for(self.model_info(max_age_s=0), 10)
        except Exception as err:
            raise APIError(503, "not_ready", f"the model deployment is not ready ({type(err).__name__})",
                           {"Retry-After": "5"}) from err
        return {"status": "ready", "model": info["model"]}

    @api.get("/v1/model", summary="The model being served: version, run, data hash, labels")
    async def model_card(self, request: Request) -> dict:
        self.authorize(request)
        info = await self.model_info(max_age_s=0)
        return {**info["model"], "labels": info["labels"], "num_frames": info["num_frames"],
                "image_size": info["image_size"]}

    @api.get("/v1/labels", summary="The checkpoint's own label set")
    async def labels(self, request: Request) -> dict:
        self.authorize(request)
        return {"labels": (await self.model_info())["labels"]}

    @api.get("/v1/stats", summary="Batch sizes and requests served by the replica that answers")
    async def stats(self, request: Request) -> dict:
        self.authorize(request)
        return await self.call("stats")

    @api.post("/v1/predict", summary="Top-k labels and the aligned entities of an uploaded clip",
              response_model=None, responses={200: {"content": {"application/json": {}, "image/png": {}},
                                                    "description": "JSON, or with format=png the explanation picture"}})
    async def predict(self, request: Request,
                      top_k: int = Query(DEFAULT_TOP_K, description="labels to return (default: 5, or every label "
                                                                    "when there are fewer)"),
                      labels: list[str] | None = Query(None, description="open vocabulary: score these names "
                                                                             "instead of the checkpoint's labels"),
                      explain: bool = Query(True, description="return the aligned entities"),
                      clips: int = Query(1, description="temporal test views, averaged"),
                      picture: bool = Query(False, description="add the explanation picture (PNG) to the JSON as a "
                                                               "data: URL under `picture`"),
                      format: str = Query("json", description="`png`: answer with the explanation picture itself "
                                                              "(image/png) instead of JSON")) -> Response:
        """The clip goes as multipart/form-data (field `file`; parameters may also be form fields) or as the raw
        body with a `video/*` content type. At most `max_upload_mb`; decoded in memory at the model's scale."""
        start = time.perf_counter()
        self.authorize(request)
        deadline = start + self.settings.request_timeout_s
        data, fields = await read_upload(request)
        read = time.perf_counter()
        options = parse_options(query_pairs(request) + fields)
        if not data:
            raise APIError(400, "empty_upload", "the upload is empty")
        info = await self.model_info()
        label_count = len(options.labels or info["labels"])
        if options.top_k is not None and options.top_k > label_count:
            raise APIError(422, "invalid_parameter", f"top_k {options.top_k} exceeds the {label_count} labels")
        top_k = options.top_k or min(DEFAULT_TOP_K, label_count)
        decode = asyncio.get_running_loop().run_in_executor(
            self.decoders, load_views, data, info["num_frames"], info["image_size"], options.clips, 1, "upload")
        try:
            views = await asyncio.wait_for(decode, max(0.001, deadline - time.perf_counter()))
        except VideoDecodeError as err:
            raise APIError(422, "undecodable_video", str(err)) from err
        except TimeoutError as err:
            raise APIError(504, "timeout", "decoding took longer than the request's time budget") from err
        decoded = time.perf_counter()
        try:
            request = VideoRequest(views, "upload", options.labels, top_k, options.explain,
                                   picture=options.picture or options.format == "png")
            result = await asyncio.wait_for(self.call("predict", request),
                                            max(0.001, deadline - time.perf_counter()))
        except TimeoutError as err:
            raise APIError(504, "timeout", "the model did not answer within the request's time budget") from err
        except BackPressureError as err:
            raise APIError(503, "overloaded", "the model deployment's queue is full; retry shortly",
                           {"Retry-After": "1"}) from err
        if "error" in result:
            raise APIError(503, "model_changed", result["error"], {"Retry-After": "1"})
        if (options.picture or options.format == "png") and result.get("picture") is None:
            raise APIError(422, "no_explanation", f"the served model ({result['model']['adapter']}) aligns no "
                                                  "entities, so it has no explanation picture")
        if options.format == "png":
            return Response(result["picture"], media_type="image/png")
        done = time.perf_counter()
        body = {"model": result["model"], "predictions": result["predictions"], "entities": result["entities"],
                "timing_ms": stage_timings(start, read, decoded, done, result)}
        if options.picture:
            body["picture"] = "data:image/png;base64," + base64.b64encode(result["picture"]).decode()
        return JSONResponse(body)  # already JSON-ready: skips FastAPI's encoder walk


def build_app(args: dict) -> serve.Application:
    """The application `import_path: deploy.app:build_app` names; `args` are `ServeSettings` fields."""
    settings = ServeSettings.from_dict(args or {})
    if settings.mode not in MODES:
        raise ConfigError(f"mode must be one of {', '.join(MODES)}, got {settings.mode!r}")
    model = ALTModelServer.bind(settings.to_dict()) if settings.mode == "split" else None
    return Ingress.bind(model, settings.to_dict())
