"""Set, or check, the one version of a release everywhere it is written.

Why this exists: a release has one version, but it is written in several
files that different tools read: the Python package (pyproject), the Helm
chart (``version`` and ``appVersion``, which is also the image tag the chart
deploys), the kustomize manifests' image tag, the Argo CD Application's
pinned revision, the image the guides show, and the CHANGELOG's section. This
script rewrites them all at once, or (``--check``) lists the places that do
not say the version pyproject says.

Usage:
    python tools/set_version.py X.Y.Z          # rewrite every place
    python tools/set_version.py --check        # exit 1 and list the places that disagree
    python tools/set_version.py --print        # print the current version
Add ``--root DIR`` to work on another checkout.
"""

from __future__ import annotations

import argparse
import datetime
import re
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

__all__ = ["SITES", "Site", "current_version", "disagreements", "main", "set_version"]

# Semantic Versioning 2.0.0 (the regular expression semver.org suggests).
SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)
_VERSION = r"[0-9][0-9A-Za-z.+-]*?"
IMAGE = "ghcr.io/qdrant-librarian/qdrant-librarian"


@dataclass(frozen=True)
class Site:
    """One place a version is written: a file and a pattern whose group ``v`` is the version.

    ``count`` is how many matches the file must hold (0: any number, at least one); a
    guide's example (``required=False``) may also be gone, but never says another version.
    """

    path: str
    pattern: str
    count: int = 1
    required: bool = True

    def regex(self) -> re.Pattern[str]:
        return re.compile(self.pattern, re.MULTILINE)


SITES: tuple[Site, ...] = (
    Site("pyproject.toml", rf'^version = "(?P<v>{_VERSION})"$'),
    Site("charts/qdrant-librarian/Chart.yaml", rf"^version: (?P<v>{_VERSION})$"),
    Site("charts/qdrant-librarian/Chart.yaml", rf'^appVersion: "(?P<v>{_VERSION})"$'),
    Site("manifests/base/kustomization.yaml", rf"^    newTag: (?P<v>{_VERSION})$"),
    Site("manifests/base/deployment.yaml", rf"{re.escape(IMAGE)}:(?P<v>{_VERSION})$"),
    Site("manifests/argocd/application.yaml", rf"^    targetRevision: v(?P<v>{_VERSION})$"),
    Site("charts/qdrant-librarian/README.md", rf"{re.escape(IMAGE)}:(?P<v>{_VERSION})$", 0, False),
    Site("README.md", rf"^qdrant-librarian (?P<v>{_VERSION}) is installed in ", 0, False),
    # The guide's release commands and its Argo CD pin.
    Site("README.md", rf"{re.escape(IMAGE)}:(?P<v>{_VERSION})$", 0, False),
    Site("README.md", rf"dist/qdrant-librarian-(?P<v>{_VERSION})\.tgz", 0, False),
    Site("README.md", rf"--version (?P<v>{_VERSION})`", 0, False),
    Site("README.md", rf"(?:git tag|git push origin) v(?P<v>{_VERSION})(?: |$)", 0, False),
    Site("README.md", rf"`targetRevision: v(?P<v>{_VERSION})`", 0, False),
)


def current_version(root: Path) -> str:
    """The version pyproject says: the one every other place must say."""
    data = tomllib.loads((root / "pyproject.toml").read_text())
    return str(data["project"]["version"])


def _found(root: Path, site: Site) -> list[str]:
    text = (root / site.path).read_text()
    return [m.group("v") for m in site.regex().finditer(text)]


def disagreements(root: Path, version: str | None = None) -> list[str]:
    """Every place that does not say ``version`` (pyproject's by default), one line each."""
    expected = version or current_version(root)
    problems: list[str] = []
    for site in SITES:
        found = _found(root, site)
        missing = not found and site.required
        if missing or (found and site.count and len(found) != site.count):
            problems.append(f"{site.path}: expected {site.count or 'some'} of /{site.pattern}/")
        problems.extend(f"{site.path}: says {v}, not {expected}" for v in found if v != expected)
    if not _changelog_has(root, expected):
        problems.append(f"CHANGELOG.md: no section '## [{expected}]'")
    return problems


def _changelog_has(root: Path, version: str) -> bool:
    text = (root / "CHANGELOG.md").read_text()
    return re.search(rf"^## \[{re.escape(version)}\]", text, re.MULTILINE) is not None


def _release_changelog(root: Path, version: str, today: datetime.date) -> None:
    """Open ``## [version] - date`` under ``## [Unreleased]``: what was unreleased is released."""
    path = root / "CHANGELOG.md"
    text = path.read_text()
    if _changelog_has(root, version):
        return
    marker = re.search(r"^## \[Unreleased\]\n", text, re.MULTILINE)
    if marker is None:
        raise SystemExit("CHANGELOG.md has no '## [Unreleased]' section to release")
    heading = f"\n## [{version}] - {today.isoformat()}\n"
    path.write_text(text[: marker.end()] + heading + text[marker.end() :])


def set_version(root: Path, version: str, *, today: datetime.date | None = None) -> list[str]:
    """Write ``version`` in every place; returns the files changed."""
    if not SEMVER.match(version):
        raise SystemExit(f"{version!r} is not a semantic version (X.Y.Z, e.g. 0.2.0)")
    changed: list[str] = []
    for site in SITES:
        path = root / site.path
        text = path.read_text()
        if site.required and not _found(root, site):
            raise SystemExit(f"{site.path}: nothing matches /{site.pattern}/; fix it by hand")

        def _replace(match: re.Match[str]) -> str:
            start, end = match.span("v")
            whole = match.group(0)
            offset = match.start()
            return whole[: start - offset] + version + whole[end - offset :]

        updated = site.regex().sub(_replace, text)
        if updated != text:
            path.write_text(updated)
            changed.append(site.path)
    _release_changelog(root, version, today or datetime.date.today())
    changed.append("CHANGELOG.md")
    return sorted(set(changed))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("version", nargs="?", help="the new version, X.Y.Z")
    parser.add_argument("--check", action="store_true", help="list the places that disagree")
    parser.add_argument("--print", action="store_true", help="print the current version")
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1])
    args = parser.parse_args(argv)
    if args.print:
        print(current_version(args.root))
        return 0
    if args.check:
        problems = disagreements(args.root, args.version)
        for problem in problems:
            print(problem, file=sys.stderr)
        return 1 if problems else 0
    if not args.version:
        parser.error("give the new version (X.Y.Z), or --check, or --print")
    for path in set_version(args.root, args.version):
        print(f"updated {path}")
    print(f"version {args.version}: commit, tag v{args.version}, then `make release`")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
