"""The HTTP layer: thin routers that translate between HTTP and the service."""
