"""Front-end assets the console serves itself (no CDN): Apache ECharts, from the npm registry.

``python -m minigate.console.assets`` (run by ``make install``/``make test``) downloads the pinned package
tarball, checks it against the registry's published SHA-512 integrity value (the ``integrity`` field of a
``package-lock.json``), and writes ``dist/echarts.min.js`` and its licence into ``static/vendor/``. Nothing is
fetched when the file is already there and matches the recorded digest. The console still works without it:
pages say that charts are unavailable and show their numbers as tables.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import sys
import tarfile
import urllib.request
from pathlib import Path

__all__ = ["ECHARTS", "ensure", "vendor_dir"]

#: package, version, npm ``integrity`` (SHA-512 of the tarball), files taken from it
ECHARTS = {
    "name": "echarts",
    "version": "6.1.0",
    "integrity": "sha512-q0yaFPggC9FUdsWH4blavRWFmxdrIodbkoKNAjJudAI6CA9gNPxHtV2RcZNEepZVlk4yvBYkOkbk6HIVpIyHZA==",
    "files": {"package/dist/echarts.min.js": "echarts.min.js", "package/LICENSE": "echarts.LICENSE.txt"},
}
_REGISTRY = os.environ.get("NPM_CONFIG_REGISTRY", "https://registry.npmjs.org").rstrip("/")


def vendor_dir() -> Path:
    return Path(__file__).parent / "static" / "vendor"


def _stamp(directory: Path) -> Path:
    return directory / f".{ECHARTS['name']}-{ECHARTS['version']}"


def ensure(directory: Path | None = None, *, quiet: bool = False) -> Path:
    """Make sure the pinned ECharts is in ``directory``; download and verify it if not. Returns the script path."""
    directory = directory or vendor_dir()
    target = directory / "echarts.min.js"
    stamp = _stamp(directory)
    if target.exists() and stamp.exists() and stamp.read_text().strip() == hashlib.sha256(
            target.read_bytes()).hexdigest():
        return target
    name, version = ECHARTS["name"], ECHARTS["version"]
    url = f"{_REGISTRY}/{name}/-/{name}-{version}.tgz"
    if not quiet:
        sys.stderr.write(f"fetching {name}@{version} from {url}\n")
    with urllib.request.urlopen(url, timeout=60) as response:          # noqa: S310 (a fixed https address)
        blob = response.read()
    algorithm, _, expected = str(ECHARTS["integrity"]).partition("-")
    if base64.b64encode(hashlib.new(algorithm, blob).digest()).decode() != expected:
        raise RuntimeError(f"{name}@{version}: the download does not match the pinned integrity value")
    directory.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = ECHARTS["files"]  # type: ignore[assignment]
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
        for member, out in files.items():
            extracted = tar.extractfile(member)
            if extracted is None:
                raise RuntimeError(f"{name}@{version}: {member} missing from the package")
            (directory / out).write_bytes(extracted.read())
    stamp.write_text(hashlib.sha256(target.read_bytes()).hexdigest())
    return target


if __name__ == "__main__":
    sys.stdout.write(f"{ensure()}\n")
