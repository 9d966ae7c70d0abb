"""Downloads against a local HTTP server on 127.0.0.1 (the tests never touch the real network)."""

from __future__ import annotations

import importlib.util
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from sketchlab.data import download
from sketchlab.data.download import SKETCH_RNN_DATASETS, DownloadError, fetch, fetch_quickdraw, quickdraw_url

REPO = Path(__file__).resolve().parents[1]
PAYLOAD = bytes(range(256)) * 400  # 100 kB, several read chunks


class _Handler(BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}
    requests: list[str] = []

    def do_GET(self):  # noqa: N802 (http.server's naming)
        self.requests.append(self.path)
        if self.path == "/drop":
            # Promise the whole payload, send half, then hang up.
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            self.wfile.write(PAYLOAD[: len(PAYLOAD) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        body = self.files.get(self.path)
        if body is None:
            self.send_error(404, "Not Found")
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server(monkeypatch):
    """Base URL of a local server serving ``_Handler.files``; ``_Handler.requests`` records each GET."""
    monkeypatch.delenv("SKETCHLAB_OFFLINE", raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    files = {"/data/sheep.npz": PAYLOAD, "/quickdraw/sketchrnn/The%20Eiffel%20Tower.npz": b"eiffel"}
    monkeypatch.setattr(_Handler, "files", files)
    monkeypatch.setattr(_Handler, "requests", [])
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def _closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/data/sheep.npz"


def test_fetch_downloads_once_then_uses_the_cache(server, tmp_path):
    path = fetch(f"{server}/data/sheep.npz", cache_dir=tmp_path)
    assert path == tmp_path / "sheep.npz" and path.read_bytes() == PAYLOAD
    assert fetch(f"{server}/data/sheep.npz", cache_dir=tmp_path) == path
    assert _Handler.requests == ["/data/sheep.npz"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sheep.npz"]


def test_fetch_cache_dir_defaults_to_env(server, tmp_path, monkeypatch):
    monkeypatch.setenv("SKETCHLAB_CACHE", str(tmp_path / "cache"))
    path = fetch(f"{server}/data/sheep.npz", filename="sub/renamed.npz")
    assert path == tmp_path / "cache" / "sub" / "renamed.npz" and path.is_file()


def test_connection_dropped_mid_file_leaves_nothing(server, tmp_path):
    with pytest.raises(DownloadError, match="closed after 51200 of 102400 bytes"):
        fetch(f"{server}/drop", filename="dropped.npz", cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_http_error_is_a_download_error_with_status(server, tmp_path):
    with pytest.raises(DownloadError, match="HTTP 404") as info:
        fetch(f"{server}/nothing.npz", cache_dir=tmp_path)
    assert info.value.status == 404 and isinstance(info.value, RuntimeError)
    assert list(tmp_path.iterdir()) == []


def test_unreachable_server_explains_where_to_put_the_file(tmp_path, monkeypatch):
    monkeypatch.delenv("SKETCHLAB_OFFLINE", raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    url = _closed_port_url()
    with pytest.raises(DownloadError) as info:
        fetch(url, cache_dir=tmp_path)
    message = str(info.value)
    assert url in message and str(tmp_path / "sheep.npz") in message and "offline" in message
    assert list(tmp_path.iterdir()) == []


def test_offline_mode_never_touches_the_network(server, tmp_path, monkeypatch):
    monkeypatch.setenv("SKETCHLAB_OFFLINE", "1")
    with pytest.raises(DownloadError, match="SKETCHLAB_OFFLINE") as info:
        fetch(f"{server}/data/sheep.npz", cache_dir=tmp_path)
    assert str(tmp_path / "sheep.npz") in str(info.value)
    assert _Handler.requests == []
    # A file already in the cache is still served offline.
    (tmp_path / "sheep.npz").write_bytes(b"by hand")
    assert fetch(f"{server}/data/sheep.npz", cache_dir=tmp_path).read_bytes() == b"by hand"
    assert _Handler.requests == []


@pytest.mark.parametrize("filename", ["../escape.npz", "/abs/path.npz"])
def test_fetch_rejects_filenames_outside_the_cache(filename, tmp_path):
    with pytest.raises(ValueError, match="relative path"):
        fetch("http://127.0.0.1/x.npz", filename=filename, cache_dir=tmp_path)


def test_quickdraw_urls():
    base = "https://storage.googleapis.com/quickdraw_dataset"
    assert quickdraw_url("cat", "sketchrnn") == f"{base}/sketchrnn/cat.npz"
    assert quickdraw_url("cat", "simplified") == f"{base}/full/simplified/cat.ndjson"
    assert quickdraw_url("The Eiffel Tower", "raw") == f"{base}/full/raw/The%20Eiffel%20Tower.ndjson"
    with pytest.raises(ValueError, match="sketchrnn, simplified, raw"):
        quickdraw_url("cat", "png")
    for bad in ("", "  ", "a/b", ".."):
        with pytest.raises(ValueError, match="invalid QuickDraw class"):
            quickdraw_url(bad, "raw")


def test_fetch_quickdraw_caches_per_format_and_reports_unknown_classes(server, tmp_path, monkeypatch):
    monkeypatch.setattr(download, "QUICKDRAW_BASE", f"{server}/quickdraw")
    path = fetch_quickdraw("The Eiffel Tower", "sketchrnn", cache_dir=tmp_path)
    assert path == tmp_path / "quickdraw" / "sketchrnn" / "The Eiffel Tower.npz"
    assert path.read_bytes() == b"eiffel"
    with pytest.raises(ValueError, match="unknown QuickDraw class 'unicorn'"):
        fetch_quickdraw("unicorn", "raw", cache_dir=tmp_path)


def test_download_script(server, tmp_path, monkeypatch, capsys):
    spec = importlib.util.spec_from_file_location("download_quickdraw", REPO / "scripts" / "download_quickdraw.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    monkeypatch.setattr(download, "QUICKDRAW_BASE", f"{server}/quickdraw")
    assert script.main(["The Eiffel Tower", "--cache-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "quickdraw" / "sketchrnn" / "The Eiffel Tower.npz")
    assert script.main(["unicorn", "--cache-dir", str(tmp_path)]) == 1
    assert "unknown QuickDraw class" in capsys.readouterr().err


def test_sketch_rnn_dataset_urls_name_the_published_files(shared_data):
    assert set(SKETCH_RNN_DATASETS) == {"aaron_sheep", "omniglot", "kanji", "short_kanji"}
    for url in SKETCH_RNN_DATASETS.values():
        assert url.startswith("https://github.com/hardmaru/sketch-rnn-datasets/raw/master/")
        # ../shared/data holds byte-identical copies of these repository files.
        assert (shared_data / "sketch-rnn-datasets" / url.rsplit("/", 1)[1]).is_file()


def test_a_checksum_mismatch_keeps_nothing_and_a_match_is_kept(server, tmp_path):
    import hashlib

    with pytest.raises(DownloadError, match="sha256 .* expected 00"):
        fetch(f"{server}/data/sheep.npz", cache_dir=tmp_path, sha256="00" * 32)
    assert list(tmp_path.iterdir()) == []
    good = hashlib.sha256(PAYLOAD).hexdigest()
    assert fetch(f"{server}/data/sheep.npz", cache_dir=tmp_path, sha256=good).read_bytes() == PAYLOAD


def test_known_checksums_match_the_published_files(shared_data):
    import hashlib

    from sketchlab.data.download import KNOWN_SHA256, SKETCH_RNN_DATASETS

    files = {"aaron_sheep": "aaron_sheep.npz", "omniglot": "omniglot.npz", "kanji": "kanji.rdp100.npz",
             "short_kanji": "short_kanji.npz"}
    for name, url in SKETCH_RNN_DATASETS.items():
        digest = hashlib.sha256((shared_data / "sketch-rnn-datasets" / files[name]).read_bytes()).hexdigest()
        assert KNOWN_SHA256[url] == digest, name
