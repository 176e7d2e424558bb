"""Tests of distillery.datasets (not named `datasets`: that would shadow Hugging Face datasets)."""
