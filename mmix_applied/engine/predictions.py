"""The prediction writer: delimited text tables written atomically (a kill never leaves half a file).

CSV (the default) quotes values holding commas, quotes or line breaks, so any file name survives;
TSV has no quoting and refuses such values.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from mmix_applied.utils.atomic import atomic_write_text

__all__ = ["write_table"]


def write_table(path: str | os.PathLike, rows: Iterable[Sequence[Any]], *, header: Sequence[str] | None = None,
                delimiter: str = ",") -> Path:
    """Write ``rows`` (and ``header`` first, if given) as CSV (or TSV with ``delimiter="\\t"``).

    Args:
        path: The file to write; parent folders are created.
        rows: One sequence of values per row.
        header: Column names.
        delimiter: Field separator.

    Returns:
        ``path``.
    """
    text = io.StringIO()
    if delimiter == "\t":  # TSV as our readers take it: no quoting, so a value may hold no tab or line break
        lines = ([header] if header is not None else []) + [list(r) for r in rows]
        for line in lines:
            bad = next((str(v) for v in line if any(c in str(v) for c in "\t\r\n")), None)
            if bad is not None:
                raise ValueError(f"cannot write {bad!r} to the TSV {str(path)!r}: it holds a tab or a line break, "
                                 "which TSV cannot quote; write CSV instead (delimiter=',' quotes such values)")
        text.write("".join("\t".join(str(v) for v in line) + "\n" for line in lines))
    else:
        writer = csv.writer(text, delimiter=delimiter)
        if header is not None:
            writer.writerow(header)
        writer.writerows(rows)
    return atomic_write_text(path, text.getvalue())
