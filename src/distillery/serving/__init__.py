"""Serving local models: the ``local`` provider, its batched engine and LoRA adapters.

Importing this package is cheap: torch, transformers, peft and llguidance are imported inside the
functions that use them, on the first request of a model.
"""

from distillery.serving.adapters import AdapterRef
from distillery.serving.engine import EngineStatus
from distillery.serving.local import AdapterResolver, LocalProvider

__all__ = ["AdapterRef", "AdapterResolver", "EngineStatus", "LocalProvider"]
