"""Files (``/v1/files``): uploads stored by id, checked (size, type, JSONL) before they are kept."""
