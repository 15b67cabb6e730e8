"""The proxy hot path: overhead against nginx and minimal pass-throughs."""
