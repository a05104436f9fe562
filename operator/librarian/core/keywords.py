"""Keywords and readable names for domains, from their members' text.

Why this exists: a domain is only useful to people if they can tell what it
holds. Class-based TF-IDF (the terms frequent in one domain and rare in the
others) gives keywords; the top keywords give a short unique name. Pure:
scikit-learn's tokenizer and stop words, no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from scipy import sparse
from sklearn.feature_extraction.text import CountVectorizer

TOKEN_PATTERN = r"(?u)\b[a-zA-Z][a-zA-Z0-9+#]{1,}\b"


def class_keywords(
    texts: Sequence[str],
    labels: npt.NDArray[np.int64],
    n_classes: int,
    *,
    top: int = 8,
) -> list[tuple[str, ...]]:
    """The ``top`` most distinctive terms of each class (c-TF-IDF), best first."""
    empty: list[tuple[str, ...]] = [() for _ in range(n_classes)]
    if not texts or not any(t.strip() for t in texts):
        return empty
    vectorizer = CountVectorizer(
        stop_words="english", token_pattern=TOKEN_PATTERN, lowercase=True, min_df=2
    )
    try:
        counts = vectorizer.fit_transform(list(texts))
    except ValueError:  # every token is a stop word or too rare
        return empty
    membership = sparse.csr_matrix(
        (np.ones(len(labels)), (labels, np.arange(len(labels)))), shape=(n_classes, len(labels))
    )
    per_class = np.asarray((membership @ counts).todense(), dtype=np.float64)
    words_per_class = per_class.sum(axis=1, keepdims=True)
    term_frequency = per_class / np.maximum(words_per_class, 1.0)
    average_words = max(float(words_per_class.mean()), 1.0)
    idf = np.log1p(average_words / np.maximum(per_class.sum(axis=0), 1.0))
    scores = term_frequency * idf
    vocabulary = vectorizer.get_feature_names_out()
    result: list[tuple[str, ...]] = []
    for row in scores:
        best = np.argsort(-row, kind="stable")[:top]
        result.append(tuple(str(vocabulary[i]) for i in best if row[i] > 0))
    return result


def domain_names(keywords: Sequence[Sequence[str]], *, words: int = 3) -> list[str]:
    """Short unique names from keywords (``rust-crate-derive``); ``domain-<i>`` without text."""
    names: list[str] = []
    seen: set[str] = set()
    for index, terms in enumerate(keywords):
        base = "-".join(terms[:words]) if terms else f"domain-{index}"
        name, suffix = base, 2
        while name in seen:
            name, suffix = f"{base}-{suffix}", suffix + 1
        seen.add(name)
        names.append(name)
    return names
