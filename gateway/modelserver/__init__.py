"""Upstream model servers the gateway can run itself."""
