"""Video manifests (docs/method.md, "Data formats"): CSV or Parquet with `path,label[,split]`, or an mmaction2 list.

An mmaction2 list holds `relative/path.mp4 label_index` per line and needs a label set: a
`labels.txt` beside the list or an explicit `labels_file`. Relative video paths resolve against
the manifest's directory, so a dataset directory can move as a whole.
"""

from __future__ import annotations

import csv
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from alt_core.errors import ALTError

REQUIRED_COLUMNS = ("path", "label")
LABELS_FILE = "labels.txt"


class ManifestError(ALTError):
    """A manifest or label file that cannot be used; the message names the file (and line)."""


@dataclass(frozen=True)
class ManifestRow:
    path: str  # absolute (or as given when already absolute)
    label: str
    split: str


def read_labels(path: str | Path) -> list[str]:
    """A label set: one class name per line, blank lines skipped, no duplicates."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"label file {path} does not exist")
    try:
        lines = path.read_text().splitlines()
    except UnicodeDecodeError as err:
        raise ManifestError(f"label file {path} is not UTF-8 text ({err.reason}); one class name per line") from err
    labels: list[str] = []
    for lineno, line in enumerate(lines, start=1):
        name = line.strip()
        if not name:
            continue
        if name in labels:
            raise ManifestError(f"{path}:{lineno}: duplicate class {name!r}")
        labels.append(name)
    if not labels:
        raise ManifestError(f"label file {path} has no class names")
    return labels


def read_manifest(path: str | Path, labels_file: str | Path | None = None,
                  default_split: str = "test") -> list[ManifestRow]:
    """Rows of a CSV (.csv), Parquet (.parquet, .pq) or mmaction2 list (any other suffix) manifest.

    Rows without a split column get `default_split`; "test" keeps sampling deterministic, pass
    "train" for an mmaction2 training list.
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"manifest {path} does not exist")
    try:
        records = _records(path, labels_file)
    except (UnicodeDecodeError, csv.Error, pa.ArrowException) as err:
        kind = {".csv": "CSV", ".parquet": "Parquet", ".pq": "Parquet"}.get(path.suffix.lower(), "an mmaction2 list")
        cause = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise ManifestError(f"manifest {path} cannot be read as {kind} ({cause}); pass a CSV or Parquet file with "
                            "path,label[,split] columns, or an mmaction2 list") from err
    rows = []
    for lineno, rec in records:
        video, label = str(rec.get("path") or "").strip(), str(rec.get("label") or "").strip()
        if not video or not label:
            raise ManifestError(f"{path}:{lineno}: empty path or label")
        split = str(rec.get("split") or "").strip() or default_split
        rows.append(ManifestRow(_resolve(path, video), label, split))
    if not rows:
        raise ManifestError(f"manifest {path} has no rows")
    return rows


def _records(path: Path, labels_file: str | Path | None) -> list[tuple[int, dict]]:
    """(line number, record) of every row, by the file's suffix."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            _check_columns(path, reader.fieldnames or [])
            return [(lineno, r) for lineno, r in enumerate(reader, start=2)]  # the header is line 1
    if suffix in (".parquet", ".pq"):
        table = pq.read_table(str(path))
        _check_columns(path, table.column_names)
        return list(enumerate(table.to_pylist(), start=1))
    return _read_mmaction(path, labels_file)


def _check_columns(path: Path, columns: list[str]) -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise ManifestError(f"manifest {path} lacks column(s) {missing}; expected path,label[,split], got {columns}")


def _read_mmaction(path: Path, labels_file: str | Path | None) -> list[tuple[int, dict]]:
    labels_path = Path(labels_file) if labels_file else path.parent / LABELS_FILE
    if not labels_path.is_file():
        raise ManifestError(f"mmaction2 list {path} needs a label set: put {LABELS_FILE} beside it or pass "
                            f"labels_file (looked for {labels_path})")
    labels = read_labels(labels_path)
    records = []
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or not fields[1].lstrip("-").isdigit():
            raise ManifestError(f"{path}:{lineno}: expected 'relative/path.mp4 label_index', got {line.strip()!r}")
        index = int(fields[1])
        if not 0 <= index < len(labels):
            raise ManifestError(f"{path}:{lineno}: label index {index} is outside 0..{len(labels) - 1} "
                                f"of {labels_path}")
        records.append((lineno, {"path": fields[0], "label": labels[index]}))
    return records


def _resolve(manifest: Path, video: str) -> str:
    video = os.path.expanduser(video)
    return video if os.path.isabs(video) else os.path.normpath(manifest.parent.absolute() / video)


def video_id(path: str) -> str:
    """A stable 12-hex id of a resolved manifest path (also seeds its training-clip sampling)."""
    return hashlib.sha1(path.encode()).hexdigest()[:12]
