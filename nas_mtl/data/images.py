"""Image decoding, area resizing and the in-process image cache.

Images are decoded once per (file, size) and kept as read-only float32 arrays in
``[0, 1]`` with strokes/foreground 1.0 and background 0.0, so repeated loads (one study, many
trials) cost an index copy, not a decompression. :func:`clear_image_cache` frees the memory.

Resizing is exact area interpolation (each output pixel is the area-weighted mean of the input
pixels it covers, like OpenCV's ``INTER_AREA``), done once per file as two small matrix products.
"""

from __future__ import annotations

import functools
import gzip
import logging
import time
from pathlib import Path

import numpy as np

from nas_mtl.errors import DataError

__all__ = [
    "area_resize",
    "area_weights",
    "clear_image_cache",
    "read_idx",
    "load_image_file",
]

logger = logging.getLogger(__name__)


def area_weights(n_in: int, n_out: int) -> np.ndarray:
    """``(n_out, n_in)`` overlap of output cell i with input pixel j, rows normalised to 1."""
    edges_out = np.arange(n_out + 1) * (n_in / n_out)
    lo = np.maximum(edges_out[:-1, None], np.arange(n_in)[None, :])
    hi = np.minimum(edges_out[1:, None], np.arange(1, n_in + 1)[None, :])
    overlap = np.clip(hi - lo, 0.0, None)
    return overlap / overlap.sum(axis=1, keepdims=True)


def area_resize(images: np.ndarray, size: int) -> np.ndarray:
    """Resize ``(N, H, W)`` images to ``(N, size, size)`` float32 by exact area interpolation."""
    n, h, w = images.shape
    if (h, w) == (size, size):
        return images.astype(np.float32, copy=False)
    rows = area_weights(h, size).astype(np.float32)  # (size, H)
    cols = area_weights(w, size).astype(np.float32)  # (size, W)
    out = np.empty((n, size, size), dtype=np.float32)
    chunk = 4096  # bounds the float32 temporary of the batch being converted
    for start in range(0, n, chunk):
        block = images[start : start + chunk].astype(np.float32)
        out[start : start + chunk] = rows @ block @ cols.T
    return out


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (MNIST format), gzipped or not, into a NumPy array."""
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{path}: not an unsigned-byte IDX file (bad magic number)")
    ndim = raw[3]
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    offset = 4 + 4 * ndim
    if len(raw) - offset != int(np.prod(dims)):
        raise DataError(
            f"{path}: IDX header says shape {dims} but the file holds {len(raw) - offset} bytes"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(dims)


def _decode(path: Path, labels_path: Path | None) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(N, H, W)`` with foreground high (uint8 or bool) and their labels."""
    if path.name.endswith(".npz"):
        with np.load(path) as archive:
            images, labels = archive["images"], archive["labels"]
        if images.dtype == np.bool_:  # Omniglot: True = white background, strokes False
            images = ~images
        return images.reshape((-1,) + images.shape[-2:]), labels
    if labels_path is None:
        raise DataError(f"{path}: an IDX image file needs its labels file")
    return read_idx(path), read_idx(labels_path)


@functools.lru_cache(maxsize=16)
def _cached(
    path: str, labels_path: str | None, mtime_ns: int, size: int
) -> tuple[np.ndarray, np.ndarray]:
    start = time.perf_counter()
    images, labels = _decode(Path(path), Path(labels_path) if labels_path else None)
    resized = area_resize(images, size)
    if images.dtype == np.uint8:
        resized /= 255.0
    np.clip(resized, 0.0, 1.0, out=resized)  # float32 rounding of the area weights can reach 1+ε
    resized.flags.writeable = False
    labels = np.array(labels, dtype=np.int64)
    labels.flags.writeable = False
    logger.info(
        "decoded %s at %dx%d in %.2f s", Path(path).name, size, size, time.perf_counter() - start
    )
    return resized, labels


def load_image_file(
    path: Path, size: int, labels_path: Path | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Decoded images ``(N, size, size)`` float32 in [0, 1] and int64 labels, cached per file+size.

    Reads NPZ files with ``images`` and ``labels`` arrays (Omniglot's bool images, True =
    background, are inverted so strokes are 1.0; ``[chars, 20, H, W]`` is flattened to
    ``N = chars · 20`` while labels keep their shape) and IDX image files with their
    ``labels_path``. The returned arrays are shared and read-only: index them to get a copy.
    """
    labels = str(labels_path.resolve()) if labels_path is not None else None
    return _cached(str(path.resolve()), labels, path.stat().st_mtime_ns, int(size))


def clear_image_cache() -> None:
    """Forget every decoded image array (frees their memory once no data set references them)."""
    _cached.cache_clear()
