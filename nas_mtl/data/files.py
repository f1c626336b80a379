"""Where data files live and how user tables are read.

Nothing is downloaded at run time: built-in data sets read their original files from a data
directory (``data_dir`` argument, else ``$NAS_MTL_DATA_DIR``, else ``./data``), and a missing file
is reported with its full path and where the data set comes from.
"""

from __future__ import annotations

import os
import re
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
from pandas.api import types as ptypes

from nas_mtl.errors import ConfigError, DataError

__all__ = ["DATA_DIR_ENV", "TABLE_EXTENSIONS", "read_frame", "require_file", "resolve_data_dir"]

DATA_DIR_ENV = "NAS_MTL_DATA_DIR"
TABLE_EXTENSIONS = (".csv", ".csv.gz", ".parquet", ".npz")


def resolve_data_dir(data_dir: str | Path | None) -> Path:
    """The data directory: ``data_dir`` if given, else ``$NAS_MTL_DATA_DIR``, else ``./data``."""
    if data_dir is not None and str(data_dir) != "":
        return Path(data_dir).expanduser()
    env = os.environ.get(DATA_DIR_ENV, "")
    return Path(env).expanduser() if env else Path("data")


def require_file(path: Path, *, dataset: str, source: str) -> Path:
    """Return ``path`` if it is a file, else raise a :class:`DataError` that says how to fix it."""
    if not path.is_file():
        raise DataError(
            f"data set '{dataset}' needs the file {path}, which does not exist. It comes from "
            f"{source}. Put it there, or choose the data folder with --data-dir or "
            f"${DATA_DIR_ENV} (now {resolve_data_dir(None)})"
        )
    return path


def _extension(path: Path) -> str:
    name = path.name.lower()
    for ext in sorted(TABLE_EXTENSIONS, key=len, reverse=True):
        if name.endswith(ext):
            return ext
    return "".join(path.suffixes) or "(none)"


def _head(path: Path, n: int) -> bytes:
    with path.open("rb") as f:
        return f.read(n)


def _read_npz(path: Path) -> pd.DataFrame:
    if _head(path, 2) != b"PK":  # an NPZ file is a zip archive
        raise DataError(
            f"{path} is not an NPZ archive (not a zip file); write the table with "
            "np.savez(path, column=array, ...), or give a .csv name to a CSV text"
        )
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, EOFError, zipfile.BadZipFile) as exc:  # a damaged archive
        raise DataError(f"{path}: cannot read the NPZ archive ({exc})") from None
    except ValueError as exc:  # object arrays need pickle, which we refuse
        raise DataError(
            f"{path}: cannot read the NPZ file without pickle ({exc}); save string columns as "
            "fixed-width unicode arrays (np.asarray(values, dtype=str))"
        ) from None
    with archive:
        columns = {name: archive[name] for name in archive.files}
    if not columns:
        raise DataError(f"{path} is empty: the NPZ file holds no arrays")
    for name, arr in columns.items():
        if arr.dtype.kind == "c":
            raise DataError(
                f"{path}: array '{name}' holds complex numbers; save its real and imaginary "
                "parts as two columns (arr.real, arr.imag)"
            )
        if arr.ndim != 1:
            raise DataError(
                f"{path}: array '{name}' has shape {arr.shape}; a table NPZ needs one 1-D array "
                "per column"
            )
    lengths = {name: arr.shape[0] for name, arr in columns.items()}
    if len(set(lengths.values())) > 1:
        listed = ", ".join(f"'{n}' has {k}" for n, k in lengths.items())
        raise DataError(f"{path}: columns have unequal lengths: {listed} rows")
    return pd.DataFrame(columns)


def read_frame(path: str | Path, encoding: str = "utf-8") -> pd.DataFrame:
    """Read a user table (``.csv``, ``.csv.gz``, ``.parquet`` or ``.npz``) into a DataFrame.

    CSV: a header row of distinct names, text in ``encoding`` (default UTF-8); empty cells (and
    pandas' usual ``NA``/``NaN`` spellings) are missing. NPZ: one 1-D array per column, all of
    the same length.
    """
    path = Path(path)
    ext = _extension(path)
    if ext not in TABLE_EXTENSIONS:
        raise DataError(
            f"{path}: unsupported file extension '{ext}'; use one of {', '.join(TABLE_EXTENSIONS)}"
        )
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if ext in (".csv", ".csv.gz"):
        try:
            frame = _read_csv(path, encoding)
        except pd.errors.EmptyDataError:
            raise DataError(f"{path} is empty: no header and no rows") from None
        except UnicodeDecodeError as e:
            raise DataError(
                f"{path} is not {encoding} text (byte 0x{e.object[e.start]:02x} at offset "
                f"{e.start}); save it as UTF-8, or give its encoding, e.g. encoding = "
                f"'latin-1' in [data]"
            ) from None
        except LookupError:
            raise ConfigError(f"{path}: unknown text encoding {encoding!r}") from None
        except pd.errors.ParserError as e:
            raise DataError(_csv_parse_error(path, e)) from None
    elif ext == ".parquet":
        frame = _read_parquet(path)
    else:
        frame = _read_npz(path)
    if len(frame) == 0:
        raise DataError(
            f"{path} is empty: it has columns ({', '.join(map(str, frame.columns))}) but no rows"
        )
    frame.columns = [str(c) for c in frame.columns]
    return frame


def _csv_parse_error(path: Path, e: Exception) -> str:
    """pandas' tokenizer message as the row to fix (its line numbers count the header as 1)."""
    found = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(e))
    if found:
        expected, line, saw = found.groups()
        return (
            f"{path}: line {line} has {saw} fields where the header has {expected}; fix that "
            "row (a value that holds a comma needs double quotes)"
        )
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return f"{path} is not a CSV table nas-mtl can read ({first}); check its quoting and rows"


def _read_parquet(path: Path) -> pd.DataFrame:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise ConfigError(
            "reading Parquet needs pyarrow; install it with pip install 'nas-mtl[parquet]'"
        ) from None
    if _head(path, 4) != b"PAR1":
        raise DataError(
            f"{path} is not a Parquet file (it does not start with Parquet's magic bytes); "
            "give a .csv name to a CSV text, or write the table with DataFrame.to_parquet"
        )
    try:
        return pd.read_parquet(path)
    except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"{path}: cannot read the Parquet file ({first})") from None


def _float32_is_enough(column: pd.Series) -> bool:
    """Whether float32 keeps what matters of a numeric column, judged on a sample of rows.

    Integers must stay exact (below 2^24); other numbers must vary by at least 1e-3 of their
    magnitude, so that standardizing them keeps about four significant digits (a Unix
    timestamp, large and nearly constant, stays float64).
    """
    if not (ptypes.is_float_dtype(column) or ptypes.is_integer_dtype(column)):
        return False
    values = column.dropna().to_numpy(dtype=np.float64)
    values = values[np.isfinite(values)]  # an inf is the feature checks' to report
    if values.size == 0:
        return True
    magnitude = float(np.abs(values).max())
    if ptypes.is_integer_dtype(column):
        return magnitude < 2**24
    return magnitude == 0.0 or float(values.max() - values.min()) >= 1e-3 * magnitude


def _read_csv(
    path: Path, encoding: str = "utf-8", sample_rows: int = 2000, chunk_rows: int = 65536
) -> pd.DataFrame:
    """A CSV read in chunks, with float32 columns where a sample of rows shows plain numbers.

    Parsing a whole file at once as float64 held its numbers several times over (a 1e6 × 50
    table of 200 MB as float32 peaked at 6.8× that; docs/data.md, "Memory"). Chunks of float32
    columns are joined one column at a time, so the peak stays near the table itself. Columns
    that look like numbers in the sample but hold text further down fall back to a plain read:
    nothing is lost, only memory.
    """
    header = [str(h) for h in pd.read_csv(path, nrows=1, header=None, encoding=encoding).iloc[0]]
    repeated = sorted({h for h in header if header.count(h) > 1})
    if repeated:
        raise DataError(
            f"{path}: columns appear more than once: {', '.join(repeated)}; rename them"
        )
    sample = pd.read_csv(path, nrows=sample_rows, encoding=encoding)
    numeric = {c: "float32" for c in sample.columns if _float32_is_enough(sample[c])}
    try:
        parts: dict[str, list[np.ndarray]] = {str(c): [] for c in sample.columns}
        with warnings.catch_warnings():  # a value beyond float32 becomes inf, which the
            warnings.simplefilter("ignore", RuntimeWarning)  # feature checks then report
            reader = pd.read_csv(path, dtype=numeric, chunksize=chunk_rows, encoding=encoding)
            for chunk in reader:
                for c in chunk.columns:
                    parts[str(c)].append(chunk[c].to_numpy())
    except (ValueError, OverflowError):
        return pd.read_csv(path, encoding=encoding)
    columns = {}
    for c in list(parts):
        pieces = parts.pop(c)
        columns[c] = np.concatenate(pieces) if pieces else np.empty(0)
        del pieces
    return pd.DataFrame(columns, copy=False)
