"""Rate limiting: the limiter interface the proxy calls on every request, and its backends."""
