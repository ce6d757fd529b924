"""Fetch the OHIF viewer that the browser tests open dicomflow's DICOMweb with.

OHIF publishes its built viewer (static HTML, JavaScript and WebAssembly, no server side) as
the npm package ``@ohif/app``. This downloads one pinned version from the npm registry with
the standard library (no Node.js needed), checks it against the registry's published SHA-512,
and unpacks its ``dist/`` folder into ``.cache/ohif-app-VERSION/``. A folder already there is
kept, so a second run costs nothing.

    python scripts/fetch_ohif.py            # prints the folder
    python scripts/fetch_ohif.py --check    # exit 1 when it is not there (no download)

``make test`` runs it before the tests; ``tests/network/test_ohif.py`` uses the folder.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

VERSION = "3.13.2"
TARBALL = f"https://registry.npmjs.org/@ohif/app/-/app-{VERSION}.tgz"
#: the registry's ``dist.integrity`` of that version
INTEGRITY = (
    "sha512-WZdxmpmG7rqFgW9ZJLcbgr3XCtLi1KDNPoMaeY5PPe6j4G4f"
    "jEjjkycZM6C6Zk2F87BKxFfpq+jd5xXZB9E8EA=="
)
ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / ".cache" / f"ohif-app-{VERSION}"


def fetch(target: Path = TARGET) -> Path:
    if (target / "index.html").exists():
        return target
    with urllib.request.urlopen(TARBALL, timeout=120) as response:
        data = response.read()
    digest = "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()
    if digest != INTEGRITY:
        raise SystemExit(f"fetch_ohif: {TARBALL} does not match its published SHA-512; not used")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        staging = Path(tmp) / "dist"
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
            members = [m for m in archive.getmembers() if m.name.startswith("package/dist/")]
            for member in members:
                member.name = member.name[len("package/dist/") :]
            archive.extractall(staging, members=members, filter="data")
        if not (staging / "index.html").exists():
            raise SystemExit(f"fetch_ohif: {TARBALL} has no dist/index.html")
        if target.exists():  # a half-made folder from an interrupted run
            shutil.rmtree(target)
        os.rename(staging, target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only say whether it is there")
    args = parser.parse_args(argv)
    if args.check:
        present = (TARGET / "index.html").exists()
        print(TARGET if present else f"missing: {TARGET} (run python scripts/fetch_ohif.py)")
        return 0 if present else 1
    print(fetch())
    return 0


if __name__ == "__main__":
    sys.exit(main())
