"""The gateway's ``/v1/embeddings``: the local all-MiniLM-L6-v2 as ``all-minilm-l6-v2``, any other
model proxied. Nothing is recorded: an embedding is not an exchange a student learns from.

A model listed by an ``openai`` or ``azure`` provider is forwarded there as the client sent it
(the upstream judges its own parameters). ``all-minilm-l6-v2`` is answered in-process by the
embedder the semantic graders use (``distillery.embedders.default_embedder``, loaded once):

- ``input``: a string or an array of strings (at most 2,048, none empty, at most 300,000 tokens in
  all). Token arrays are a 400: the ids of another tokenizer mean nothing to this model.
- Each text is embedded from its first 254 word pieces (the model's 256 with its two markers), as
  sentence-transformers cuts it; ``usage.prompt_tokens`` counts the word pieces embedded.
- Vectors are L2-normalized, 384 floats. ``dimensions`` is accepted only when it is 384: the model
  was not trained for shortened vectors (OpenAI's text-embedding-3 models were), so cutting them
  would quietly lose quality. Any other value is a 400 naming ``dimensions``.
- ``encoding_format: "base64"``: little-endian float32s, as OpenAI sends them.
- The CPU work runs on a thread (``asyncio.to_thread``), one request at a time.
"""

from __future__ import annotations

import asyncio
import importlib.util
import threading
from collections.abc import Sequence
from typing import Any

from distillery.embedders import MINILM_PACKAGE, LocalMiniLMEmbedder, default_embedder
from distillery.errors import InvalidRequestError
from distillery.providers.base import ModelInfo
from distillery.providers.registry import ProviderRegistry
from distillery.wire import embeddings as wire
from distillery.wire.params import parse_params

LOCAL_MODEL = "all-minilm-l6-v2"
LOCAL_OWNER = "distillery"


def local_model_installed() -> bool:
    """Whether the package that ships all-MiniLM-L6-v2 is installed (nothing is imported)."""
    return importlib.util.find_spec(MINILM_PACKAGE) is not None


class EmbeddingsService:
    def __init__(
        self, providers: ProviderRegistry, embedder: LocalMiniLMEmbedder | None = None
    ) -> None:
        self.providers = providers
        self._embedder = embedder
        self._lock = threading.Lock()  # one local request at a time (the tokenizer is not
        # safe to share between threads, and the CPUs are shared anyway)

    @property
    def embedder(self) -> LocalMiniLMEmbedder:
        return self._embedder or default_embedder()

    def models(self) -> list[ModelInfo]:
        """The models answered here (not by a provider): ``all-minilm-l6-v2`` when installed."""
        if not local_model_installed():
            return []
        return [ModelInfo(id=LOCAL_MODEL, owned_by=LOCAL_OWNER)]

    def serves_locally(self, model: str) -> bool:
        return model == LOCAL_MODEL and local_model_installed()

    async def create(self, body: Any) -> dict[str, Any]:
        """OpenAI's ``CreateEmbeddingResponse`` for an embeddings request body."""
        params = parse_params(wire.EmbeddingCreateParams, body)
        inputs = params.inputs()
        dimensions = params.checked_dimensions()
        if params.model == LOCAL_MODEL:
            return await self._local(params, inputs, dimensions)
        provider = self.providers.route_embeddings(params.model)
        return await provider.embeddings(body)

    async def _local(
        self, params: wire.EmbeddingCreateParams, inputs: wire.Inputs, dimensions: int | None
    ) -> dict[str, Any]:
        unknown = params.unknown_fields()
        if unknown:
            raise InvalidRequestError(
                f"Unrecognized request argument supplied: {unknown[0]}",
                param=unknown[0],
                code="unknown_parameter",
            )
        texts = [item for item in inputs if isinstance(item, str)]
        if len(texts) != len(inputs):
            raise InvalidRequestError(
                f"The model `{LOCAL_MODEL}` embeds text: pass 'input' as a string or an array "
                "of strings (token arrays are ids of another tokenizer).",
                param="input",
                code="invalid_type",
            )
        vectors, tokens = await asyncio.to_thread(self._embed, texts, dimensions)
        return wire.response(
            vectors, model=LOCAL_MODEL, tokens=tokens, encoding=params.encoding_format
        )

    def _embed(self, texts: Sequence[str], dimensions: int | None) -> tuple[list[list[float]], int]:
        with self._lock:
            embedder = self.embedder
            size = embedder.dimension
            if dimensions is not None and dimensions != size:
                raise InvalidRequestError(
                    f"The model `{LOCAL_MODEL}` makes {size}-dimensional embeddings and does "
                    f"not support 'dimensions' = {dimensions} (only {size}).",
                    param="dimensions",
                    code="invalid_value",
                )
            tokens = sum(embedder.count_tokens(texts))
            if tokens > wire.MAX_TOTAL_TOKENS:
                raise InvalidRequestError(
                    f"'input' holds {tokens} tokens: at most {wire.MAX_TOTAL_TOKENS} tokens "
                    "summed over all inputs of a request.",
                    param="input",
                    code="max_tokens_per_request",
                )
            return embedder.embed(texts), tokens
