"""Utilities under every layer: atomic file writes, "did you mean" hints, value rules, the map of moved modules."""
