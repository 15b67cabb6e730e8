"""Extraction detection: request features, account windows, the classifier and its policy."""
