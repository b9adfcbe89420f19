"""The HTTP API (FastAPI). Routes are thin: they parse, call a service, and shape the answer."""
