"""EcoSort recycling service."""
