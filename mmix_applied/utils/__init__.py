"""Utilities under every layer: atomic file writes, "did you mean" hints, the map of moved modules."""
