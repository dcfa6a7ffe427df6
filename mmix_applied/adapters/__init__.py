"""mmix_applied.adapters."""
