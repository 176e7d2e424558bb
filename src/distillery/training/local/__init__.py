"""Local fine-tuning of an open student (LoRA or full) in a worker subprocess.

torch, transformers and peft are imported only inside functions here, so importing this package
(as the gateway does, for :class:`LocalBackend`) stays light.
"""

from distillery.training.local.backend import FolderProgress, LocalBackend
from distillery.training.local.config import LocalSFTConfig

__all__ = ["FolderProgress", "LocalBackend", "LocalSFTConfig"]
