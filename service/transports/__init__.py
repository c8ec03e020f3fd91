"""Transports: move bytes between HTTP requests and connections; they know nothing of hub messages."""

from __future__ import annotations

from .endpoint import EndpointOptions, HubEndpoint
from .errors import HubHttpError, refusal_middleware

__all__ = ["EndpointOptions", "HubEndpoint", "HubHttpError", "refusal_middleware"]
