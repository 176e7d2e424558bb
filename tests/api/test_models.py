"""``/v1/models`` through the openai SDK: ``DELETE`` of fine-tuned models as OpenAI answers it
(``ModelDeleted``; 404 unknown; 403 for a base model), and the deleted model stops being listed
and served."""

from __future__ import annotations

from typing import Any

import openai
import pytest
from openai.types import ModelDeleted

from tests.api.conftest import LOCAL_STUDENT

TUNED = "ft:echo-1:acme:support:AbC123xy"


def _register_remote_fine_tune(api_gateway: Any) -> None:
    """What a finished fine-tuning job on the ``fake`` provider leaves (its on_model hook)."""
    services = api_gateway.services
    services.fine_tuned_models.register(TUNED, base_model="echo-1", provider="fake", job_id=None)
    services.providers.get("fake").add_model(TUNED)


def test_delete_a_fine_tuned_model(api: openai.OpenAI, api_gateway: Any) -> None:
    _register_remote_fine_tune(api_gateway)
    assert TUNED in [m.id for m in api.models.list()]
    answer = api.chat.completions.create(model=TUNED, messages=[{"role": "user", "content": "hi"}])
    assert answer.choices[0].message.content == "echo: hi"

    deleted = api.models.delete(TUNED)
    assert isinstance(deleted, ModelDeleted)
    assert (deleted.id, deleted.object, deleted.deleted) == (TUNED, "model", True)

    assert TUNED not in [m.id for m in api.models.list()]
    with pytest.raises(openai.NotFoundError):
        api.models.retrieve(TUNED)
    with pytest.raises(openai.NotFoundError) as err:
        api.chat.completions.create(model=TUNED, messages=[{"role": "user", "content": "hi"}])
    assert err.value.body["code"] == "model_not_found"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):
        api.models.delete(TUNED)  # a second time: it is gone


def test_delete_unknown_and_base_models(api: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        api.models.delete("ft:echo-1:nobody:nothing:xyz")
    assert missing.value.body["code"] == "model_not_found"  # type: ignore[index]
    for base in ("echo-1", LOCAL_STUDENT, "all-minilm-l6-v2"):
        with pytest.raises(openai.PermissionDeniedError) as denied:
            api.models.delete(base)
        assert denied.value.status_code == 403
        assert base in [m.id for m in api.models.list()]


def test_delete_a_local_adapter(api: openai.OpenAI, api_gateway: Any) -> None:
    """A LoRA student of the local provider: once deleted, the provider's resolver (which
    caches the adapters it found) no longer serves it in this process either."""
    from distillery.errors import NotFoundError

    local_tuned = f"ft:{LOCAL_STUDENT}:acme:router:Zz9Yy8Xx"
    services = api_gateway.services
    services.fine_tuned_models.register(
        local_tuned,
        base_model=LOCAL_STUDENT,
        provider="local",
        adapter_path="/nonexistent/adapter",  # never loaded: only routing is exercised
    )
    assert services.providers.route(local_tuned).name == "local"  # resolved (and cached)
    assert local_tuned in [m.id for m in api.models.list()]

    assert api.models.delete(local_tuned).deleted is True
    assert local_tuned not in [m.id for m in api.models.list()]
    with pytest.raises(NotFoundError):
        services.providers.route(local_tuned)
    with pytest.raises(openai.NotFoundError):
        api.chat.completions.create(model=local_tuned, messages=[{"role": "user", "content": "hi"}])
