"""EcoSort waste service."""
