"""Local stack launcher."""
