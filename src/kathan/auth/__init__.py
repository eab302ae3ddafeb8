"""API keys: who may call Kathan."""
