"""OpenAI wire formats: pure data, no I/O."""
