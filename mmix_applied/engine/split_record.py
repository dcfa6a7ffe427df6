"""The split record: which items a run trains, validates and tests on, kept in the run folder.

Splits held out of a list by a seed (``data.val_fraction``, ``data.test_fraction``) depend on the
whole list: add images to the data folder and resume, and the seeded split moves test images into
training without a word. ``fit`` writes ``data_splits.json`` into the run folder (each split's
item names, relative to the data root, and their SHA-256); ``fit --resume`` rebuilds the splits and
refuses to continue when they differ, naming what was added and removed per split, before
anything is written. Embedded data sets (fixed by the seed) have no item names and are not recorded.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mmix_applied.errors import MmixError
from mmix_applied.utils.atomic import atomic_write_text

__all__ = ["SPLIT_RECORD_FILE", "DataChangedError", "check_split_record", "split_record", "write_split_record"]

SPLIT_RECORD_FILE = "data_splits.json"


class DataChangedError(MmixError, ValueError):
    """The data of a resumed run is not the data it started with."""


def _digest(items: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(sorted(items)).encode("utf-8")).hexdigest()


def split_record(splits: Sequence[Any]) -> dict[str, Any] | None:
    """The record of ``splits`` (:class:`~mmix_applied.engine.data_summary.SplitDescription` objects with
    ``ids``), or ``None`` when no split names its items (embedded data)."""
    named = {s.name: sorted(str(i) for i in s.ids) for s in splits if s.ids is not None}
    if not named:
        return None
    return {"format": 1, "splits": {name: {"count": len(ids), "sha256": _digest(ids), "items": ids}
                                    for name, ids in named.items()}}


def write_split_record(run_dir: str | Path, record: dict[str, Any] | None) -> Path | None:
    """Write ``record`` to ``run_dir/data_splits.json`` (atomically); nothing for ``None``."""
    if record is None:
        return None
    return atomic_write_text(Path(run_dir) / SPLIT_RECORD_FILE, json.dumps(record, indent=1))


def _examples(names: Sequence[str], where: dict[str, str] | None = None) -> str:
    shown = []
    for name in names[:3]:
        moved = where.get(name) if where else None
        shown.append(f"{name!r}" + (f" now in {moved}" if moved else ""))
    return ", ".join(shown) + (", ..." if len(names) > 3 else "")


def check_split_record(run_dir: str | Path, record: dict[str, Any] | None) -> bool:
    """Compare the splits rebuilt now with those ``run_dir`` recorded when it started.

    Returns:
        True when a record was found and matches; False when the run has none (started before
        records were kept, or on embedded data).

    Raises:
        DataChangedError: (a ValueError) A split gained or lost items; the message lists the
            counts and examples per split, and the way out.
    """
    path = Path(run_dir) / SPLIT_RECORD_FILE
    if record is None or not path.is_file():
        return False
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))["splits"]
    except (ValueError, KeyError, TypeError) as err:
        raise DataChangedError(f"the split record {str(path)!r} cannot be read ({err}); it was damaged. Restore it "
                               "from a copy of the run, or start a new run") from err
    now = record["splits"]
    if all(saved.get(k, {}).get("sha256") == v["sha256"] for k, v in now.items()) and set(saved) == set(now):
        return True
    where = {item: name for name, split in now.items() for item in split["items"]}
    changes = []
    order = ["train", "val", "test"]
    for name in sorted(set(saved) | set(now), key=lambda k: (order.index(k) if k in order else len(order), k)):
        old, new = set(saved.get(name, {}).get("items", [])), set(now.get(name, {}).get("items", []))
        added, removed = sorted(new - old), sorted(old - new)
        if not added and not removed:
            continue
        part = f"{name}: {len(old)} -> {len(new)} items"
        if added:
            part += f", {len(added)} added ({_examples(added)})"
        if removed:
            part += f", {len(removed)} removed ({_examples(removed, {k: v for k, v in where.items() if v != name})})"
        changes.append(part)
    raise DataChangedError(
        f"the data changed since this run started ({str(path)!r}): " + "; ".join(changes) + ". A resumed run must "
        "see the splits it started with (a seeded split of a changed list moves images between train, val and "
        "test). Restore the data as it was, or start a new run (another run.name) on the new data"
    )
