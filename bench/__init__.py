"""Fan-out benchmark: this service against python-socketio and a raw aiohttp floor.

``python -m bench`` (``make bench``) starts each server in its own process, connects a load generator
process full of raw WebSocket clients, publishes ``RecommendationReady`` events to RabbitMQ and measures
what arrives. See ``bench/cli.py`` for the phases and ``bench/NOTES.md`` for what was learned.
"""
