"""Contrastive pretraining of a tiny CLIP on generated scenes and clips (`alt backbone pretrain`).

Still images, all terms against text-tower embeddings so the towers stay aligned:
- multi-positive image-caption contrast: a caption is positive for every image it truly describes;
- entity term: the image embedding picks out the phrases of all its objects and its background;
- region term: every patch token is classified to the entity under it (object or background).
Clips of the seen SynthActions pairs (alt_core/synthetic/motion.py), read by the per-frame tower and a
temporal head used in pretraining only, so the text tower learns motion words and the frame tokens learn
what moves:
- multi-positive clip-caption contrast ("a red circle orbiting on sand");
- motion term: the clip picks its motion among "a shape {motion}" for every motion;
- class term: the clip picks its class name among the seen class names, prompted as ALT prompts them.
"""

from __future__ import annotations

import json
import logging
import math
import platform
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from alt_core.backbone import WEIGHTS_DIR, Backbone, load_backbone
from alt_core.config import CLASS_TEMPLATES, CONFIG_DIR, ENTITY_TEMPLATES, PretrainConfig
from alt_core.errors import ALTError
from alt_core.synthetic.captions import (
    ENTITY_PHRASES,
    OBJECT_PHRASES,
    PATCH_IGNORE,
    Caption,
    SceneBatch,
    object_phrase,
    render_batch,
    sample_caption,
)
from alt_core.synthetic.motion import (
    ClipCaption,
    TemporalHead,
    class_separation,
    encode_clips,
    load_motion_head,
    motion_probe,
    pretraining_pairs,
    render_clip_batch,
    sample_clip_caption,
    save_motion_head,
)
from alt_core.synthetic.probe import probe_backbone
from alt_core.synthetic.scenes import BACKGROUNDS
from alt_core.synthetic.synth import MOTIONS
from alt_core.tome import RegionEncoder
from alt_core.train_state import load_training_state, save_training_state
from alt_core.training import build_optimizer

logger = logging.getLogger(__name__)


def masked_logsumexp(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return logits.masked_fill(~mask, -torch.inf).logsumexp(dim=-1)


def multi_positive_loss(logits: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """-log of the softmax mass on the positives, both directions; logits (B, B), positives (B, B) bool."""
    i2t = logits.logsumexp(-1) - masked_logsumexp(logits, positives)
    t2i = logits.T.logsumexp(-1) - masked_logsumexp(logits.T, positives.T)
    return (i2t.mean() + t2i.mean()) / 2


def entity_targets(batch: SceneBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft targets over object phrases (uniform over present objects) and background indices."""
    objects = torch.zeros(len(batch.scenes), len(OBJECT_PHRASES))
    for i, scene in enumerate(batch.scenes):
        for obj in scene.objects:
            objects[i, OBJECT_PHRASES.index(object_phrase(obj.color, obj.shape))] = 1.0
    objects = objects / objects.sum(-1, keepdim=True).clamp(min=1)
    backgrounds = torch.tensor([list(BACKGROUNDS).index(s.background) for s in batch.scenes])
    return objects, backgrounds


def pretrain_loss(backbone: Backbone, encoder: RegionEncoder, batch: SceneBatch,
                  captions: list[Caption], templates: list[str]) -> dict[str, torch.Tensor]:
    device = backbone.pixel_mean.device
    pixels = torch.from_numpy(batch.images).permute(0, 3, 1, 2).to(device)
    tokens = encoder(backbone.normalize_pixels(pixels))  # frame (B, D), regions (B, N, D)
    texts = [t.format(c.text()) for c, t in zip(captions, templates, strict=True)]
    caption_emb = F.normalize(backbone.clip.encode_text(backbone.tokenizer(texts).to(device)), dim=-1)
    entity_emb = backbone.encode_phrases(ENTITY_PHRASES, ENTITY_TEMPLATES)  # (K, D)
    scale = backbone.clip.logit_scale.exp().clamp(max=100)

    positives = torch.tensor([[c.describes(s) for c in captions] for s in batch.scenes], device=device)
    contrast = multi_positive_loss(scale * tokens.frame @ caption_emb.T, positives)

    n_obj = len(OBJECT_PHRASES)
    object_soft, bg_index = (t.to(device) for t in entity_targets(batch))
    has_object = object_soft.sum(-1) > 0
    object_logits = scale * tokens.frame @ entity_emb[:n_obj].T
    entity = -(object_soft * object_logits.log_softmax(-1)).sum(-1)[has_object].mean()
    entity = entity + F.cross_entropy(scale * tokens.frame @ entity_emb[n_obj:].T, bg_index)

    region_logits = scale * tokens.regions @ entity_emb.T  # (B, N, K)
    targets = torch.from_numpy(batch.patch_targets).to(device)
    region = F.cross_entropy(region_logits.flatten(0, 1), targets.flatten(), ignore_index=PATCH_IGNORE)
    return {"loss": contrast + entity + region, "contrast": contrast, "entity": entity, "region": region}


def clip_loss(backbone: Backbone, encoder: RegionEncoder, head: TemporalHead, videos: np.ndarray,
              specs: list, captions: list[ClipCaption]) -> dict[str, torch.Tensor]:
    """Clip-caption contrast + motion and class terms for one batch of clips (B, T, H, W, 3)."""
    device = backbone.pixel_mean.device
    clips = encode_clips(backbone, encoder, head, videos)  # (B, D)
    scale = backbone.clip.logit_scale.exp().clamp(max=100)
    caption_emb = backbone.encode_phrases([c.text() for c in captions], CLASS_TEMPLATES[:1])  # (B, D)
    positives = torch.tensor([[c.describes(s) for c in captions] for s in specs], device=device)
    contrast = multi_positive_loss(scale * clips @ caption_emb.T, positives)
    motions = backbone.encode_phrases([ClipCaption(m, None).text() for m in MOTIONS], CLASS_TEMPLATES)
    motion_target = torch.tensor([MOTIONS.index(s.motion) for s in specs], device=device)
    motion = F.cross_entropy(scale * clips @ motions.T, motion_target)
    classes = pretraining_pairs()
    class_emb = backbone.encode_phrases(list(classes), CLASS_TEMPLATES)  # (C, D)
    class_target = torch.tensor([classes.index(s.label) for s in specs], device=device)
    klass = F.cross_entropy(scale * clips @ class_emb.T, class_target)
    return {"clip_contrast": contrast, "motion": motion, "class": klass}


def _lr_at(step: int, cfg: PretrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def pretrain(out_dir: str | Path, cfg: PretrainConfig, budget_s: float | None = None, resume: bool = False) -> dict:
    """Train until `cfg.steps` (or `budget_s` seconds in this call); then export weights and a model card.

    `resume=True` continues from `out_dir/state`, so a long CPU run can span several calls.
    """
    out_dir = Path(out_dir)
    state_dir = out_dir / "state"
    if state_dir.exists() and not resume:
        raise ALTError(f"{state_dir} exists: pass --resume to continue it or choose another --out")
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    backbone = _initial_backbone(cfg)
    backbone.clip.requires_grad_(True)
    backbone.train()
    encoder = RegionEncoder(backbone.clip.visual, r=0)
    head = TemporalHead(backbone.embed_dim, cfg.clip_frames).to(cfg.device)
    trained = torch.nn.ModuleDict({"clip": backbone.clip, "head": head})
    optimizer = build_optimizer(trained, cfg.lr, cfg.weight_decay, betas=(0.9, 0.98))
    meta = {"step": 0, "train_seconds": 0.0, "history": []}
    if resume and state_dir.exists():
        meta = load_training_state(state_dir, trained, optimizer)
        logger.info(f"pretrain: resumed at step {meta['step']} ({meta['train_seconds']:.0f} s trained so far)")
    grid = backbone.clip.visual.grid_size[0]
    start, last_save = time.time(), time.time()
    step = meta["step"]
    while step < cfg.steps and (budget_s is None or time.time() - start < budget_s):
        rng = np.random.default_rng([cfg.seed, step])
        batch = render_batch(rng, cfg.batch_size, backbone.image_size, grid)
        captions = [sample_caption(rng, s) for s in batch.scenes]
        templates = [str(rng.choice(ENTITY_TEMPLATES)) for _ in captions]
        for group in optimizer.param_groups:
            group["lr"] = _lr_at(step, cfg)
        losses = pretrain_loss(backbone, encoder, batch, captions, templates)
        losses["loss"] = cfg.still_weight * losses["loss"]
        if cfg.clip_batch_size:
            clips = render_clip_batch(rng, cfg.clip_batch_size, cfg.clip_frames, backbone.image_size)
            clip_captions = [sample_clip_caption(rng, spec) for spec in clips.specs]
            clip_terms = clip_loss(backbone, encoder, head, clips.videos, clips.specs, clip_captions)
            losses |= clip_terms
            losses["loss"] = losses["loss"] + sum(clip_terms.values())
        optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        torch.nn.utils.clip_grad_norm_(trained.parameters(), 1.0)
        optimizer.step()
        step += 1
        if step % 50 == 0 or step == cfg.steps:
            row = {k: round(v.item(), 4) for k, v in losses.items()} | {"step": step}
            meta["history"].append(row)
            logger.info(f"pretrain: {json.dumps(row)}")
        if time.time() - last_save > cfg.save_every_s:
            meta.update(step=step, train_seconds=meta["train_seconds"] + time.time() - last_save)
            save_training_state(state_dir, trained, optimizer, meta)
            last_save = time.time()
    meta.update(step=step, train_seconds=meta["train_seconds"] + time.time() - last_save)
    save_training_state(state_dir, trained, optimizer, meta)
    return export(out_dir, backbone, head, cfg, meta)


def _initial_backbone(cfg: PretrainConfig) -> Backbone:
    """Random init, the shipped weights of the architecture ('packaged'), or a weights file."""
    if not cfg.init:
        return load_backbone(cfg.arch, random_init=True, device=cfg.device)
    source = None if cfg.init == "packaged" else cfg.init
    if source is None and not (WEIGHTS_DIR / f"{cfg.arch}.safetensors").is_file():
        raise ALTError(f"--init packaged: no weights are shipped for {cfg.arch!r}; pass a .safetensors file or omit "
                       "--init for random init")
    return load_backbone(cfg.arch, pretrained=source, device=cfg.device)


def export(out_dir: Path, backbone: Backbone, head: TemporalHead, cfg: PretrainConfig, meta: dict) -> dict:
    """fp16 weights (+ the temporal head when clips were used) + config + model card whose figures come from
    `probe_backbone`, `motion_probe` and `class_separation`."""
    backbone.eval()
    weights = out_dir / f"{cfg.arch}.safetensors"
    state = backbone.clip.state_dict()
    save_file({k: (v.half() if v.is_floating_point() else v).contiguous().cpu() for k, v in state.items()},
              str(weights))
    if cfg.clip_batch_size:
        save_motion_head(head, weights)
    shutil.copy(CONFIG_DIR / f"{cfg.arch}.json", out_dir / f"{cfg.arch}.json")
    # The card reports the shipped (fp16) weights, re-loaded as a user would load them.
    card = {
        "arch": cfg.arch, "init": cfg.init or "random", "steps": meta["step"], "batch_size": cfg.batch_size,
        "clip_batch_size": cfg.clip_batch_size, "clip_frames": cfg.clip_frames, "lr": cfg.lr,
        "still_weight": cfg.still_weight, "seed": cfg.seed,
        "train_seconds": round(meta["train_seconds"], 1), "device": _device_name(cfg.device),
        "weights_mb": round(sum(f.stat().st_size for f in out_dir.glob("*.safetensors")) / 2**20, 2),
        "probe": evaluate_backbone(str(weights), cfg.arch, cfg.device),
    }
    (out_dir / "card.json").write_text(json.dumps(card, indent=2))
    (out_dir / f"{cfg.arch}.md").write_text(model_card(card, meta["history"]))
    return card


def evaluate_backbone(weights: str | None, arch: str, device: str = "cpu", num_images: int = 512) -> dict:
    """Still-image probe, plus motion top-1 through the pretraining head (when one is saved beside the
    weights) and the separation of same-shape class names: what `alt backbone eval` prints."""
    backbone = load_backbone(arch, pretrained=weights, device=device)
    results = probe_backbone(backbone, num_images=num_images)
    head = load_motion_head(weights or WEIGHTS_DIR / f"{arch}.safetensors")
    if head is not None:
        results |= motion_probe(backbone, head.to(device))
    return results | class_separation(backbone)


def _device_name(device: str) -> str:
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def model_card(card: dict, history: list[dict]) -> str:
    probe = card["probe"]
    last = history[-1] if history else {}
    motion_rows = ""
    if "motion_top1" in probe:
        motion_rows = (f"| motion of a clip through the pretraining head (11 motions, {probe['motion_clips']} "
                       f"clips of all 88 classes, seed {probe['motion_seed']}) | {probe['motion_top1']} (seen pairs "
                       f"{probe['motion_top1_seen_pairs']}, held-out pairs {probe['motion_top1_novel_pairs']}) |\n")
    return f"""# {card['arch']} — model card

A tiny open_clip CLIP (early-convolution stem, 64x64 images, 8x8 patches) pretrained by
`alt backbone pretrain` on procedurally generated scenes (`alt_core/synthetic/scenes.py`): 8 textured
backgrounds, 8 colours x 8 shapes, 0-2 objects per image, captions naming colour, shape,
position, size and background; and on short clips of the SynthActions renderer with captions naming
colour, shape, motion, partner and background ("a red circle chasing a blue square on a sandy desert"),
read by the per-frame tower and a small temporal head used in pretraining only
(`alt_core/synthetic/motion.py`). The clips show only the 72 seen shape x motion pairs of SynthActions:
the 16 held-out pairs never appear, so zero-shot on them tests composition. Loss: multi-positive
image-caption contrast + entity term + patch-to-entity region term on the stills; clip-caption contrast +
motion term + class-name term on the clips (`alt_core/synthetic/pretrain.py`).

## Training
- init: {card['init']}; steps: {card['steps']} of {card['batch_size']} stills + {card['clip_batch_size']} clips of
  {card['clip_frames']} frames, lr {card['lr']}, still-image weight {card['still_weight']}, seed {card['seed']}
- wall time: {card['train_seconds']} s on {card['device']} (this run only; a warm start adds its init's time)
- final losses: {json.dumps({k: v for k, v in last.items() if k != 'step'})}
- weights: fp16 safetensors (backbone + temporal head), {card['weights_mb']} MB

## Zero-shot probe (`alt backbone eval --backbone {card['arch']} --json`)
Fresh scenes from seed {probe['seed']} ({probe['num_images']} images per test), never seen in training.

| test | top-1 |
|---|---|
| single object, colour x shape (64 classes) | {probe['single_object_top1']} |
| background (8 classes) | {probe['background_top1']} |
| two objects, both in top-2 | {probe['two_object_both_in_top2']} |
| region (patch token on an object) -> entity (72 phrases) | {probe['region_to_entity_top1']} |
{motion_rows}
Class names as ALT prompts them: mean cosine {probe['same_shape_class_cosine']} between seen classes of the same
shape (they differ only in the motion words), {probe['different_shape_class_cosine']} between different shapes.

## Limits
Knows only this synthetic world: colours, shapes, backgrounds, positions, sizes and the 11 motions. It is a
stand-in for a real CLIP so that the pipeline runs offline; use `--backbone ViT-B-16 --pretrained FILE` for real video.
"""
