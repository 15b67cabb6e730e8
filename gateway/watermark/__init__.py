"""Keyed output watermark, its detector and attribution, and logprob perturbation."""
