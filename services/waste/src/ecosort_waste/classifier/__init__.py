"""Waste photo classifiers behind one protocol; `create_classifier("local")` is the offline one.

Imports stay light here: onnxruntime loads only when the local provider is created.
"""

from .base import Candidate, Classification, Classifier
from .registry import create_classifier, providers, register_provider

__all__ = [
    "Candidate",
    "Classification",
    "Classifier",
    "create_classifier",
    "providers",
    "register_provider",
]
