"""EcoSort locations service."""
