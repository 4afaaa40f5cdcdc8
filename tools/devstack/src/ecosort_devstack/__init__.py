"""The EcoSort local stack: embedded PostgreSQL, Valkey and nginx plus every service.

`ecosort-stack up` starts everything as real processes and `ecosort-stack down` stops them.
"""
