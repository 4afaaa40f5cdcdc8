"""Import of public collection-point data (CSV or JSON, as Korean portals publish it)."""
