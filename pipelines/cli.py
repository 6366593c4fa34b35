"""The `alt` command line: thin typer commands over library functions that tests call directly.

Settings dataclasses (`ALTConfig`, `TrainConfig`, `DecodeSpec`, `PretrainConfig`, `TrainJob`, `SearchOptions`)
become options through
`settings_options`: one option per field, with the field's default and help, so no default or bound
is restated here.
"""

from __future__ import annotations

import functools
import inspect
import json
import sys
import typing
from dataclasses import MISSING, fields, replace
from pathlib import Path

import typer

from alt_core.config import DEFAULT_TOP_K, SYNTH_VIDEOS_PER_CLASS, ALTConfig, DecodeSpec, PretrainConfig, TrainConfig
from pipelines.jobs import InferJob, SearchOptions, TrainJob

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="ALT (Align before Adapt) video action recognition on Ray.")
backbone_app = typer.Typer(no_args_is_help=True, help="Make and probe the tiny CLIP backbone.")
data_app = typer.Typer(no_args_is_help=True, help="Datasets.")
corpus_app = typer.Typer(no_args_is_help=True, help="The offline entity corpus.")
app.add_typer(backbone_app, name="backbone")
app.add_typer(data_app, name="data")
app.add_typer(corpus_app, name="corpus")


@app.callback()
def main_options(verbose: bool = typer.Option(False, "--verbose", "-v",
                                              help="also show Ray's and MLflow's own logs")) -> None:
    """ALT (Align before Adapt) video action recognition on Ray."""
    from pipelines.console import setup_logging

    setup_logging(verbose)


def settings_options(**settings: tuple[type, tuple[str, ...]]):
    """Give a command one option per field of each settings dataclass; the command receives the built
    dataclasses under the given argument names. `settings` maps argument name -> (class, fields left out)."""

    def decorate(command):
        signature = inspect.signature(command)
        own = [p for p in signature.parameters.values() if p.name not in settings]
        added, owners = [], {}
        for argument, (cls, excluded) in settings.items():
            hints = typing.get_type_hints(cls)
            for f in fields(cls):
                if f.name in excluded or not f.metadata.get("cli", True):
                    continue
                annotation = hints[f.name]
                if typing.get_origin(annotation) is typing.Literal:
                    annotation = str
                names = [f.metadata["flag"]] if f.metadata.get("flag") else []
                default = ... if f.default is MISSING else f.default  # a field without a default: required
                if f.metadata.get("protocol"):
                    default = None  # unset until the class's `for_protocol` chooses
                option = typer.Option(default, *names, help=f.metadata.get("help"))
                added.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=option,
                                               annotation=annotation))
                owners[f.name] = argument

        @functools.wraps(command)
        def wrapper(**kwargs):
            values: dict[str, dict] = {argument: {} for argument in settings}
            for name, argument in owners.items():
                values[argument][name] = kwargs.pop(name)
            built = {argument: getattr(cls, "for_protocol", cls)(**values[argument])
                     for argument, (cls, _) in settings.items()}
            return command(**kwargs, **built)

        wrapper.__signature__ = signature.replace(parameters=own + added)
        return wrapper

    return decorate


FROM_DATA = ("tome_r", "num_frames")  # training reads these from the decoded clips


def _echo(text: str) -> None:
    """A command's result, on the terminal's stdout (library output may have been moved to the log file)."""
    from pipelines.console import out

    print(text, file=out(), flush=True)


def _echo_json(payload: dict) -> None:
    _echo(json.dumps(payload, indent=1, default=str))


@app.command()
@settings_options(config=(ALTConfig, ("pretrained",)))
def flops(
    config,
    views: int = typer.Option(1, min=1, help="temporal clips x spatial crops"),
    classes: int = typer.Option(400, min=1),
    entities: int = typer.Option(1000, min=1),
) -> None:
    """Compute accounting: GFLOPs and GMACs per view and per video, by part."""
    from alt_core.flops import count_flops

    _echo(count_flops(config, config.num_frames, views, classes, entities).table())


MODEL_HELP = "checkpoint directory, or a registry URI such as models:/alt@champion (with --tracking-uri)"
TRACKING_HELP = "MLflow tracking URI of the registry (default: $MLFLOW_TRACKING_URI)"


@app.command()
def predict(
    video: Path = typer.Argument(..., help="a video file decord can read"),
    model: str = typer.Option(..., "--model", "--checkpoint", help=MODEL_HELP),
    tracking_uri: str = typer.Option(None, help=TRACKING_HELP),
    top_k: int = typer.Option(DEFAULT_TOP_K, min=1),
    clips: int = typer.Option(1, min=1),
    crops: int = typer.Option(1, min=1),
    as_json: bool = typer.Option(False, "--json"),
    explain: Path = typer.Option(None, "--explain", help="write the explanation picture (PNG) here: the frames "
                                                          "with each patch tinted by its region's entity"),
) -> None:
    """Decode one video and print its top-k labels and aligned entities."""
    from alt_core.errors import ConfigError
    from alt_core.predict import predict_video
    from alt_core.registry import load_model

    if explain is not None and explain.suffix.lower() != ".png":
        raise ConfigError(f"--explain {explain}: the explanation picture is a PNG; give a path ending in .png")
    loaded, source = load_model(model, tracking_uri)
    if explain is not None and (loaded.config.adapter != "alt" or loaded.config.queries != "entities"):
        raise ConfigError(f"--explain: this checkpoint's model ({loaded.config.adapter}, {loaded.config.queries} "
                          "queries) aligns no entities, so there is nothing to draw; drop --explain")
    result = predict_video(loaded, video, top_k, clips, crops, picture=explain is not None)
    payload, text = {"video": result.name, "model": source.card(), **result.to_dict()}, result.text()
    if explain is not None:
        explain.parent.mkdir(parents=True, exist_ok=True)
        explain.write_bytes(result.picture.png())
        payload["explanation_picture"] = str(explain)
        text += f"\n  explanation picture: {explain}"
    _echo(json.dumps(payload, indent=1) if as_json else text)


@backbone_app.command("pretrain")
@settings_options(config=(PretrainConfig, ()))
def backbone_pretrain(
    config,
    out: Path = typer.Option(..., help="output directory"),
    budget_s: float = typer.Option(None, help="stop this call after S seconds (resume later)"),
    resume: bool = typer.Option(False, help="continue from OUT/state"),
) -> None:
    """Contrastive pretraining of a tiny CLIP on generated scenes and motion clips; writes weights and a model card."""
    from alt_core.synthetic.pretrain import pretrain

    _echo_json(pretrain(out, config, budget_s=budget_s, resume=resume))


@backbone_app.command("eval")
def backbone_eval(
    backbone: str = typer.Option("alt-tiny"),
    pretrained: str = typer.Option(None, help="local weights file; default: packaged weights"),
    images: int = typer.Option(512, min=8, help="images per test"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Zero-shot probe on freshly generated held-out scenes and clips (motion words, class-name separation)."""
    from alt_core.synthetic.pretrain import evaluate_backbone

    result = evaluate_backbone(pretrained, backbone, num_images=images)
    _echo(json.dumps(result, indent=1) if as_json else "\n".join(f"{k:<28}{v}" for k, v in result.items()))


@data_app.command("synth")
def data_synth(
    out: Path = typer.Option(..., help="output directory"),
    variant: str = typer.Option("actions", help="actions (SynthActions: shape x motion) | objects (SynthObjects: "
                                                "an actor's interaction with a small object in a scene)"),
    seed: int = typer.Option(0),
    classes: list[str] = typer.Option(None, help="restrict to these class names (repeat the flag)"),
    videos_per_class: int = typer.Option(SYNTH_VIDEOS_PER_CLASS, min=1, help="RESULTS.md's: 24 train, 8 val, 8 "
                                                                             "test videos per seen class"),
    frames: int = typer.Option(16, min=2),
    size: int = typer.Option(64, min=16),
    workers: int = typer.Option(2, min=1),
) -> None:
    """Generate a dataset: mp4 videos, manifest, seen/novel label files, few-shot lists, entity file."""
    from alt_core.synthetic.dataset import generate_dataset

    _echo_json(generate_dataset(out, variant, seed=seed, classes=classes or None, videos_per_class=videos_per_class,
                                frames=frames, size=size, workers=workers))


@corpus_app.command("build")
def corpus_build(
    labels: Path = typer.Option(..., help="label set file, one class per line"),
    source: list[str] = typer.Option(["builtin", "labels"], help="builtin, labels, or an entities .jsonl file"),
    backbone: str = typer.Option("alt-tiny"),
    pretrained: str = typer.Option(None, help="local weights file"),
    out: Path = typer.Option(..., help="corpus .parquet file"),
    force: bool = typer.Option(False, help="rebuild even if the stored hash matches"),
    actors: int = typer.Option(1, min=1, help="embedding actors"),
    gpu: bool = typer.Option(False),
) -> None:
    """Ray Data: gather entities, embed them with the CLIP text tower, write Parquet."""
    from pipelines.corpus import build_corpus_dataset

    _echo_json(build_corpus_dataset(labels, source, backbone, pretrained, out, force=force, num_actors=actors,
                                    use_gpu=gpu))


@app.command()
@settings_options(spec=(DecodeSpec, ()))
def decode(
    spec,
    manifest: Path = typer.Option(..., help="CSV/Parquet (path,label[,split]) or mmaction2 list"),
    out: Path = typer.Option(..., help="output directory of clip shards"),
    shard_size: int = typer.Option(None, help="videos per shard (default: ~4 shards per worker, at most 64)"),
    workers: int = typer.Option(None, help="decoder actors (default: one per CPU of the cluster)"),
    labels_file: Path = typer.Option(None, help="class names of an mmaction2 list manifest"),
    split: list[str] = typer.Option(None, help="decode only these splits (repeat the flag)"),
) -> None:
    """Ray Data: sample and decode frames (or cache region tokens), quarantining bad videos."""
    from pipelines.decode import decode_manifest

    summary = decode_manifest(manifest, out, spec, shard_size=shard_size, workers=workers, splits=split or None,
                              labels_file=labels_file)
    _echo_json({k: summary[k] for k in ("inputs", "videos_ok", "quarantined", "rows", "shards", "out", "seconds")})


@app.command("train")
@settings_options(model=(ALTConfig, FROM_DATA), schedule=(TrainConfig, ()), job=(TrainJob, ("model", "train")))
def train_cmd(model, schedule, job) -> None:
    """Ray Train: train the alignment + adapter with DDP, checkpoint every epoch, log to MLflow."""
    from pipelines.inputs import check_inputs

    job = replace(job, model=model, train=schedule)
    inputs = check_inputs(job)  # a wrong input fails here, in seconds, before Ray is even imported

    from pipelines.train import train

    summary = train(job, inputs)
    _echo_json({k: summary[k] for k in ("checkpoint", "best", "run_id", "model_version", "tracking_uri", "seconds")})


@app.command("eval")
def eval_cmd(
    model: str = typer.Option(..., "--model", "--checkpoint", help=MODEL_HELP),
    data: Path = typer.Option(..., help="clip shards from `alt decode`"),
    labels: Path = typer.Option(None, help="another label set: zero-shot"),
    split: list[str] = typer.Option(["test"], help="splits to score (repeat the flag)"),
    out: Path = typer.Option(None, help="report .json"),
    workers: int = typer.Option(1, min=1),
    tracking_uri: str = typer.Option(None, help=TRACKING_HELP),
) -> None:
    """Top-1/top-5 with multi-view averaging; supervised, zero-shot or few-shot protocol."""
    from pipelines.evaluate import evaluate

    _echo_json(evaluate(model, data, labels=labels, splits=tuple(split), workers=workers, out=out,
                        tracking_uri=tracking_uri))


@app.command()
@settings_options(model=(ALTConfig, FROM_DATA), schedule=(TrainConfig, ("epochs",)),
                  job=(TrainJob, ("model", "train", "workers", "gpu", "resume", "max_failures")),
                  options=(SearchOptions, ()))
def tune(model, schedule, job, options) -> None:
    """Ray Tune: search the space file's settings with ASHA; register the best trial, crown a champion."""
    from pipelines.tune import tune_search

    summary = tune_search(replace(job, model=model, train=schedule), options)
    _echo_json({k: summary[k] for k in ("search_id", "best", "decision", "trial_epochs", "seconds")})


@app.command()
@settings_options(job=(InferJob, ()))
def infer(job) -> None:
    """Ray Data: label every video of a manifest or directory with a model, into resumable Parquet shards."""
    from pipelines.infer import infer as run_inference

    summary = run_inference(job)
    _echo_json({k: summary[k] for k in ("inputs", "predictions", "quarantined", "shards", "out", "model",
                                        "videos_per_s", "seconds")})


@app.command("serve")
def serve_cmd(
    model: str = typer.Option(None, help="registry URI (default from the config: models:/alt@champion)"),
    checkpoint: Path = typer.Option(None, help="serve a checkpoint directory instead of the registry"),
    tracking_uri: str = typer.Option(None, help=TRACKING_HELP),
    host: str = typer.Option(None, help="address to bind (the config's default: 127.0.0.1)"),
    port: int = typer.Option(None, help="HTTP port (the config's default: 8000)"),
    config: Path = typer.Option(None, help="Serve config file (default: deploy/serve.yaml)"),
) -> None:
    """Ray Serve: serve the champion (or a checkpoint) over HTTP with batching and autoscaling, until Ctrl-C."""
    import os

    from alt_core.errors import ConfigError
    from alt_core.registry import is_registry_uri
    from pipelines.serve import DEFAULT_CONFIG, run_server, serve_config

    if model and checkpoint:
        raise ConfigError("pass --model or --checkpoint, not both")
    if checkpoint is not None or (model and not is_registry_uri(model)):
        model = str(Path(checkpoint or model).resolve())  # the replicas may run in another working directory
    env_vars = {name: os.environ[name] for name in ("ALT_SERVE_TOKEN", "MLFLOW_TRACKING_URI") if name in os.environ}
    run_server(serve_config(config or DEFAULT_CONFIG, model, tracking_uri, host, port, env_vars),
               token=os.environ.get("ALT_SERVE_TOKEN"))


@app.command()
def demo(
    out: Path = typer.Option(Path("runs/demo"), help="working directory"),
    port: int = typer.Option(8000, help="HTTP port of the served champion (on 127.0.0.1)"),
    keep_serving: bool = typer.Option(False, help="leave the champion served (API and web page) until Ctrl-C"),
) -> None:
    """The whole lifecycle on the embedded default (SynthActions + alt-tiny): data, corpus, decode, tune,
    champion, serve, one request."""
    from pipelines.demo import run_demo

    run_demo(out, port=port, keep_serving=keep_serving)


def main() -> None:
    """Entry point: user errors become one line on the console and exit code 2; bugs keep their traceback.

    Typer runs outside standalone mode so that its usage errors are printed here, on the console stream."""
    from pipelines.environment import set_defaults

    set_defaults()  # first: before any command imports Ray, MLflow or huggingface_hub
    from alt_core.errors import ALTError
    from pipelines.console import console, report_crash

    try:
        code = app(standalone_mode=False)  # outside standalone mode, Click returns exit codes (Ctrl-C: 130)
        sys.exit(code if isinstance(code, int) else 0)
    except typer.Abort:
        print("aborted", file=console())
        sys.exit(130)
    except typer.TyperException as err:  # usage errors: a wrong flag or value
        err.show(file=console())
        sys.exit(err.exit_code)
    except ALTError as err:
        print(f"error: {err}", file=console())
        sys.exit(2)
    except Exception:
        report_crash()
        sys.exit(1)


if __name__ == "__main__":
    main()
