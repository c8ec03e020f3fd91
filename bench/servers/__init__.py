"""The comparison servers: python-socketio and the raw aiohttp floor, each fed by ``feed.Feed``."""
