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
app.add_typer(data_app, name="data")


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
