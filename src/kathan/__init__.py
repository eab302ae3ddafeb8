"""Kathan: a self-hostable, OpenAI-compatible LLM API service."""

__version__ = "0.1.0"
