"""Download a known release, only when asked, and check what arrived.

The file's SHA-256 is checked against the published digest (full, or the prefix in the file
name); where nothing is published, the digest of the first download is recorded in
``DEST/hashes.json`` and every later download or re-use of the file must match it. A mismatch
removes nothing that was already verified and raises ValueError naming the URL and both digests.
Downloads go to ``NAME.part`` and are renamed only once verified.
"""

from __future__ import annotations

import hashlib
import json
import os
import urllib.error
import urllib.request
from pathlib import Path

from attnzoo.weights.releases import Release, get_release

__all__ = ["default_dir", "fetch", "fetch_release", "sha256_of"]

_CHUNK = 1 << 20


def default_dir() -> Path:
    """``$ATTNZOO_WEIGHTS``, else ``~/.cache/attnzoo/weights``."""
    env = os.environ.get("ATTNZOO_WEIGHTS")
    return Path(env) if env else Path.home() / ".cache" / "attnzoo" / "weights"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _records(dest: Path) -> dict[str, str]:
    path = dest / "hashes.json"
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error}); fix or delete it") from None
    return {str(k): str(v) for k, v in data.items()}


def _record(dest: Path, url: str, digest: str) -> None:
    records = _records(dest)
    records[url] = digest
    tmp = dest / "hashes.json.tmp"
    tmp.write_text(json.dumps(records, indent=2, sort_keys=True) + "\n")
    tmp.replace(dest / "hashes.json")


def _verify(release: Release, dest: Path, digest: str) -> str:
    """How the digest was checked ("published", "recorded", "first download: recorded")."""
    if release.sha256 is not None:
        expected, how = release.sha256.lower(), "published"
        ok = digest == expected
    elif release.sha256_prefix is not None:
        expected, how = release.sha256_prefix.lower() + "…", "published prefix"
        ok = digest.startswith(release.sha256_prefix.lower())
    else:
        recorded = _records(dest).get(release.url)
        if recorded is None:
            _record(dest, release.url, digest)
            return "first download: digest recorded"
        expected, how, ok = recorded, "recorded at the first download", digest == recorded
    if not ok:
        raise ValueError(
            f"{release.url}: SHA-256 {digest} does not match the {how} digest {expected}"
        )
    return how


def _download(url: str, target: Path, timeout: float) -> None:
    part = target.with_name(target.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, part.open("wb") as out:
            while chunk := response.read(_CHUNK):
                out.write(chunk)
    except (urllib.error.URLError, OSError) as error:
        part.unlink(missing_ok=True)
        raise ValueError(f"{url}: download failed: {error}") from None


def fetch_release(
    release: Release, dest: str | Path | None = None, timeout: float = 60.0
) -> tuple[Path, str]:
    """Download ``release`` into ``dest`` (unless a verified copy is there): (path, check)."""
    if not release.direct:
        raise ValueError(
            f"{release.name} is shared through a page a script cannot download ({release.url}); "
            f"download {release.file_name} there by hand, then pass it with --weights "
            f"({release.note})"
        )
    folder = Path(dest) if dest is not None else default_dir()
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / release.file_name
    if target.is_file():
        try:
            return target, _verify(release, folder, sha256_of(target)) + " (already present)"
        except ValueError as error:
            raise ValueError(f"{error}: {target} is not the release; delete it") from None
    part = target.with_name(target.name + ".part")
    _download(release.url, target, timeout)
    try:
        how = _verify(release, folder, sha256_of(part))
    except ValueError as error:
        part.unlink(missing_ok=True)
        raise ValueError(f"{error}; the download was discarded") from None
    part.replace(target)
    return target, how


def fetch(name: str, dest: str | Path | None = None) -> Path:
    """Download the known release ``name`` (see ``attnzoo weights list``); its path."""
    return fetch_release(get_release(name), dest)[0]
