"""Text-line list readers: which line images a data set has and what they say.

Two list formats are read:

* the IAM Handwriting Database ``lines.txt`` (Marti & Bunke, IJDAR 2002): ``#`` comment lines,
  then ``<id> <ok|err> <graylevel> <components> <x> <y> <w> <h> <transcription>`` where ``|``
  separates words; images live at ``<root>/<a01>/<a01-000u>/<a01-000u-00>.png`` (or flat at
  ``<root>/<a01-000u-00>.png``);
* a plain TSV of ``path<TAB>text`` (relative paths resolve against the TSV's folder), or the CSV
  that ``predict`` writes (first line ``path,text``; quoted, so names may hold tabs or newlines),
  so corrected predictions can be trained on.

Every record keeps its ``file:line``, quoted in every error about it.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from mmix_applied.data.charset import Charset, UnknownCharacterError

__all__ = ["IAM_STATUSES", "PREDICTIONS_HEADER", "LineRecord", "check_charset", "read_iam_lines", "read_tsv"]

IAM_STATUSES = ("ok", "err")

#: First line of the handwriting recipe's predictions (CSV ``path,text`` rows), also read as a list.
PREDICTIONS_HEADER = "path,text"


@dataclass(frozen=True)
class LineRecord:
    """One line image and its transcription.

    Attributes:
        image_path: Where the image is.
        text: The transcription (IAM's ``|`` already turned into spaces).
        source: ``file:line`` of the list entry, quoted in every error about this record.
    """

    image_path: Path
    text: str
    source: str



def _open_utf8(path: Path) -> io.StringIO:
    """The text of a list file as a line iterator; a file that is not UTF-8 is a ValueError naming the line."""
    data = path.read_bytes()
    try:
        return io.StringIO(data.decode("utf-8-sig"))
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise ValueError(f"{path}:{line}: not UTF-8 text ({err.reason} at byte {err.start}); save the list as UTF-8, "
                         f"e.g. iconv -f latin1 -t utf-8 {path.name} > {path.stem}.utf8{path.suffix}") from None

def _iam_image_path(root: Path, line_id: str) -> Path:
    parts = line_id.split("-")
    if len(parts) < 3:
        return root / f"{line_id}.png"
    nested = root / parts[0] / "-".join(parts[:2]) / f"{line_id}.png"
    flat = root / f"{line_id}.png"
    return flat if (not nested.exists() and flat.exists()) else nested


def read_iam_lines(
    lines_file: str | os.PathLike,
    *,
    image_root: str | os.PathLike | None = None,
    include_err: bool = True,
    ids: Iterable[str] | None = None,
) -> list[LineRecord]:
    """Read an IAM ``lines.txt``.

    Args:
        lines_file: The list file.
        image_root: Folder holding the line images (IAM's ``lines/``); defaults to a ``lines``
            folder beside the list file.
        include_err: Keep lines whose *word segmentation* status is ``err``. Their line
            transcription is still correct, so line recognisers usually keep them.
        ids: Keep only these line ids (``a01-000u-00``) or form ids (``a01-000u``), e.g. from
            the IAM task split lists; None keeps every line.

    Returns:
        The records, in file order.

    Raises:
        FileNotFoundError: The list file does not exist.
        ValueError: A line is malformed (quoted with ``file:line``).
    """
    path = Path(lines_file)
    if not path.is_file():
        raise FileNotFoundError(f"IAM lines file not found: {path}")
    root = Path(image_root) if image_root is not None else path.parent / "lines"
    wanted = None if ids is None else {i.strip() for i in ids if i.strip()}
    records = []
    with _open_utf8(path) as handle:
        for number, raw in enumerate(handle, start=1):
            line = raw.rstrip("\r\n")
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            fields = line.split(" ")
            where = f"{path}:{number}"
            if len(fields) < 9:
                raise ValueError(
                    f"{where}: expected 9 space-separated fields (id, status, graylevel, components, "
                    f"x, y, w, h, transcription), received {len(fields)}: {line!r}"
                )
            status = fields[1]
            if status not in IAM_STATUSES:
                raise ValueError(f"{where}: status must be one of {IAM_STATUSES}, received {status!r}")
            try:
                [int(v) for v in fields[2:8]]
            except ValueError:
                raise ValueError(
                    f"{where}: graylevel, components and the x y w h box must be integers, received {fields[2:8]}"
                ) from None
            if status == "err" and not include_err:
                continue
            if wanted is not None and fields[0] not in wanted and fields[0].rsplit("-", 1)[0] not in wanted:
                continue
            text = " ".join(fields[8:]).replace("|", " ").replace("&quot;", '"')
            records.append(LineRecord(_iam_image_path(root, fields[0]), text, where))
    return records


def read_tsv(
    tsv_file: str | os.PathLike, *, image_root: str | os.PathLike | None = None, require_text: bool = True
) -> list[LineRecord]:
    """Read ``path<TAB>text`` lines; blank lines and lines starting with ``#`` are skipped.

    Args:
        tsv_file: The list file.
        image_root: Base for relative image paths; defaults to the TSV's folder.
        require_text: A line without a tab is an error; False reads it as a bare path with empty
            text (lists of images to transcribe).

    Raises:
        FileNotFoundError: The list file does not exist.
        ValueError: A line has no tab (quoted with ``file:line``).
    """
    path = Path(tsv_file)
    if not path.is_file():
        raise FileNotFoundError(f"TSV file not found: {path}")
    root = Path(image_root) if image_root is not None else path.parent
    records = []
    with _open_utf8(path) as handle:
        if handle.readline().rstrip("\r\n") == PREDICTIONS_HEADER:  # a predictions file of `predict`: CSV
            reader = csv.reader(handle)
            for row in reader:
                if row and row[0]:
                    text = row[1] if len(row) > 1 else ""
                    records.append(LineRecord(root / row[0], text, f"{path}:{reader.line_num + 1}"))
            return records
        handle.seek(0)
        for number, raw in enumerate(handle, start=1):
            line = raw.rstrip("\r\n")
            if not line.strip() or line.startswith("#"):
                continue
            if "\t" not in line and not require_text:
                records.append(LineRecord(root / line, "", f"{path}:{number}"))
                continue
            if "\t" not in line:
                raise ValueError(f"{path}:{number}: expected 'path<TAB>text', found no tab in {line!r}")
            image, text = line.split("\t", 1)
            records.append(LineRecord(root / image, text, f"{path}:{number}"))
    return records


def check_charset(
    records: Sequence[LineRecord], charset: Charset | str, *, on_unknown: str = "error", fix: str | None = None
) -> list[LineRecord]:
    """Check transcriptions against a charset; every unknown character is reported with its ``file:line``.

    Args:
        records: The records to check.
        charset: A :class:`~mmix_applied.data.charset.Charset` or its characters.
        on_unknown: ``"error"`` raises, ``"drop"`` removes the offending records.
        fix: The advice ending the error's message (default: this function's arguments).

    Returns:
        The records that use only known characters.

    Raises:
        UnknownCharacterError: (a ValueError) unknown characters were found and ``on_unknown="error"``.
    """
    if on_unknown not in ("error", "drop"):
        raise ValueError(f"on_unknown must be 'error' or 'drop', received {on_unknown!r}")
    charset = charset if isinstance(charset, Charset) else Charset(charset)
    records = list(records)
    unknown = charset.find_unknown([r.text for r in records], sources=[r.source for r in records])
    if not unknown:
        return records
    if on_unknown == "error":
        raise UnknownCharacterError(unknown, charset, fix=fix or (
            "Add the characters to the charset, build it from all transcriptions, or drop these lines "
            "(check_charset(..., on_unknown='drop'))."))
    bad = {source for where in unknown.values() for source, _ in where}
    return [r for r in records if r.source not in bad]


