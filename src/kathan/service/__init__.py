"""Orchestration of one chat request, between the HTTP layer and the backends."""
