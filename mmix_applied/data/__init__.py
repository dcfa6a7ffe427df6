"""mmix_applied.data."""
