"""What rate limiting costs."""
