"""EcoSort service defaults."""
