"""Downloads against a local HTTP server started here: digests verified, mismatches refused,
the first download's digest recorded and enforced afterwards. Nothing reaches the network."""

from __future__ import annotations

import functools
import hashlib
import json
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest

from attnzoo.cli import main
from attnzoo.weights.fetch import fetch_release
from attnzoo.weights.releases import RELEASES, Release


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


@pytest.fixture
def server(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(_Quiet, directory=str(served))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _release(url: str, **kwargs) -> Release:
    return Release("test", "resnet18", None, "torchvision", url, "model.pth", None, **kwargs)


def test_published_digest_is_verified(server, tmp_path):
    served, base = server
    payload = b"weights" * 1000
    (served / "model.pth").write_bytes(payload)
    digest = hashlib.sha256(payload).hexdigest()
    path, how = fetch_release(_release(f"{base}/model.pth", sha256=digest), tmp_path / "d")
    assert path.read_bytes() == payload and how == "published"
    path, how = fetch_release(
        _release(f"{base}/model.pth", sha256_prefix=digest[:8]), tmp_path / "e"
    )
    assert path.read_bytes() == payload and how == "published prefix"


def test_mismatch_is_refused_and_nothing_is_kept(server, tmp_path):
    served, base = server
    (served / "model.pth").write_bytes(b"tampered")
    dest = tmp_path / "d"
    with pytest.raises(ValueError, match=r"model\.pth: SHA-256 [0-9a-f]{64} does not match"):
        fetch_release(_release(f"{base}/model.pth", sha256="0" * 64), dest)
    assert list(dest.iterdir()) == []


def test_first_download_digest_is_recorded_then_enforced(server, tmp_path):
    served, base = server
    dest = tmp_path / "d"
    (served / "model.pth").write_bytes(b"first")
    release = _release(f"{base}/model.pth")
    path, how = fetch_release(release, dest)
    assert how == "first download: digest recorded"
    recorded = json.loads((dest / "hashes.json").read_text())
    assert recorded == {release.url: hashlib.sha256(b"first").hexdigest()}
    assert fetch_release(release, dest)[1] == "recorded at the first download (already present)"
    path.unlink()
    (served / "model.pth").write_bytes(b"changed upstream")
    with pytest.raises(ValueError, match="recorded at the first download"):
        fetch_release(release, dest)
    assert not path.exists()


def test_missing_file_on_the_server(server, tmp_path):
    _, base = server
    with pytest.raises(ValueError, match=r"absent\.pth: download failed: HTTP Error 404"):
        fetch_release(_release(f"{base}/absent.pth"), tmp_path)


def test_sharing_page_releases_are_not_fetched(tmp_path):
    with pytest.raises(
        ValueError, match=r"download RESNET50_CBAM_new_name_wrap\.pth there by hand"
    ):
        fetch_release(RELEASES["cbam-resnet50"], tmp_path)


def test_weights_list_and_unknown_release(capsys):
    assert main(["weights", "list"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in RELEASES)
    with pytest.raises(SystemExit):
        main(["weights", "fetch", "no-such-release"])
    assert "unknown release 'no-such-release'" in capsys.readouterr().err
