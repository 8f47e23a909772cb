"""Helpers for the book Large Models in Practice.

Importing the package first sets quiet defaults for TensorFlow (see runtime).
"""

from bigmodel_utils.book import runtime  # noqa: F401  (sets TF_CPP_MIN_LOG_LEVEL before TensorFlow loads)

__version__ = "0.1.0"
