"""Where completions come from: the Provider seam and its HTTP implementations."""
