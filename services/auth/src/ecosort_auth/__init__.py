"""EcoSort auth service."""
