"""API keys → accounts, and admin tokens with roles."""
