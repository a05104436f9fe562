"""Build a release: the image, and the Helm chart packaged for an OCI registry.

Why this exists: ``make release`` must produce the same artifacts on any
machine. It checks that every file says the same version
(``tools/set_version.py``), builds the image with Docker or Podman (whichever
is installed; without either it says so and still packages the chart), and
packages the chart with ``helm package`` into ``dist/``. Pushing is the
user's step: it prints the ``docker push`` and ``helm push`` commands.

Usage: python tools/release.py [--registry REGISTRY] [--dist DIR] [--root DIR]
                               [--skip-image | --require-image]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from set_version import IMAGE, current_version, disagreements

__all__ = ["build_image", "container_engine", "main", "package_chart"]

ROOT = Path(__file__).resolve().parents[1]


def container_engine() -> tuple[str | None, str]:
    """The image builder that works here (docker, else podman), or None and why not.

    A client whose daemon does not answer (``docker info`` fails) cannot build either.
    """
    reasons: list[str] = []
    for name in ("docker", "podman"):
        found = shutil.which(name)
        if not found:
            reasons.append(f"{name} is not on PATH")
            continue
        probe = subprocess.run(
            [found, "info"], capture_output=True, text=True, timeout=60, check=False
        )
        if probe.returncode == 0:
            return found, ""
        detail = (probe.stderr.strip().splitlines() or ["no answer"])[-1]
        reasons.append(f"{name} does not answer ({detail})")
    return None, "; ".join(reasons)


def _helm() -> str:
    found = shutil.which("helm") or str(Path(sys.executable).parent / "helm")
    if not Path(found).exists():
        raise SystemExit("helm is not installed: run `make tools` (or put helm on PATH)")
    return found


def package_chart(chart: Path, dist: Path, version: str) -> Path:
    """``helm lint`` then ``helm package`` the chart into ``dist``; returns the archive."""
    helm = _helm()
    dist.mkdir(parents=True, exist_ok=True)
    # The chart refuses to render a router without its key's Secret: lint names one.
    lint = [helm, "lint", "--strict", str(chart)]
    lint += ["--set", "router.auth.apiKeySecret.name=librarian-router-keys"]
    subprocess.run(lint, check=True, stdout=subprocess.DEVNULL)
    subprocess.run([helm, "package", str(chart), "--destination", str(dist)], check=True)
    archive = dist / f"qdrant-librarian-{version}.tgz"
    if not archive.exists():
        raise SystemExit(f"helm package did not write {archive}")
    return archive


def build_image(engine: str, root: Path, image: str, version: str) -> None:
    labels = {
        "org.opencontainers.image.title": "qdrant-librarian",
        "org.opencontainers.image.version": version,
        "org.opencontainers.image.licenses": "Apache-2.0",
    }
    command = [engine, "build", "-t", image]
    for key, value in labels.items():
        command += ["--label", f"{key}={value}"]
    subprocess.run([*command, str(root)], check=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--registry",
        default="ghcr.io/qdrant-librarian",
        help="where the chart goes: helm push ... oci://REGISTRY/charts",
    )
    parser.add_argument("--image", default=IMAGE, help="the image repository (tag: the version)")
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout to release")
    parser.add_argument("--dist", type=Path, help="where the chart goes (default: ROOT/dist)")
    parser.add_argument("--skip-image", action="store_true", help="package the chart only")
    parser.add_argument(
        "--require-image",
        action="store_true",
        help="exit 1 (after packaging the chart) when no image could be built, e.g. in CI",
    )
    args = parser.parse_args(argv)

    root: Path = args.root
    dist: Path = args.dist or root / "dist"
    problems = disagreements(root)
    if problems:
        print("the version is not the same everywhere:", *problems, sep="\n  ", file=sys.stderr)
        print("run: python tools/set_version.py X.Y.Z", file=sys.stderr)
        return 1
    version = current_version(root)
    image = f"{args.image}:{version}"
    print(f"release {version}", flush=True)

    engine: str | None = None
    if args.skip_image:
        print("image: skipped (--skip-image)", flush=True)
    else:
        engine, why = container_engine()
        if engine is None:
            print(
                f"image: NOT BUILT: {why}. Start or install Docker or Podman and run "
                f"`make release` again, or build the Dockerfile elsewhere as {image}",
                flush=True,
            )
        else:
            build_image(engine, root, image, version)
            print(f"image: built {image}", flush=True)

    archive = package_chart(root / "charts" / "qdrant-librarian", dist, version)
    print(f"chart: {archive}")
    print("\nto publish (your step):")
    if engine is not None:
        print(f"  {Path(engine).name} push {image}")
    shown = archive.relative_to(root) if archive.is_relative_to(root) else archive
    print(f"  helm push {shown} oci://{args.registry}/charts")
    print(f"  git tag v{version} && git push origin v{version}   # the Argo CD Application's pin")
    if args.require_image and engine is None:
        print("no image was built and --require-image was given", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
