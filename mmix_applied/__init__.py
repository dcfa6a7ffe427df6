"""mmix_applied."""
