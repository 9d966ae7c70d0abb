"""Download public datasets into a local cache: atomic writes, clear errors when offline.

``fetch`` returns the cached copy when there is one, so a machine without internet works as long
as the files were put in the cache by hand (the error message says where).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path, PurePosixPath

from sketchlab.data.paths import cache_root
from sketchlab.fileio import atomic_open

QUICKDRAW_BASE = "https://storage.googleapis.com/quickdraw_dataset"
QUICKDRAW_FORMATS = {
    "sketchrnn": ("sketchrnn", ".npz"),
    "simplified": ("full/simplified", ".ndjson"),
    "raw": ("full/raw", ".ndjson"),
}
QUICKDRAW_CATEGORIES = "https://github.com/googlecreativelab/quickdraw-dataset/blob/master/categories.txt"

_SKETCH_RNN_REPO = "https://github.com/hardmaru/sketch-rnn-datasets/raw/master"
SKETCH_RNN_DATASETS = {
    "aaron_sheep": f"{_SKETCH_RNN_REPO}/aaron_sheep/aaron_sheep.npz",
    "omniglot": f"{_SKETCH_RNN_REPO}/omniglot/omniglot.npz",
    "kanji": f"{_SKETCH_RNN_REPO}/kanji/kanji.rdp100.npz",
    "short_kanji": f"{_SKETCH_RNN_REPO}/kanji/short_kanji.npz",
}

#: sha256 of the known public files (checked after each download): the files in ../shared/data are byte-identical
#: copies of hardmaru/sketch-rnn-datasets at commit 7c854de.
KNOWN_SHA256 = {
    SKETCH_RNN_DATASETS["aaron_sheep"]: "65f8e51e43587661798ac137a204c9e049e0d11dcd50cba372ae3ca32de8b54c",
    SKETCH_RNN_DATASETS["omniglot"]: "bd5277621a8c577919491dfa729a59a8b5c216cff9e4fda9cef532db29f120c7",
    SKETCH_RNN_DATASETS["kanji"]: "d625d310f3132ab3b7fa9bb574d8c8201e18a51d92fdcd4b4f783b5a7730d58a",
    SKETCH_RNN_DATASETS["short_kanji"]: "f6855ba03d58f44830499dd98e7cb99f46c970651f4f16f2d886398f34709914",
}

_CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """A download failed; ``status`` is the HTTP status when the server answered with an error."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


def offline() -> bool:
    """Whether ``SKETCHLAB_OFFLINE`` asks to never touch the network."""
    return os.environ.get("SKETCHLAB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _cache_path(url: str, filename: str | None, cache_dir: str | os.PathLike | None) -> Path:
    root = Path(cache_dir).expanduser() if cache_dir is not None else cache_root()
    if filename is None:
        filename = urllib.parse.unquote(PurePosixPath(urllib.parse.urlparse(url).path).name)
    relative = PurePosixPath(filename)
    if not filename or relative.is_absolute() or ".." in relative.parts:
        raise ValueError(f"cache filename must be a relative path inside the cache, got {filename!r} for {url}")
    return root.joinpath(*relative.parts)


def _failure(url: str, target: Path, reason: str, status: int | None = None) -> DownloadError:
    return DownloadError(
        f"could not download {url}: {reason}. The machine may be offline or the server unreachable. "
        f"To work without the network, download the file elsewhere and put it at {target} "
        f"(the cache folder is set by cache_dir or $SKETCHLAB_CACHE).",
        status=status,
    )


def fetch(
    url: str,
    filename: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    timeout: float = 60.0,
    sha256: str | None = None,
) -> Path:
    """The cached copy of ``url``, downloaded first if missing.

    ``filename`` (default: the last part of the URL) is relative to ``cache_dir`` (default
    ``$SKETCHLAB_CACHE`` or ``~/.cache/sketchlab``) and may contain subfolders. The download goes to
    a temporary file that replaces the target only once complete, so a failure leaves nothing behind.
    Raises :class:`DownloadError` on any network failure or when ``SKETCHLAB_OFFLINE=1``, and when the
    download's sha256 differs from ``sha256`` (default: :data:`KNOWN_SHA256` for known files).
    """
    sha256 = sha256 or KNOWN_SHA256.get(url)
    target = _cache_path(url, filename, cache_dir)
    if target.is_file():
        return target
    if offline():
        raise _failure(url, target, "SKETCHLAB_OFFLINE is set, so the network is not used")
    try:
        with atomic_open(target, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            expected = response.headers.get("Content-Length")
            shutil.copyfileobj(response, out, _CHUNK)
            received = out.tell()
            # urllib does not always notice a connection closed early; the length header does.
            if expected is not None and expected.isdigit() and received != int(expected):
                raise _failure(url, target, f"connection closed after {received} of {expected} bytes")
            if sha256 is not None:
                out.flush()
                with open(out.name, "rb") as written:
                    digest = hashlib.file_digest(written, "sha256").hexdigest()
                if digest != sha256:
                    raise DownloadError(f"download of {url} has sha256 {digest}, expected {sha256}: the file "
                                        "changed upstream or was corrupted; nothing was saved")
    except urllib.error.HTTPError as exc:
        raise _failure(url, target, f"HTTP {exc.code} {exc.reason}", status=exc.code) from exc
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise _failure(url, target, f"{type(exc).__name__}: {reason}") from exc
    return target


def _quickdraw_format(fmt: str) -> tuple[str, str]:
    if fmt not in QUICKDRAW_FORMATS:
        raise ValueError(f"unknown QuickDraw format {fmt!r}; choose one of {', '.join(QUICKDRAW_FORMATS)}")
    return QUICKDRAW_FORMATS[fmt]


def _check_class_name(name: str) -> str:
    if not name or not name.strip() or "/" in name or name in (".", ".."):
        raise ValueError(f"invalid QuickDraw class name {name!r}")
    return name


def quickdraw_url(name: str, fmt: str) -> str:
    """URL of one QuickDraw class file: ``sketchrnn`` (per-class npz), ``simplified`` or ``raw`` ndjson."""
    folder, suffix = _quickdraw_format(fmt)
    return f"{QUICKDRAW_BASE}/{folder}/{urllib.parse.quote(_check_class_name(name))}{suffix}"


def fetch_quickdraw(name: str, fmt: str = "sketchrnn", cache_dir: str | os.PathLike | None = None) -> Path:
    """Download (or find in the cache) one QuickDraw class file, cached as ``quickdraw/<fmt>/<name><ext>``.

    Raw and simplified files share a name on the server, hence the per-format cache folders.
    """
    url = quickdraw_url(name, fmt)
    filename = f"quickdraw/{fmt}/{name}{QUICKDRAW_FORMATS[fmt][1]}"
    try:
        return fetch(url, filename=filename, cache_dir=cache_dir)
    except DownloadError as exc:
        # Cloud Storage answers 403 instead of 404 for missing objects in buckets that cannot be listed.
        if exc.status in (403, 404):
            raise ValueError(
                f"unknown QuickDraw class {name!r}: the server has no {url} (HTTP {exc.status}). "
                f"Class names are case- and space-sensitive; see {QUICKDRAW_CATEGORIES}"
            ) from exc
        raise
