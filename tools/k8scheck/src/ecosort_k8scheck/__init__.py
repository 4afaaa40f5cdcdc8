"""Offline checks of the Kubernetes artefacts."""
