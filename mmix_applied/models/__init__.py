"""mmix_applied.models."""
