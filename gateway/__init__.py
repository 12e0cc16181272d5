"""The HTTP/WebSocket edge: the only package importing FastAPI and Starlette."""
