"""mmix_applied.engine."""
