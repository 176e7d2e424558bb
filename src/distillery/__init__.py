"""distillery: self-hosted LLM distillation."""

__version__ = "0.1.0"
