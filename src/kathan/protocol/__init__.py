"""Pydantic wire models: what goes over HTTP. Imports nothing internal."""
