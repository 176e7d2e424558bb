"""Routes: a prompt's traffic moved from its teacher to its student, safely (docs/routes.md)."""
