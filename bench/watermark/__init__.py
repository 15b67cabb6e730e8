"""Watermark and logit-stealing defences: cost, strength, attribution, attacks."""
