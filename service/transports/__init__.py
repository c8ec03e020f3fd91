"""Transports: move bytes between HTTP requests and connections; they know nothing of hub messages."""

from __future__ import annotations

from .endpoint import EndpointOptions, HubEndpoint

__all__ = ["EndpointOptions", "HubEndpoint"]
