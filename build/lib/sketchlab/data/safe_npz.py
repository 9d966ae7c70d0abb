"""Read ``.npz`` datasets without running code: object arrays go through a restricted unpickler.

Sketch datasets store variable-length sketches as object arrays of numpy arrays, which numpy saves with
pickle. ``np.load(allow_pickle=True)`` would then call whatever a crafted file names (``os.system``, ...).
Here a pickle may only rebuild numpy arrays and dtypes; any other global is refused before it is called.
"""

from __future__ import annotations

import codecs
import io
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np


def _allowed_globals() -> dict[tuple[str, str], Any]:
    """The globals an object array of numeric arrays needs, under the module names old and new numpy use."""
    from numpy._core import multiarray

    out: dict[tuple[str, str], Any] = {}
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        out[(module, "_reconstruct")] = multiarray._reconstruct
        out[(module, "scalar")] = multiarray.scalar
    out[("numpy", "ndarray")] = np.ndarray
    out[("numpy", "dtype")] = np.dtype
    out[("_codecs", "encode")] = _latin1_encode
    return out


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    """What protocol-2 pickles written by Python 3 call to store an array's raw bytes; latin1 only."""
    if encoding not in ("latin1", "latin-1"):
        raise UnsafeFileError(f"refusing a pickled _codecs.encode with encoding {encoding!r}")
    return codecs.encode(text, "latin1")


_ALLOWED = _allowed_globals()


class UnsafeFileError(ValueError):
    """A data file asks to run something a dataset never needs."""


class _ArrayUnpickler(pickle.Unpickler):
    def __init__(self, file: Any, source: str) -> None:
        super().__init__(file, encoding="latin1")  # David Ha's datasets are Python 2 pickles
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafeFileError(f"refusing to load {self.source}: it pickles {module}.{name}, which a dataset "
                                  "never needs (only numpy arrays are read from data files)") from None


def _read_member(npz: zipfile.ZipFile, member: str, source: str) -> np.ndarray:
    with npz.open(member) as raw:
        f = io.BytesIO(raw.read())
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
    else:
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
    if not dtype.hasobject:
        f.seek(0)
        return np.lib.format.read_array(f, allow_pickle=False)
    array = _ArrayUnpickler(f, f"{source} (array '{member[:-4]}')").load()
    if not isinstance(array, np.ndarray):
        raise UnsafeFileError(f"{source}: array '{member[:-4]}' holds a {type(array).__name__}, not an array")
    return array


def load_npz(path: str | Path) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` file, object arrays of arrays included, without general unpickling.

    Raises :class:`UnsafeFileError` for a pickle that names anything but numpy arrays/dtypes, and
    ``ValueError`` naming the file for anything that is not a readable npz.
    """
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as npz:
            members = [m for m in npz.namelist() if m.endswith(".npy")]
            if not members:
                raise ValueError("it holds no .npy arrays")
            return {m[:-4]: _read_member(npz, m, str(path)) for m in members}
    except UnsafeFileError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, pickle.UnpicklingError, KeyError, TypeError,
            AttributeError) as exc:
        raise ValueError(f"cannot read dataset {path}: not a valid .npz file ({exc})") from exc
