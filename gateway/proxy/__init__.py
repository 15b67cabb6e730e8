"""The OpenAI-compatible reverse proxy: a pure-ASGI hot path in front of the upstream."""
