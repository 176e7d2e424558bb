"""A vLLM or SGLang server that serves base models and, through runtime LoRA loading, the
students fine-tuned on them.

The base models go through :class:`~distillery.providers.openai_compatible.OpenAICompatibleProvider`
unchanged. A fine-tuned ``ft:`` model whose base model this provider serves is *published*: its
PEFT adapter folder (what the local trainer writes) is copied into ``adapter_dir/<lora name>``
(:func:`publish_adapter`, called when the job succeeds and at start-up) and registered with the
server's runtime adapter API on first use (vLLM: ``POST /v1/load_lora_adapter`` and
``/v1/unload_lora_adapter``; SGLang: ``POST /load_lora_adapter`` and ``/unload_lora_adapter``).
A request for the ``ft:`` id is then sent with ``model`` = the adapter's name, and the answer
(non-streamed, or each streamed event) names the ``ft:`` id again.

At most ``max_adapters`` adapters are loaded at once (the server's slots); loading one more
unloads the least recently used one, preferring one that no request is using. An adapter the
server no longer knows (restarted, or unloaded by another distillery process) is loaded again
once. Bad input comes back as OpenAI errors on the request, and the base models and other
adapters keep working: a server without runtime LoRA loading (404 on the load endpoint) or an
unreachable one is a 502, an adapter whose base model the server does not serve, or one the server
refuses, is a 400 with ``param: "model"``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import shutil
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any, Literal

import aiohttp
import orjson
from pydantic import Field

from distillery.errors import DistilleryError, InvalidRequestError, NotFoundError, UpstreamError
from distillery.providers.base import FineTune, FineTuneLookup, ProviderKind
from distillery.providers.openai_compatible import (
    OpenAICompatibleProvider,
    OpenAIProviderConfig,
    _env_proxy,
)
from distillery.security.redact import redact

log = logging.getLogger(__name__)

_ADAPTER_CONFIG = "adapter_config.json"


def lora_name(model_id: str) -> str:
    """The adapter's name on the server and its folder in ``adapter_dir``: ``model_id`` with
    everything but letters, digits, ``.``, ``_`` and ``-`` replaced, plus a short hash of the id
    (so two ids never share a name)."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", model_id).strip("-.") or "adapter"
    digest = hashlib.sha256(model_id.encode()).hexdigest()[:8]
    return f"{slug[:100]}-{digest}"


def publish_adapter(providers: Iterable[object], model: FineTune) -> None:
    """Copy ``model``'s adapter to every ``vllm`` provider that serves its base model (logged,
    never raised: a server that cannot take it fails that model's requests, nothing else)."""
    for provider in providers:
        if isinstance(provider, VLLMProvider) and provider.serves_base(model.base_model):
            try:
                provider.publish(model)
            except Exception:
                log.exception("could not publish %s to provider %r", model.id, provider.name)


class VLLMProviderConfig(OpenAIProviderConfig):
    """``kind = "vllm"``: a vLLM or SGLang server with runtime LoRA loading."""

    KIND = "vllm"
    adapter_dir: str = Field(
        description="A folder the `vllm` server can read (a shared volume): students' LoRA "
        "adapters are copied there and loaded from there.",
    )
    flavor: Literal["vllm", "sglang"] = Field(
        default="vllm",
        description="The runtime adapter API of the server: `vllm` (`/v1/load_lora_adapter`) or "
        "`sglang` (`/load_lora_adapter`).",
    )
    max_adapters: int = Field(
        default=8,
        ge=1,
        description="Adapters the server holds at once (its `--max-loras`); the least recently "
        "used one is unloaded to make room.",
    )


class VLLMProvider(OpenAICompatibleProvider):
    kind = "vllm"
    config: VLLMProviderConfig
    # a vLLM server knows an adapter by its own name and its /v1/responses differs by version:
    # Responses requests are answered through chat completions (as for a local model)
    responses_api = False

    def __init__(
        self,
        name: str,
        config: VLLMProviderConfig,
        *,
        timeout_s: float | None = None,
        adapters: FineTuneLookup | None = None,
    ) -> None:
        super().__init__(name, config, timeout_s=timeout_s)
        self.adapter_dir = Path(config.adapter_dir).expanduser()
        self.max_adapters = config.max_adapters
        self._lookup = adapters
        self._known: dict[str, FineTune] = {}  # fine-tunes never change: cache the hits
        self._elsewhere: set[str] = set()  # full fine-tunes (not adapters): never here
        self._loaded: OrderedDict[str, str] = OrderedDict()  # ft id -> lora name, LRU first
        self._busy: Counter[str] = Counter()  # requests in flight per ft id
        self._retired: set[str] = set()  # deleted fine-tunes still to unload
        self._server_models: set[str] | None = None
        self._lock: asyncio.Lock | None = None
        self._lock_loop: asyncio.AbstractEventLoop | None = None
        root = config.base_url.rstrip("/").removesuffix("/v1")
        prefix = f"{root}/v1" if config.flavor == "vllm" else root
        self._load_url = f"{prefix}/load_lora_adapter"
        self._unload_url = f"{prefix}/unload_lora_adapter"

    # -- routing ---------------------------------------------------------------------------------

    def serves_base(self, model: str) -> bool:
        return model in self._models

    def serves(self, model: str) -> bool:
        return model in self._models or self._fine_tune(model) is not None

    def loaded_adapters(self) -> list[str]:
        """The ``ft:`` ids loaded on the server, least recently used first."""
        return list(self._loaded)

    def _fine_tune(self, model: str) -> FineTune | None:
        """The published fine-tune ``model`` (a PEFT adapter on one of this provider's bases)."""
        if not model.startswith("ft:") or model in self._retired:
            return None
        found = self._known.get(model)
        if found is None and self._lookup is not None and model not in self._elsewhere:
            found = self._lookup(model)
            if found is None or found.adapter_path is None:
                return None
            if not (Path(found.adapter_path) / _ADAPTER_CONFIG).is_file():
                self._elsewhere.add(model)  # a whole fine-tuned model: served by `local`
                return None
            self._known[model] = found
        return found if found is not None and self.serves_base(found.base_model) else None

    def unregister_adapter(self, model_id: str) -> None:
        """Stop serving ``model_id`` (deleted): unloaded from the server at the next request."""
        self._known.pop(model_id, None)
        if model_id in self._loaded:
            self._retired.add(model_id)
        shutil.rmtree(self.adapter_dir / lora_name(model_id), ignore_errors=True)

    # -- publishing ------------------------------------------------------------------------------

    def publish(self, model: FineTune) -> Path:
        """Copy ``model``'s adapter folder to ``adapter_dir/<lora name>`` (once; atomically)."""
        if model.adapter_path is None:
            raise InvalidRequestError(
                f"The model `{model.id}` has no LoRA adapter to publish.", param="model"
            )
        source = Path(model.adapter_path)
        if not (source / _ADAPTER_CONFIG).is_file():
            raise InvalidRequestError(
                f"The model `{model.id}` is not a PEFT LoRA adapter ({source} has no "
                f"{_ADAPTER_CONFIG}): only adapters can be loaded by provider {self.name!r}.",
                param="model",
                code="adapter_not_publishable",
            )
        target = self.adapter_dir / lora_name(model.id)
        if (target / _ADAPTER_CONFIG).is_file():
            return target
        self.adapter_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.adapter_dir / f".{target.name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(source, tmp, ignore=shutil.ignore_patterns("checkpoint-*", "optimizer*"))
        try:
            tmp.rename(target)
        except OSError:  # another process published it meanwhile
            shutil.rmtree(tmp, ignore_errors=True)
            if not (target / _ADAPTER_CONFIG).is_file():
                raise
        log.info("published %s to %s", model.id, target)
        return target

    # -- the server's runtime adapter API --------------------------------------------------------

    def _guard(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock_loop is not loop:
            self._lock, self._lock_loop = asyncio.Lock(), loop
        return self._lock

    async def _admin(self, url: str, body: dict[str, Any]) -> tuple[int, bytes]:
        try:
            response = await self._post(url, orjson.dumps(body))
            try:
                return response.status, self._scrub(await response.read())
            finally:
                response.release()
        except TimeoutError as exc:
            raise UpstreamError(f"provider {self.name!r} timed out on {url}: {exc!r}") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamError(
                f"provider {self.name!r} is unreachable ({url}): {exc!r}",
                code="upstream_unreachable",
            ) from exc

    async def _server_bases(self) -> set[str]:
        """The base models the server says it serves (``GET /models``: ids without a ``parent``,
        and their ``root``), asked once."""
        if self._server_models is not None:
            return self._server_models
        url = self.url("", "models")
        try:
            async with self._client().get(url, proxy=_env_proxy(url)) as response:
                status, content = response.status, self._scrub(await response.read())
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise UpstreamError(
                f"provider {self.name!r} is unreachable ({url}): {exc!r}",
                code="upstream_unreachable",
            ) from exc
        if status >= 400:
            raise UpstreamError(f"provider {self.name!r} answered HTTP {status} on {url}")
        try:
            data = orjson.loads(content).get("data") or []
        except (orjson.JSONDecodeError, AttributeError) as exc:
            raise UpstreamError(f"provider {self.name!r} returned invalid JSON on {url}") from exc
        bases: set[str] = set()
        for entry in data:
            if isinstance(entry, dict) and not entry.get("parent"):
                bases.update(str(entry[k]) for k in ("id", "root") if entry.get(k))
        self._server_models = bases
        return bases

    async def _load(self, model: FineTune, name: str) -> None:
        bases = await self._server_bases()
        if model.base_model not in bases:
            raise InvalidRequestError(
                f"The model `{model.id}` is a LoRA adapter of `{model.base_model}`, but the "
                f"server of provider {self.name!r} serves {sorted(bases)}: an adapter runs only "
                "on the base model it was trained on.",
                param="model",
                code="adapter_base_mismatch",
            )
        path = await asyncio.to_thread(self.publish, model)
        status, content = await self._admin(
            self._load_url, {"lora_name": name, "lora_path": str(path)}
        )
        message = _message(content)
        if status == 404:
            raise UpstreamError(
                f"provider {self.name!r} has no runtime LoRA loading (HTTP 404 on "
                f"{self._load_url}): start the server with LoRA enabled "
                + (
                    "(vLLM: --enable-lora --max-loras N, VLLM_ALLOW_RUNTIME_LORA_UPDATING=True)"
                    if self.config.flavor == "vllm"
                    else "(SGLang: --enable-lora --max-loras-per-batch N)"
                ),
                code="lora_loading_unavailable",
            )
        if status >= 500:
            raise UpstreamError(
                f"provider {self.name!r} failed to load the adapter of `{model.id}` "
                f"(HTTP {status}): {message}"
            )
        if status >= 400 or _refused(content):
            if "already" in message.lower() and "load" in message.lower():
                return  # loaded by another distillery process: it is there
            raise InvalidRequestError(
                f"provider {self.name!r} refused to load the adapter of `{model.id}` "
                f"(HTTP {status}): {message}",
                param="model",
                code="adapter_load_failed",
            )
        log.info("loaded %s on provider %r as %s", model.id, self.name, name)

    async def _unload(self, model_id: str) -> None:
        name = self._loaded.pop(model_id, None)
        if name is None:
            return
        try:
            status, content = await self._admin(self._unload_url, {"lora_name": name})
        except DistilleryError as exc:
            log.warning("unloading %s from provider %r failed: %s", model_id, self.name, exc)
            return
        if status >= 400 and status != 404:
            log.warning(
                "provider %r answered HTTP %s unloading %s: %s",
                self.name,
                status,
                model_id,
                _message(content),
            )

    async def _ensure_loaded(self, model_id: str) -> str:
        """The adapter name of ``model_id``, loaded on the server (making room LRU first)."""
        name = self._loaded.get(model_id)
        if name is not None and not self._retired:  # loaded: no wait behind another's load
            self._loaded.move_to_end(model_id)
            return name
        async with self._guard():
            for retired in list(self._retired):
                self._retired.discard(retired)
                await self._unload(retired)
            model = self._fine_tune(model_id)
            if model is None:
                raise NotFoundError(
                    f"The model `{model_id}` is not served by provider {self.name!r}.",
                    param="model",
                    code="model_not_found",
                )
            name = self._loaded.get(model_id)
            if name is not None:
                self._loaded.move_to_end(model_id)
                return name
            name = lora_name(model_id)
            while len(self._loaded) >= self.max_adapters:
                idle = [m for m in self._loaded if not self._busy[m]]
                await self._unload(idle[0] if idle else next(iter(self._loaded)))
            await self._load(model, name)
            self._loaded[model_id] = name
            return name

    async def _forget(self, model_id: str) -> None:
        async with self._guard():
            self._loaded.pop(model_id, None)

    # -- calls -----------------------------------------------------------------------------------

    async def create(self, body: dict[str, Any]) -> dict[str, Any]:
        return await self._adapter_call("chat/completions", body)

    async def completions(self, body: dict[str, Any]) -> dict[str, Any]:
        return await self._adapter_call("completions", body)

    def stream(self, body: dict[str, Any]) -> AsyncIterator[bytes]:
        return self._adapter_stream("chat/completions", body)

    def completions_stream(self, body: dict[str, Any]) -> AsyncIterator[bytes]:
        return self._adapter_stream("completions", body)

    async def _adapter_call(self, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
        model = body["model"]
        if model in self._models:
            return await self._call(endpoint, body)
        self._busy[model] += 1
        try:
            for attempt in (0, 1):
                name = await self._ensure_loaded(model)
                try:
                    data = await self._call(endpoint, {**body, "model": name})
                except DistilleryError as exc:
                    if attempt or exc.status != 404:
                        raise
                    await self._forget(model)  # the server lost it: load it again, once
                    continue
                if data.get("model") == name:
                    data["model"] = model
                return data
            raise AssertionError("unreachable")
        finally:
            self._busy[model] -= 1

    async def _adapter_stream(self, endpoint: str, body: dict[str, Any]) -> AsyncIterator[bytes]:
        model = body["model"]
        if model in self._models:
            async for chunk in self._stream(endpoint, body):
                yield chunk
            return
        self._busy[model] += 1
        try:
            for attempt in (0, 1):
                name = await self._ensure_loaded(model)
                upstream = self._stream(endpoint, {**body, "model": name})
                try:
                    first = await anext(upstream)
                except StopAsyncIteration:
                    return
                except DistilleryError as exc:
                    if attempt or exc.status != 404:
                        raise
                    await self._forget(model)
                    continue
                async for chunk in _renamed(first, upstream, name, model):
                    yield chunk
                return
        finally:
            self._busy[model] -= 1


async def _renamed(
    first: bytes, rest: AsyncIterator[bytes], name: str, model: str
) -> AsyncIterator[bytes]:
    """The SSE events with ``"model": "<name>"`` replaced by the ``ft:`` id, event by event."""
    quoted = orjson.dumps(name)
    patterns = (b'"model":' + quoted, b'"model": ' + quoted)
    replacement = b'"model":' + orjson.dumps(model)
    buffer = first

    def rename(event: bytes) -> bytes:
        for pattern in patterns:
            event = event.replace(pattern, replacement)
        return event

    async def chunks() -> AsyncIterator[bytes]:
        yield b""
        async for chunk in rest:
            yield chunk

    async for chunk in chunks():
        buffer += chunk
        end = buffer.rfind(b"\n\n")
        if end < 0:
            continue
        complete, buffer = buffer[: end + 2], buffer[end + 2 :]
        yield rename(complete)
    if buffer:
        yield rename(buffer)


def _refused(content: bytes) -> bool:
    """SGLang answers some failures with ``{"success": false, ...}``."""
    try:
        data = orjson.loads(content)
    except orjson.JSONDecodeError:
        return False
    return isinstance(data, dict) and data.get("success") is False


def _message(content: bytes) -> str:
    """The error message of an admin answer (vLLM's error envelope, SGLang's
    ``error_message``, or the text)."""
    try:
        data = orjson.loads(content)
    except orjson.JSONDecodeError:
        return redact(content[:500].decode("utf-8", "replace").strip())
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict) and err.get("message"):
            return redact(str(err["message"]))
        for key in ("error_message", "message", "detail"):
            if data.get(key):
                return redact(str(data[key]))
        if isinstance(err, str):
            return redact(err)
    return redact(content[:500].decode("utf-8", "replace").strip())


VLLM = ProviderKind(
    kind="vllm",
    config=VLLMProviderConfig,
    build=lambda name, config, context: VLLMProvider(name, config, adapters=context.fine_tunes),
    summary="A vLLM or SGLang server that serves base models and, through runtime LoRA loading, "
    "their students.",
)
