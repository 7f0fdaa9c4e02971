"""Webhooks: endpoints, the outbox of events, and signed at-least-once delivery (Standard
Webhooks, as OpenAI sends them)."""
