"""EcoSort users service."""
