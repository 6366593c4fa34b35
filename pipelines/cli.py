"""The `alt` command line: thin typer commands over library functions that tests call directly.

Settings dataclasses (`ALTConfig`, `TrainConfig`, `DecodeSpec`, `PretrainConfig`) become options through
`settings_options`: one option per field, with the field's default and help, so no default or bound
is restated here.
"""

from __future__ import annotations

import functools
import inspect
import json
import sys
import typing
from dataclasses import fields
from pathlib import Path

import typer

from alt_core.config import ALTConfig, DecodeSpec, PretrainConfig, TrainConfig

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
                option = typer.Option(f.default, *names, help=f.metadata.get("help"))
                added.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=option,
                                               annotation=annotation))
                owners[f.name] = argument

        @functools.wraps(command)
        def wrapper(**kwargs):
            values: dict[str, dict] = {argument: {} for argument in settings}
            for name, argument in owners.items():
                values[argument][name] = kwargs.pop(name)
            built = {argument: settings[argument][0](**values[argument]) for argument in settings}
            return command(**kwargs, **built)

        wrapper.__signature__ = signature.replace(parameters=own + added)
        return wrapper

    return decorate


FROM_DATA = ("tome_r", "num_frames")  # training reads these from the decoded clips


def _echo_json(payload: dict) -> None:
    typer.echo(json.dumps(payload, indent=1, default=str))


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

    typer.echo(count_flops(config, config.num_frames, views, classes, entities).table())


@app.command()
def predict(
    video: Path = typer.Argument(..., help="a video file decord can read"),
    checkpoint: Path = typer.Option(..., help="checkpoint directory (model.safetensors, config.json, labels.txt)"),
    top_k: int = typer.Option(5, min=1),
    clips: int = typer.Option(1, min=1),
    crops: int = typer.Option(1, min=1),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Decode one video and print its top-k labels and aligned entities."""
    from alt_core.checkpoint import load_checkpoint
    from alt_core.predict import predict_video

    result = predict_video(load_checkpoint(checkpoint), video, top_k, clips, crops)
    typer.echo(json.dumps(result.to_dict(), indent=1) if as_json else result.text())


@backbone_app.command("pretrain")
@settings_options(config=(PretrainConfig, ()))
def backbone_pretrain(
    config,
    out: Path = typer.Option(..., help="output directory"),
    budget_s: float = typer.Option(None, help="stop this call after S seconds (resume later)"),
    resume: bool = typer.Option(False, help="continue from OUT/state"),
) -> None:
    """Contrastive pretraining of a tiny CLIP on generated scenes; writes weights and a model card."""
    from alt_core.synthetic.pretrain import pretrain

    _echo_json(pretrain(out, config, budget_s=budget_s, resume=resume))


@backbone_app.command("eval")
def backbone_eval(
    backbone: str = typer.Option("alt-tiny"),
    pretrained: str = typer.Option(None, help="local weights file; default: packaged weights"),
    images: int = typer.Option(512, min=8, help="images per test"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Zero-shot probe on freshly generated held-out scenes."""
    from alt_core.backbone import load_backbone
    from alt_core.synthetic.probe import probe_backbone

    result = probe_backbone(load_backbone(backbone, pretrained), num_images=images)
    typer.echo(json.dumps(result, indent=1) if as_json else "\n".join(f"{k:<28}{v}" for k, v in result.items()))


@data_app.command("synth")
def data_synth(
    out: Path = typer.Option(..., help="output directory"),
    seed: int = typer.Option(0),
    classes: list[str] = typer.Option(None, help="restrict to these class names (repeat the flag)"),
    videos_per_class: int = typer.Option(8, min=1),
    frames: int = typer.Option(16, min=2),
    size: int = typer.Option(64, min=16),
    workers: int = typer.Option(2, min=1),
) -> None:
    """Generate SynthActions: mp4 videos, manifest, seen/novel label files, few-shot lists."""
    from alt_core.synthetic.synth import generate_synth_actions

    _echo_json(generate_synth_actions(out, seed=seed, classes=classes or None, videos_per_class=videos_per_class,
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
@settings_options(model=(ALTConfig, FROM_DATA), schedule=(TrainConfig, ()))
def train_cmd(
    model,
    schedule,
    data: Path = typer.Option(..., help="clip shards from `alt decode`"),
    corpus: Path = typer.Option(..., help="corpus .parquet from `alt corpus build`"),
    out: Path = typer.Option(..., help="run directory"),
    labels: Path = typer.Option(None, help="label set (default: labels of the train split)"),
    workers: int = typer.Option(1, min=1, help="DDP workers"),
    gpu: bool = typer.Option(False, help="one GPU per worker"),
    resume: bool = typer.Option(False, help="continue the run in OUT"),
    tracking_uri: str = typer.Option(None, help="MLflow tracking URI (default: sqlite under OUT)"),
    max_failures: int = typer.Option(2, min=0, help="worker-group restarts before giving up"),
) -> None:
    """Ray Train: train the alignment + adapter with DDP, checkpoint every epoch, log to MLflow."""
    from pipelines.train import TrainJob, train

    job = TrainJob(data=str(data), corpus=str(corpus), out=str(out), model=model, train=schedule,
                   labels=str(labels) if labels else None, workers=workers, gpu=gpu, resume=resume,
                   tracking_uri=tracking_uri, max_failures=max_failures)
    summary = train(job)
    _echo_json({k: summary[k] for k in ("checkpoint", "best", "run_id", "model_version", "tracking_uri", "seconds")})


@app.command("eval")
def eval_cmd(
    checkpoint: Path = typer.Option(...),
    data: Path = typer.Option(..., help="clip shards from `alt decode`"),
    labels: Path = typer.Option(None, help="another label set: zero-shot"),
    split: list[str] = typer.Option(["test"], help="splits to score (repeat the flag)"),
    out: Path = typer.Option(None, help="report .json"),
    workers: int = typer.Option(1, min=1),
) -> None:
    """Top-1/top-5 with multi-view averaging; supervised, zero-shot or few-shot protocol."""
    from pipelines.evaluate import evaluate

    _echo_json(evaluate(checkpoint, data, labels=labels, splits=tuple(split), workers=workers, out=out))


@app.command()
def demo(out: Path = typer.Option(Path("runs/demo"), help="working directory")) -> None:
    """The whole lifecycle on the embedded default (SynthActions + alt-tiny)."""
    from pipelines.demo import run_demo

    run_demo(out)


def main() -> None:
    """Entry point: user errors become one line on stderr and exit code 2; bugs keep their traceback."""
    from alt_core.errors import ALTError
    from pipelines.console import log_file

    try:
        app()
    except ALTError as err:
        typer.echo(f"error: {err}", err=True)
        sys.exit(2)
    except Exception:
        if log_file():
            typer.echo(f"(library logs: {log_file()})", err=True)
        raise


if __name__ == "__main__":
    main()
