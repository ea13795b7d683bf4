"""Serving: the HTTP server (LibreTranslate-compatible and /v1 APIs), dynamic batching and the web page."""
