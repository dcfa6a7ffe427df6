"""Image files before decoding: the header (size, colour mode), OpenCV's size limit, palette masks.

Every image reader of the package (classification images, 2D segmentation images and masks, text
lines) first reads the file's header with Pillow's lazy ``Image.open``, which decodes no pixels,
so that:

* an image larger than OpenCV decodes (``CV_IO_MAX_IMAGE_PIXELS``, 2^30 pixels unless the
  environment variable ``OPENCV_IO_MAX_IMAGE_PIXELS`` raises it) is refused with its file name,
  its size and the limit, instead of a bare ``cv2.error`` about ``validateInputImageSize``;
* a palette image (Pascal VOC ``SegmentationClass``, CVAT and LabelMe exports: mode ``P``) can be
  read as its palette *indices*, the class of each pixel; OpenCV would expand it to colours;
* the sizes of a folder of images are known without decoding them (mixed-size evaluation).

A file Pillow does not recognise (some TIFF variants) has no header here; OpenCV then decodes it
as before, and its errors still name the file.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from mmix_applied.errors import MmixError

__all__ = [
    "OPENCV_MAX_PIXELS",
    "OPENCV_MAX_SIDE",
    "ImageHeader",
    "ImageTooLargeError",
    "check_decodable",
    "describe_sizes",
    "imread_checked",
    "read_header",
    "read_indices",
]

#: Pixels OpenCV's ``imread``/``imdecode`` accept (``CV_IO_MAX_IMAGE_PIXELS``, read by OpenCV at start-up).
OPENCV_MAX_PIXELS = int(os.environ.get("OPENCV_IO_MAX_IMAGE_PIXELS", 1 << 30))
#: Largest width or height OpenCV decodes (``CV_IO_MAX_IMAGE_WIDTH`` / ``_HEIGHT``).
OPENCV_MAX_SIDE = min(int(os.environ.get("OPENCV_IO_MAX_IMAGE_WIDTH", 1 << 20)),
                      int(os.environ.get("OPENCV_IO_MAX_IMAGE_HEIGHT", 1 << 20)))

#: Pillow modes whose first band is a class index (palette) or a grey value, with or without alpha.
_INDEXED_MODES = ("P", "PA", "LA", "La")

_bomb_lock = threading.Lock()


class ImageTooLargeError(MmixError, ValueError):
    """An image file is larger than OpenCV decodes."""


@dataclass(frozen=True)
class ImageHeader:
    """What a file's header says, read without decoding its pixels.

    Attributes:
        height: Rows.
        width: Columns.
        mode: Pillow's mode (``"L"``, ``"RGB"``, ``"P"`` for a palette image, ``"LA"`` grey with alpha ...).
        format: Pillow's format name (``"PNG"``, ``"TIFF"`` ...).
    """

    height: int
    width: int
    mode: str
    format: str | None = None

    @property
    def palette(self) -> bool:
        """True for a palette (indexed-colour) image: its pixel values are indices into a colour table."""
        return self.mode in ("P", "PA")


def read_header(path: str | os.PathLike) -> ImageHeader | None:
    """The header of an image file (size and mode), or ``None`` when Pillow does not recognise it.

    Nothing is decoded. Pillow's decompression-bomb limit does not apply here (this only reads the
    size, so that :func:`check_decodable` can refuse a huge file with a clear message).
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            try:
                with Image.open(path) as image:
                    return ImageHeader(image.height, image.width, image.mode, image.format)
            except Image.DecompressionBombError:
                with _bomb_lock:  # the limit is Pillow's global: lifted only while this header is read
                    saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
                    try:
                        with Image.open(path) as image:
                            return ImageHeader(image.height, image.width, image.mode, image.format)
                    finally:
                        Image.MAX_IMAGE_PIXELS = saved
    except Exception:  # noqa: BLE001 - not an image Pillow knows (or a damaged one): OpenCV decides and names it
        return None


def check_decodable(path: str | os.PathLike, header: ImageHeader | None = None, *, what: str = "image") -> None:
    """Refuse an image OpenCV would not decode because of its size, naming the file, the size and the limit.

    Args:
        path: The file.
        header: Its header, if already read (else it is read here).
        what: What the file is, for the message (``"image"``, ``"mask"``, ``"line image"``).

    Raises:
        ImageTooLargeError: (a ValueError) More than :data:`OPENCV_MAX_PIXELS` pixels, or a side over
            :data:`OPENCV_MAX_SIDE`.
    """
    header = header if header is not None else read_header(path)
    if header is None:
        return
    pixels = header.height * header.width
    if pixels <= OPENCV_MAX_PIXELS and max(header.height, header.width) <= OPENCV_MAX_SIDE:
        return
    gib = pixels * 3 * 4 / 2**30
    raise ImageTooLargeError(
        f"{what} {str(path)!r} is {header.width} x {header.height} pixels (width x height, {pixels:,} pixels), "
        f"larger than OpenCV decodes ({OPENCV_MAX_PIXELS:,} pixels and {OPENCV_MAX_SIDE:,} per side; the "
        f"environment variable OPENCV_IO_MAX_IMAGE_PIXELS sets the limit); as float32 RGB it would need "
        f"{gib:.1f} GiB. Downscale it or cut it into tiles (e.g. 'vips dzsave' or Pillow's crop), then list the tiles"
    )


def imread_checked(path: str | os.PathLike, flags: int = cv2.IMREAD_UNCHANGED, *, what: str = "image",
                   header: ImageHeader | None = None) -> np.ndarray:
    """``cv2.imread`` after the size check; an OpenCV error or an undecodable file is a ValueError naming it.

    Args:
        path: The file.
        flags: OpenCV's read flags.
        what: What the file is, for messages.
        header: Its header, if already read.

    Raises:
        ImageTooLargeError: See :func:`check_decodable`.
        ValueError: OpenCV cannot decode the file.
    """
    check_decodable(path, header, what=what)
    try:
        array = cv2.imread(str(path), flags)
    except cv2.error as err:
        raise ValueError(f"cannot read {what} {str(path)!r}: OpenCV refused it ({_first_line(err)})") from err
    if array is None or array.size == 0:
        raise ValueError(f"cannot read {what} {str(path)!r}: not an image OpenCV can decode (PNG, TIFF, JPEG, BMP), "
                         "or a truncated or corrupt file")
    return array


def read_indices(path: str | os.PathLike, header: ImageHeader) -> np.ndarray:
    """The first band of a palette or grey-with-alpha image as ``(H, W)`` values: palette *indices*
    (mode ``P``/``PA``, what Pascal VOC and CVAT masks store) or grey values (``LA``); alpha is dropped.

    Raises:
        ValueError: The mode is not one of those, or the pixels cannot be decoded.
    """
    if header.mode not in _INDEXED_MODES:
        raise ValueError(f"{str(path)!r} is a {header.mode} image, not a palette or grey+alpha image")
    try:
        with Image.open(path) as image:
            image.load()
            band = image.getchannel(0) if header.mode in ("PA", "LA", "La") else image
            return np.asarray(band if band.mode in ("P", "L") else band.convert("L")).copy()
    except (OSError, ValueError, SyntaxError) as err:
        raise ValueError(f"cannot read {str(path)!r}: {type(err).__name__}: {_first_line(err)} (truncated or corrupt "
                         "file; export it again)") from err


def _first_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[-1] if lines else type(err).__name__


def describe_sizes(sizes: Sequence[tuple[int, ...]], *, limit: int = 3) -> str:
    """``"240x320 (5), 480x640 (2)"``: the distinct sizes (``height x width``, or a volume's shape), most
    frequent first, with their counts when there are several."""
    counts: dict[tuple[int, ...], int] = {}
    for size in sizes:
        counts[tuple(size)] = counts.get(tuple(size), 0) + 1
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    shown = ", ".join("x".join(map(str, size)) + (f" ({n})" if len(ranked) > 1 else "") for size, n in ranked[:limit])
    return shown + (f" and {len(ranked) - limit} more sizes" if len(ranked) > limit else "")

