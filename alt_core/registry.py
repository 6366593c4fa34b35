"""Models by name: a registry URI (`models:/NAME@ALIAS`, `models:/NAME/VERSION`) or a checkpoint directory,
resolved once to a pinned source and a local directory, and described without where it sits.

Every verb that loads a model (`alt predict`, `alt eval`, `alt serve`, batch inference) comes through here.
Only MLflow's registry client is used: no plotting and no run logging (`pipelines/tracking.py` writes runs and
versions), so a serving replica loads little.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from alt_core.checkpoint import CheckpointContents, CheckpointError, check_checkpoint, load_checkpoint
from alt_core.errors import ALTError
from alt_core.model import ALTModel
from alt_core.training import METRIC

REGISTRY_SCHEME = "models:/"


@dataclass(frozen=True)
class ModelSource:
    """A model pinned to what it is: a registry version (an alias resolved once) or a checkpoint directory."""

    directory: Path  # the local checkpoint directory (a registry version's copy in the per-version cache)
    pinned: str  # what loads exactly this model again: models:/NAME/VERSION, or the directory's absolute path
    name: str  # the registered model's name, or the checkpoint directory's name
    version: int | None = None
    alias: str | None = None
    run_id: str | None = None
    data_hash: str | None = None
    val_top1: float | None = None

    def card(self) -> dict:
        """What responses, pages and reports show: the model's name, never the path it was loaded from."""
        return {"name": self.name, "version": self.version, "alias": self.alias, "run_id": self.run_id,
                "data_hash": self.data_hash, METRIC: self.val_top1}

    def title(self) -> str:
        """One phrase for messages: `alt v3 (champion)`, `alt v3`, or the directory's name."""
        if self.version is None:
            return self.name
        return f"{self.name} v{self.version}" + (f" ({self.alias})" if self.alias else "")


def is_registry_uri(reference: str | Path) -> bool:
    return str(reference).startswith(REGISTRY_SCHEME)


def store_uri(reference: str, tracking_uri: str | None) -> str:
    """The MLflow store that holds a registry URI: the flag, else MLFLOW_TRACKING_URI."""
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        raise ALTError(f"{reference} names a registered model: pass --tracking-uri (or set MLFLOW_TRACKING_URI) "
                       "to say which MLflow store holds it")
    return uri


def registry_version(reference: str, tracking_uri: str | None = None) -> dict:
    """What a registry URI points at now: name, version, alias, run id, and the data hash and validation score
    its version was tagged with."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    uri = store_uri(reference, tracking_uri)
    name_and_ref = reference[len(REGISTRY_SCHEME):]
    name, sep, ref = name_and_ref.partition("@") if "@" in name_and_ref else name_and_ref.partition("/")
    if not (name and sep and ref) or (sep == "/" and not ref.isdigit()):
        raise ALTError(f"{reference} is not a registry URI we load: use models:/NAME@ALIAS or models:/NAME/VERSION")
    client = MlflowClient(uri)
    try:
        version = client.get_model_version_by_alias(name, ref) if sep == "@" else client.get_model_version(name, ref)
    except MlflowException as err:
        raise ALTError(f"cannot find {reference} in {uri}: {str(err).splitlines()[0]}") from err
    score = version.tags.get(METRIC)
    return {"name": name, "version": int(version.version), "alias": ref if sep == "@" else None,
            "run_id": version.run_id, "data_hash": version.tags.get("data_hash"),
            METRIC: float(score) if score is not None else None}


def resolve_model(reference: str | Path, tracking_uri: str | None = None) -> ModelSource:
    """Pin a reference: an alias is resolved to its version now, and the version is downloaded once into a
    per-user cache keyed by store, name, version and run, so hot swaps and repeated `alt predict` calls do not
    pile up copies. The run is part of the key because a version number is not unique over time: a store
    deleted and made again at the same URI (a rerun of `alt demo`) numbers its versions from 1 again."""
    reference = str(reference)
    if not is_registry_uri(reference):
        directory = Path(reference).resolve()
        return ModelSource(directory, str(directory), directory.name)
    uri = store_uri(reference, tracking_uri)
    version = registry_version(reference, uri)
    pinned = f"{REGISTRY_SCHEME}{version['name']}/{version['version']}"
    store = hashlib.sha256(uri.encode()).hexdigest()[:12]
    cache = Path(tempfile.gettempdir()) / f"alt-models-{os.getuid()}"
    target = cache / store / version["name"] / f"{version['version']}-{version['run_id']}"
    if not (target / "config.json").is_file():
        _download(pinned, uri, target)
    return ModelSource(target, pinned, version["name"], version["version"], version["alias"], version["run_id"],
                       version["data_hash"], version[METRIC])


def _download(pinned: str, uri: str, target: Path) -> None:
    """A registry version's files into `target`, whole or not at all: a concurrent loader finds a complete
    directory or none."""
    import mlflow
    from mlflow.exceptions import MlflowException

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="download-", dir=target.parent))
    mlflow.set_tracking_uri(uri)  # models:/ downloads resolve through the process's registry, in any thread
    try:
        downloaded = mlflow.artifacts.download_artifacts(artifact_uri=pinned, dst_path=str(staging))
        os.replace(downloaded, target)
    except OSError:
        if not (target / "config.json").is_file():  # not another loader's finished copy: a real failure
            raise
    except MlflowException as err:
        raise ALTError(f"cannot load {pinned} from {uri}: {str(err).splitlines()[0]}") from err
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def check_model(reference: str | Path, tracking_uri: str | None = None) -> tuple[ModelSource, CheckpointContents]:
    """Resolve a reference and check its checkpoint's files, without building the model: what a driver runs
    before it starts workers that load it. A corrupt file is one error naming it."""
    source = resolve_model(reference, tracking_uri)
    return source, _named(source, check_checkpoint)


def load_model(reference: str | Path, tracking_uri: str | None = None,
               device: str | torch.device = "cpu") -> tuple[ALTModel, ModelSource]:
    """The model a reference names, pinned, and its source."""
    source = resolve_model(reference, tracking_uri)
    return _named(source, lambda directory: load_checkpoint(directory, device)), source


def _named(source: ModelSource, read):
    """Run `read(directory)`; a registry version's checkpoint errors name the version, not the cache path."""
    try:
        return read(source.directory)
    except CheckpointError as err:
        if source.version is None:
            raise
        raise CheckpointError(f"registered model {source.title()}", err.problem) from err
