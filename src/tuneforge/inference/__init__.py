"""Serving deployed local models: agent chat and an OpenAI-compatible API."""
