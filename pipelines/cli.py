"""The `alt` command line: thin typer commands over library functions that tests call directly."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="ALT (Align before Adapt) video action recognition on Ray.")
backbone_app = typer.Typer(no_args_is_help=True, help="Make and probe the tiny CLIP backbone.")
data_app = typer.Typer(no_args_is_help=True, help="Datasets.")
app.add_typer(backbone_app, name="backbone")
corpus_app = typer.Typer(no_args_is_help=True, help="The offline entity corpus.")
app.add_typer(data_app, name="data")
app.add_typer(corpus_app, name="corpus")


@app.command()
def flops(
    backbone: str = typer.Option("ViT-B-16", help="open_clip model name or alt-tiny"),
    frames: int = typer.Option(8, min=1),
    views: int = typer.Option(1, min=1, help="temporal clips x spatial crops"),
    adapter: str = typer.Option("alt", help="alt | meanpool | temporal"),
    num_queries: int = typer.Option(8, min=1),
    depth: int = typer.Option(2, min=0),
    width: int = typer.Option(512, min=8),
    heads: int = typer.Option(8, min=1),
    tome_r: int = typer.Option(0, min=0, help="tokens merged per block"),
    classes: int = typer.Option(400, min=1),
    entities: int = typer.Option(1000, min=1),
) -> None:
    """Compute accounting: GFLOPs and GMACs per view and per video, by part."""
    from alt_core.flops import count_flops
    from alt_core.model import ALTConfig

    config = ALTConfig(backbone=backbone, adapter=adapter, num_queries=num_queries, depth=depth, width=width,
                       heads=heads, tome_r=tome_r, num_frames=frames, max_frames=max(32, frames))
    typer.echo(count_flops(config, frames, views, classes, entities).table())


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

    model = load_checkpoint(checkpoint)
    result = predict_video(model, video, top_k, clips, crops)
    typer.echo(json.dumps(result.to_dict(), indent=1) if as_json else result.text())


@backbone_app.command("pretrain")
def backbone_pretrain(
    out: Path = typer.Option(..., help="output directory"),
    arch: str = typer.Option("alt-tiny"),
    steps: int = typer.Option(2000, min=1),
    batch_size: int = typer.Option(256, min=2),
    lr: float = typer.Option(1e-3),
    budget_s: float = typer.Option(None, help="stop this call after S seconds (resume later)"),
    device: str = typer.Option("cpu", help="cpu | cuda"),
    seed: int = typer.Option(0),
    resume: bool = typer.Option(False, help="continue from OUT/state"),
) -> None:
    """Contrastive pretraining of a tiny CLIP on generated scenes; writes weights and a model card."""
    from alt_core.pretrain import PretrainConfig, pretrain

    cfg = PretrainConfig(arch=arch, steps=steps, batch_size=batch_size, lr=lr, seed=seed, device=device)
    card = pretrain(out, cfg, budget_s=budget_s, resume=resume)
    typer.echo(json.dumps(card, indent=1))


@backbone_app.command("eval")
def backbone_eval(
    backbone: str = typer.Option("alt-tiny"),
    pretrained: str = typer.Option(None, help="local weights file; default: packaged weights"),
    images: int = typer.Option(512, min=8, help="images per test"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Zero-shot probe on freshly generated held-out scenes."""
    from alt_core.backbone import load_backbone
    from alt_core.probe import probe_backbone

    result = probe_backbone(load_backbone(backbone, pretrained), num_images=images)
    typer.echo(json.dumps(result, indent=1) if as_json else
               "\n".join(f"{k:<28}{v}" for k, v in result.items()))


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
    from alt_core.synth import generate_synth_actions

    summary = generate_synth_actions(out, seed=seed, classes=classes or None, videos_per_class=videos_per_class,
                                     frames=frames, size=size, workers=workers)
    typer.echo(json.dumps(summary, indent=1, default=str))


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

    summary = build_corpus_dataset(labels, source, backbone, pretrained, out, force=force, num_actors=actors,
                                   use_gpu=gpu)
    typer.echo(json.dumps(summary, indent=1, default=str))


@app.command()
def decode(
    manifest: Path = typer.Option(..., help="CSV/Parquet (path,label[,split]) or mmaction2 list"),
    out: Path = typer.Option(..., help="output directory of clip shards"),
    frames: int = typer.Option(8, min=1),
    clips: int = typer.Option(1, min=1, help="temporal views for non-train splits"),
    crops: int = typer.Option(1, min=1, help="spatial crops for non-train splits"),
    train_clips: int = typer.Option(1, min=1, help="randomly sampled clips per train video"),
    size: int = typer.Option(64, min=8),
    cache_tokens: bool = typer.Option(False, help="store frozen-backbone region tokens instead of frames"),
    backbone: str = typer.Option(None, help="backbone for --cache-tokens"),
    pretrained: str = typer.Option(None),
    tome_r: int = typer.Option(0, min=0),
    shard_size: int = typer.Option(64, min=1),
    workers: int = typer.Option(2, min=1),
    seed: int = typer.Option(0),
    labels_file: Path = typer.Option(None, help="class names of an mmaction2 list manifest"),
    split: list[str] = typer.Option(None, help="decode only these splits (repeat the flag)"),
) -> None:
    """Ray Data: sample and decode frames (or cache region tokens), quarantining bad videos."""
    from pipelines.decode import decode_manifest

    summary = decode_manifest(manifest, out, frames=frames, clips=clips, crops=crops, size=size, seed=seed,
                              train_clips=train_clips, cache_tokens=cache_tokens, backbone=backbone,
                              pretrained=pretrained, tome_r=tome_r, shard_size=shard_size, num_workers=workers,
                              splits=split or None, labels_file=labels_file)
    typer.echo(json.dumps(summary, indent=1, default=str))


@app.command("train")
def train_cmd(
    data: Path = typer.Option(..., help="clip shards from `alt decode`"),
    corpus: Path = typer.Option(..., help="corpus .parquet from `alt corpus build`"),
    out: Path = typer.Option(..., help="run directory"),
    labels: Path = typer.Option(None, help="label set (default: labels of the train split)"),
    adapter: str = typer.Option("alt", help="alt | meanpool | temporal"),
    num_queries: int = typer.Option(8, min=1),
    depth: int = typer.Option(2, min=0),
    width: int = typer.Option(128, min=8),
    heads: int = typer.Option(4, min=1),
    epochs: int = typer.Option(10, min=1),
    lr: float = typer.Option(1e-3, help="peak learning rate; cosine decay over the epochs"),
    batch_size: int = typer.Option(32, min=1),
    workers: int = typer.Option(1, min=1),
    gpu: bool = typer.Option(False),
    shots: int = typer.Option(None, min=1, help="few-shot: K train videos per class"),
    seed: int = typer.Option(0),
    resume: bool = typer.Option(False),
    tracking_uri: str = typer.Option(None, help="MLflow tracking URI (default: sqlite under OUT)"),
    max_failures: int = typer.Option(2, min=0),
    backbone: str = typer.Option("alt-tiny", help="backbone when training from pixels"),
    pretrained: str = typer.Option(None),
) -> None:
    """Ray Train: train the alignment + adapter with DDP, checkpoint every epoch, log to MLflow."""
    from pipelines.train import TrainOptions, train

    opts = TrainOptions(data=str(data), corpus=str(corpus), out=str(out), labels=str(labels) if labels else None,
                        adapter=adapter, num_queries=num_queries, depth=depth, width=width, heads=heads,
                        epochs=epochs, lr=lr, batch_size=batch_size, workers=workers, gpu=gpu, shots=shots,
                        seed=seed, resume=resume, tracking_uri=tracking_uri, max_failures=max_failures,
                        backbone=backbone, pretrained=pretrained)
    typer.echo(json.dumps(train(opts), indent=1, default=str))


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

    report = evaluate(checkpoint, data, labels=labels, splits=tuple(split), workers=workers, out=out)
    typer.echo(json.dumps(report, indent=1))


@app.command()
def demo(out: Path = typer.Option(Path("runs/demo"), help="working directory")) -> None:
    """The whole lifecycle on the embedded default (SynthActions + alt-tiny)."""
    from pipelines.demo import run_demo

    run_demo(out)


def main() -> None:
    """Entry point: user errors become one line on stderr and exit code 2, not a traceback."""
    from alt_core.backbone import BackboneError
    from alt_core.checkpoint import CheckpointError
    from alt_core.corpus import CorpusError
    from alt_core.video import VideoDecodeError

    try:
        app()
    except (BackboneError, CheckpointError, CorpusError, VideoDecodeError, FileNotFoundError,
            FileExistsError, ValueError) as err:
        typer.echo(f"error: {err}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
