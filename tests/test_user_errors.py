"""User errors that can be known before work starts are refused in the driver, before Ray starts a worker: one
line, exit code 2, no retries. Also: a corrupt or truncated checkpoint file, from a directory or the registry,
is one line naming the file for every verb that loads one, and `alt serve` refuses to start with it.

No test here starts Ray: each asserts that the refusal came before it (`ray.is_initialized()`, no worker pid
file), on real files (clip shards, corpora, checkpoints, an MLflow sqlite registry)."""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import ray
import yaml
from mlflow.tracking import MlflowClient

from alt_core.checkpoint import CheckpointError, save_checkpoint
from alt_core.clips import ClipFormat, write_shard
from alt_core.config import ALTConfig, BackboneSpec, TrainConfig
from alt_core.corpus import EntityCorpus
from alt_core.errors import ALTError
from alt_core.registry import check_model, load_model
from alt_core.synthetic.synth import render_clip, sample_clip_spec, write_mp4
from pipelines import tracking
from pipelines.jobs import SearchOptions, TrainJob
from pipelines.serve import DEFAULT_CONFIG
from tests.helpers import LABELS, make_model, write_weights

ALT = [sys.executable, "-m", "pipelines.cli"]
FRAMES, REGIONS = 4, 6


def run_alt(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*ALT, *args], capture_output=True, text=True, timeout=300)


def one_error_line(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-3000:]
    return lines[0]


def write_tokens(directory: Path, backbone_id: str, dim: int, labels: list[str] = LABELS) -> Path:
    """A clips directory of cached tokens as `alt decode --cache-tokens` writes it: 2 videos per class and split."""
    directory.mkdir(parents=True)
    fmt = ClipFormat("tokens", (FRAMES, 1 + REGIONS, dim), backbone_id, 1)
    rng = np.random.default_rng(0)
    rows = [{"video_id": f"{split}-{label}-{i}", "path": f"/videos/{split}-{i}.mp4", "label": label, "split": split,
             "view": 0, "tokens": rng.standard_normal((FRAMES, 1 + REGIONS, dim)).astype(np.float16),
             "sizes": np.ones((FRAMES, REGIONS), np.float16),
             "positions": rng.uniform(0, 1, (FRAMES, REGIONS, 2)).astype(np.float16)}
            for split in ("train", "val", "test") for label in labels for i in range(2)]
    write_shard(directory / "shard-00000.parquet", rows, fmt)
    return directory


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, micro_backbone, micro_weights, micro_corpus) -> dict:
    root = tmp_path_factory.mktemp("inputs")
    micro_corpus.save(root / "corpus.parquet")
    (root / "labels.txt").write_text("\n".join(LABELS) + "\n")
    tokens = write_tokens(root / "tokens", micro_backbone.spec.id, micro_backbone.embed_dim)
    return {"root": root, "tokens": tokens, "corpus": root / "corpus.parquet", "weights": micro_weights,
            "dim": micro_backbone.embed_dim}


def train_job(ws: dict, out: Path, data: Path | None = None, corpus: Path | None = None, **model) -> TrainJob:
    config = ALTConfig(backbone="alt-micro", pretrained=ws["weights"], width=32, heads=2, num_queries=4, depth=1)
    return TrainJob(data=str(data or ws["tokens"]), corpus=str(corpus or ws["corpus"]), out=str(out),
                    model=replace(config, **model), train=TrainConfig(epochs=1, batch_size=4))


def refused_before_ray(call, out: Path, message: str) -> None:
    """`call` raises a user error with `message` and nothing started: no Ray, no Train worker."""
    with pytest.raises(ALTError) as err:
        call()
    assert message in str(err.value) and "\n" not in str(err.value)
    assert not ray.is_initialized() and not (out / "workers" / "rank0.pid").exists()


def test_the_inputs_themselves_pass_the_checks(inputs, tmp_path):
    from pipelines.inputs import check_inputs

    checked = check_inputs(train_job(inputs, tmp_path / "run"))  # so each refusal below has one cause
    assert checked.labels == sorted(LABELS) and checked.model.tome_r == 1 and checked.train_videos == 2 * len(LABELS)


def test_alt_train_with_a_corpus_of_other_weights_fails_in_seconds_in_one_line(inputs, tmp_path, micro_backbone):
    other = tmp_path / "other.safetensors"
    write_weights(other, micro_backbone, retrained=True)
    corpus = EntityCorpus.load(inputs["corpus"])
    EntityCorpus(corpus.entities, corpus.embeddings, BackboneSpec("alt-micro", str(other)).id).save(
        tmp_path / "other-corpus.parquet")
    start = time.monotonic()
    result = run_alt("train", "--data", str(inputs["tokens"]), "--corpus", str(tmp_path / "other-corpus.parquet"),
                     "--out", str(tmp_path / "run"), "--width", "32", "--heads", "2", "--num-queries", "4")
    seconds = time.monotonic() - start
    line = one_error_line(result)
    assert "was embedded with alt-micro" in line and "rebuild the corpus with --backbone alt-micro" in line
    assert not (tmp_path / "run" / "workers").exists() and not (tmp_path / "run" / "ray").exists()
    # refused by the driver, before Ray (which alone takes 3-8 s to start) and before any worker: a few seconds
    # on an idle 2-core machine (it took 65 s and 52 lines when the workers checked); generous under contention
    assert seconds < 60, f"refused after {seconds:.1f} s"


def test_stale_tokens_are_refused_before_ray(inputs, tmp_path, micro_backbone):
    from pipelines.train import train

    weights = tmp_path / "w.safetensors"
    write_weights(weights, micro_backbone)
    tokens = write_tokens(tmp_path / "tokens", BackboneSpec("alt-micro", str(weights)).id, inputs["dim"])
    write_weights(weights, micro_backbone, retrained=True)  # new weights under the same name: the tokens are stale
    refused_before_ray(lambda: train(train_job(inputs, tmp_path / "run", tokens)), tmp_path / "run",
                       "decode the videos again with --cache-tokens")


def test_a_corpus_of_other_weights_is_refused_before_ray(inputs, tmp_path, micro_backbone):
    from pipelines.train import train

    corpus = EntityCorpus.load(inputs["corpus"])
    other = tmp_path / "other.safetensors"
    write_weights(other, micro_backbone, retrained=True)
    EntityCorpus(corpus.entities, corpus.embeddings, BackboneSpec("alt-micro", str(other)).id).save(tmp_path / "c.pq")
    refused_before_ray(lambda: train(train_job(inputs, tmp_path / "run", corpus=tmp_path / "c.pq")),
                       tmp_path / "run", "rebuild the corpus with --backbone alt-micro")


def test_a_corpus_smaller_than_the_query_count_is_refused_before_ray(inputs, tmp_path):
    from pipelines.train import train

    size = len(EntityCorpus.load(inputs["corpus"]))
    refused_before_ray(lambda: train(train_job(inputs, tmp_path / "run", num_queries=size + 1)), tmp_path / "run",
                       f"has {size} entities, fewer than the {size + 1} queries")


def test_a_search_whose_space_asks_more_queries_than_the_corpus_holds_is_refused_before_ray(inputs, tmp_path):
    from pipelines.tune import tune_search

    size = len(EntityCorpus.load(inputs["corpus"]))
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({"max_t": 1, "space": {"num_queries": {"grid": [2, size + 3]}}}))
    refused_before_ray(lambda: tune_search(train_job(inputs, tmp_path / "search"), SearchOptions(space=str(space))),
                       tmp_path / "search", f"fewer than the {size + 3} queries")
    assert not (tmp_path / "search" / "search.json").exists()  # no search record, no MLflow parent run


def test_labels_missing_from_the_label_set_are_refused_before_ray(inputs, tmp_path):
    from pipelines.train import train

    (tmp_path / "labels.txt").write_text("\n".join(LABELS[:-1]) + "\n")
    job = replace(train_job(inputs, tmp_path / "run"), labels=str(tmp_path / "labels.txt"))
    refused_before_ray(lambda: train(job), tmp_path / "run", f"are not in {tmp_path / 'labels.txt'} (e.g. "
                                                             f"{LABELS[-1]!r})")


@pytest.mark.parametrize(("name", "content", "message"), [
    ("shots.csv", b"\xff\xfe\x00garbage\x00" * 64, "cannot be read as CSV"),
    ("shots.parquet", b"PAR1 not really parquet", "cannot be read as Parquet"),
])
def test_an_unreadable_few_shot_manifest_is_refused_before_ray(inputs, tmp_path, name, content, message):
    from pipelines.train import train

    (tmp_path / name).write_bytes(content)
    job = train_job(inputs, tmp_path / "run")
    job = replace(job, train=replace(job.train, shots_file=str(tmp_path / name)))
    refused_before_ray(lambda: train(job), tmp_path / "run", message)


def test_an_unreadable_corpus_is_refused_before_ray(inputs, tmp_path):
    from pipelines.train import train

    (tmp_path / "corpus.parquet").write_bytes(inputs["corpus"].read_bytes()[:500])  # truncated
    refused_before_ray(lambda: train(train_job(inputs, tmp_path / "run", corpus=tmp_path / "corpus.parquet")),
                       tmp_path / "run", "is not a corpus written by `alt corpus build`")


def test_eval_refuses_labels_missing_from_the_label_set_and_tokens_of_another_backbone_before_ray(
        inputs, tmp_path, micro_backbone, micro_corpus):
    from pipelines.evaluate import evaluate

    checkpoint = save_checkpoint(make_model(micro_backbone, micro_corpus), tmp_path / "ckpt")
    (tmp_path / "labels.txt").write_text("\n".join(LABELS[:2]) + "\n")
    refused_before_ray(lambda: evaluate(checkpoint, inputs["tokens"], labels=tmp_path / "labels.txt"), tmp_path,
                       f"label(s) of the test split(s) of {inputs['tokens']} are not in {tmp_path / 'labels.txt'}")
    other = tmp_path / "other.safetensors"
    write_weights(other, micro_backbone, retrained=True)
    tokens = write_tokens(tmp_path / "tokens", BackboneSpec("alt-micro", str(other)).id, inputs["dim"])
    refused_before_ray(lambda: evaluate(checkpoint, tokens), tmp_path, "decode the videos again with --cache-tokens")


def test_alt_decode_with_an_unreadable_manifest_is_one_line_before_ray(tmp_path):
    (tmp_path / "manifest.csv").write_bytes(b"path,label\n" + b"\xff\xfe\xfd" * 100)
    result = run_alt("decode", "--manifest", str(tmp_path / "manifest.csv"), "--out", str(tmp_path / "clips"))
    assert "cannot be read as CSV" in one_error_line(result)
    assert not (tmp_path / "clips").exists()  # refused before the decode stage made anything


# Corrupt or truncated checkpoint files: one line naming the file, for every verb that loads a checkpoint

DAMAGE = {
    "model.safetensors truncated": ("model.safetensors", lambda data: data[:1000]),
    "model.safetensors cut short": ("model.safetensors", lambda data: data[:len(data) * 9 // 10]),
    "config.json truncated": ("config.json", lambda data: data[:len(data) // 2]),
    "labels.txt missing a line": ("labels.txt", lambda data: b"\n".join(data.splitlines()[:-1]) + b"\n"),
    "labels.txt binary": ("labels.txt", lambda data: b"\xff\xfe\x00\x81" * 8),
}


def damaged_checkpoint(directory: Path, backbone, corpus, kind: str) -> tuple[Path, str]:
    save_checkpoint(make_model(backbone, corpus), directory)
    name, damage = DAMAGE[kind]
    (directory / name).write_bytes(damage((directory / name).read_bytes()))
    return directory, name


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_a_damaged_checkpoint_file_is_one_error_naming_it(tmp_path, micro_backbone, micro_corpus, kind):
    directory, name = damaged_checkpoint(tmp_path / "ckpt", micro_backbone, micro_corpus, kind)
    with pytest.raises(CheckpointError) as err:
        load_model(directory)
    assert str(err.value).startswith(f"{directory}: {name} ") and "\n" not in str(err.value)


def test_a_damaged_registry_version_is_one_error_naming_the_version_and_file(tmp_path, micro_backbone, micro_corpus):
    directory, _ = damaged_checkpoint(tmp_path / "ckpt", micro_backbone, micro_corpus, "model.safetensors truncated")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    run = client.create_run(tracking.experiment_id(uri, tmp_path / "artifacts"))
    client.log_artifacts(run.info.run_id, str(directory), "checkpoint")
    version = tracking.register_version(client, run.info.run_id, "checkpoint")
    client.set_registered_model_alias("alt", "champion", str(version))
    with pytest.raises(CheckpointError) as err:
        check_model("models:/alt@champion", uri)
    assert str(err.value).startswith(f"registered model alt v{version} (champion): model.safetensors is truncated")
    assert "alt-models-" not in str(err.value)  # the version, not the cache directory it was downloaded to


@pytest.fixture(scope="module")
def damaged(tmp_path_factory, micro_backbone, micro_corpus) -> dict:
    root = tmp_path_factory.mktemp("damaged")
    directory, name = damaged_checkpoint(root / "ckpt", micro_backbone, micro_corpus, "model.safetensors truncated")
    clip = root / "clip.mp4"
    write_mp4(clip, render_clip(sample_clip_spec("circle moving left", seed=3, frames=16, size=64)))
    return {"root": root, "checkpoint": directory, "name": name, "clip": clip}


@pytest.mark.parametrize("verb", ["predict", "eval", "serve", "infer"])
def test_every_verb_that_loads_a_checkpoint_names_the_damaged_file_in_one_line(damaged, verb, micro_weights):
    checkpoint, root = str(damaged["checkpoint"]), damaged["root"]
    args = {"predict": ["predict", str(damaged["clip"]), "--checkpoint", checkpoint],
            "eval": ["eval", "--checkpoint", checkpoint, "--data", str(root / "no-clips-needed")],
            "serve": ["serve", "--checkpoint", checkpoint, "--port", "1", "--config", str(DEFAULT_CONFIG)],
            "infer": ["infer", "--model", checkpoint, "--videos", str(root), "--out", str(root / "labelled")]}[verb]
    line = one_error_line(run_alt(*args))
    assert line.startswith(f"error: {checkpoint}: model.safetensors is truncated or corrupt"), line


def test_a_job_names_its_files_by_absolute_paths_so_workers_elsewhere_find_them(tmp_path, monkeypatch):
    """Ray Train workers run in directories of their own: `alt train --corpus corpus.parquet` (relative to where
    the command ran) must reach them as an absolute path."""
    from pipelines.jobs import TrainJob

    monkeypatch.chdir(tmp_path)
    job = TrainJob(data="tokens", corpus="corpus.parquet", out="run", labels="labels.txt")
    assert (job.data, job.corpus, job.out, job.labels) == tuple(str(tmp_path / name) for name in
                                                               ("tokens", "corpus.parquet", "run", "labels.txt"))
    assert TrainJob(data="s3://bucket/tokens", corpus="c", out="o").data == "s3://bucket/tokens"


@pytest.mark.parametrize("inputs, message", [
    ([], "pass exactly one of --manifest (a manifest file) or --videos"),
    (["--videos", "{root}/no-such-dir"], "is not a directory"),
    (["--videos", "{root}/empty"], "holds no video files"),
    (["--manifest", "{root}/missing.csv"], "missing.csv does not exist"),
], ids=["no-inputs", "no-directory", "no-videos", "no-manifest"])
def test_alt_infer_refuses_inputs_it_cannot_read_in_one_line(damaged, inputs, message, tmp_path):
    (tmp_path / "empty").mkdir()
    args = [a.format(root=tmp_path) for a in inputs]
    line = one_error_line(run_alt("infer", "--model", str(damaged["checkpoint"]), "--out", str(tmp_path / "o"), *args))
    assert message in line, line
    assert not (tmp_path / "o").exists()  # refused before anything was written
