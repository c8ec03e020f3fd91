"""Hub method registry and invocation: from an ``InvocationMessage`` to a ``CompletionMessage``.

A hub is a class whose hub methods are typed ``async def``s marked with ``@hub_method``: the first
parameter after ``self`` is the ``CallerContext``, the others are bound from the invocation's
arguments, validated with pydantic from their annotations. Adding a method is one decorated method
(see ``service.hub.methods``); ``HubMethods.of(hub)`` collects them from an instance.

Rule: this is the one place where a failed invocation becomes ``Completion.error``. Texts follow
ASP.NET's ``DefaultHubDispatcher``/``ErrorMessageHelper`` so client code written against .NET sees
the same strings; binding details are always included (they only describe the caller's own input),
an unexpected exception's details only with ``HUB_DETAILED_ERRORS``.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, Final, get_type_hints

import structlog
from pydantic import TypeAdapter, ValidationError

from service.auth import Principal
from service.errors import HubException
from service.metrics import HUB_INVOCATIONS
from service.protocol import CompletionMessage, InvocationMessage, StreamInvocationMessage

from .lifetime import GroupManager

__all__ = ["CallerContext", "HubDispatcher", "HubMethods", "hub_method"]

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class CallerContext:
    """What a hub method sees of its caller (ASP.NET's ``HubCallerContext`` plus ``Groups``).

    ``groups`` changes membership by connection id in one hop:
    ``caller.groups.add_to_group(caller.connection_id, group)``.
    """

    connection_id: str
    principal: Principal
    groups: GroupManager
    positions: bool = False  # the connection asked for log positions (``?positions=true``)


HubFunction = Callable[..., Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class _Parameter:
    name: str
    adapter: TypeAdapter[Any]


@dataclass(frozen=True, slots=True)
class HubMethod:
    name: str
    function: HubFunction
    parameters: tuple[_Parameter, ...]
    returns_value: bool

    async def __call__(self, context: CallerContext, arguments: tuple[Any, ...]) -> Any:
        return await self.function(context, *arguments)


def _pascal_case(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in name.split("_") if part)


_HUB_METHOD_NAME: Final = "__hub_method_name__"


def hub_method(name: str | None = None) -> Callable[[HubFunction], HubFunction]:
    """Mark ``async def m(self, caller, arg: T, ...)`` as hub method ``name`` (default: PascalCase)."""

    def mark(function: HubFunction) -> HubFunction:
        if not inspect.iscoroutinefunction(function):
            raise TypeError(f"hub method {function.__qualname__} must be 'async def'")
        setattr(function, _HUB_METHOD_NAME, name or _pascal_case(function.__name__))
        return function

    return mark


class HubMethods:
    """A registry of hub methods, matched case-insensitively like ASP.NET's dispatcher."""

    def __init__(self) -> None:
        self._methods: dict[str, HubMethod] = {}

    @classmethod
    def of(cls, hub: object) -> HubMethods:
        """The ``@hub_method``s of ``hub``, bound to it."""
        methods = cls()
        for attribute in dir(type(hub)):
            name = getattr(getattr(type(hub), attribute), _HUB_METHOD_NAME, None)
            if name is not None:
                methods.add(name, getattr(hub, attribute))
        return methods

    def add(self, method_name: str, function: HubFunction) -> None:
        """Register ``function(caller, arg: T, ...)`` (a bound method, or a plain function)."""
        if not inspect.iscoroutinefunction(function):
            raise TypeError(f"hub method {function.__qualname__} must be 'async def'")
        hints = get_type_hints(function)
        params = list(inspect.signature(function).parameters.values())[1:]  # the first is the caller
        for param in params:
            if param.kind not in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD):
                raise TypeError(f"hub method {function.__qualname__}: only plain positional parameters")
            if param.name not in hints:
                raise TypeError(f"hub method {function.__qualname__}: parameter {param.name!r} needs a type")
        key = method_name.lower()
        if key in self._methods:
            raise ValueError(f"hub method {method_name!r} is registered twice (names are case-insensitive)")
        self._methods[key] = HubMethod(
            name=method_name,
            function=function,
            parameters=tuple(_Parameter(p.name, TypeAdapter(hints[p.name])) for p in params),
            returns_value=hints.get("return", type(None)) is not type(None),
        )

    def get(self, name: str) -> HubMethod | None:
        # DefaultHubDispatcher: _methods uses StringComparer.OrdinalIgnoreCase.
        return self._methods.get(name.lower())

    def __iter__(self) -> Iterator[HubMethod]:
        return iter(self._methods.values())


class _BindingError(Exception):
    pass


class HubDispatcher:
    """Runs invocations against a ``HubMethods`` registry."""

    def __init__(self, methods: HubMethods, *, detailed_errors: bool = False) -> None:
        self._methods = methods
        self._detailed_errors = detailed_errors

    def stream_invocation_error(self, message: StreamInvocationMessage) -> CompletionMessage:
        """Every method here is non-streaming; say so exactly as ASP.NET does."""
        if self._methods.get(message.target) is None:
            return CompletionMessage.with_error(message.invocation_id, _unknown_method(message.target))
        return CompletionMessage.with_error(
            message.invocation_id,
            f"The client attempted to invoke the non-streaming '{message.target}' method with a "
            "streaming invocation.",
        )

    async def invoke(self, context: CallerContext, message: InvocationMessage) -> CompletionMessage | None:
        """Run one invocation; the Completion to send, or None for a non-blocking one."""
        completion = await self.run(context, message)
        # HubProtocol.md: a non-blocking invocation (no invocationId) gets no reply, not even errors.
        return completion if message.invocation_id is not None else None

    async def run(
        self, context: CallerContext, message: InvocationMessage, *, refusal_level: int = logging.INFO
    ) -> CompletionMessage:
        """Run one invocation; its Completion, also for a non-blocking one (the caller drops it).

        A refusal (unknown method, bad arguments, ``HubException``) is counted in
        ``realtime_hub_invocations_total`` and logged at ``refusal_level``: a connection logs its first
        at INFO and the rest at DEBUG, so that a client repeating a refused call thousands of times
        costs one line, not thousands (issue 11).
        """
        invocation_id = message.invocation_id or ""
        target = message.target
        method = self._methods.get(target)
        if method is None:
            error = _unknown_method(target)
            return self._refuse(refusal_level, target, "unknown_method", invocation_id, error)
        try:
            arguments = self._bind(method, message.arguments)
        except _BindingError as error:
            return self._refuse(
                refusal_level,
                method.name,
                "bad_arguments",
                invocation_id,
                f"Failed to invoke '{target}' due to an error on the server. {error}",
            )
        if message.stream_ids:
            return self._refuse(
                refusal_level,
                method.name,
                "bad_arguments",
                invocation_id,
                f"An unexpected error occurred invoking '{target}' on the server. HubException: Client sent "
                f"{len(message.stream_ids)} stream(s), Hub method expects 0.",
            )
        try:
            result = await method(context, arguments)
        except HubException as error:
            return self._refuse(
                refusal_level,
                method.name,
                "refused",
                invocation_id,
                f"An unexpected error occurred invoking '{target}' on the server. HubException: {error}",
            )
        except Exception as error:
            log.exception("hub.invocation_failed", method=method.name)
            HUB_INVOCATIONS.labels(method.name, "error").inc()
            text = f"An unexpected error occurred invoking '{target}' on the server."
            if self._detailed_errors:
                text += f" {type(error).__name__}: {error}"
            return CompletionMessage.with_error(invocation_id, text)
        HUB_INVOCATIONS.labels(method.name, "ok").inc()
        if method.returns_value:
            return CompletionMessage.with_result(invocation_id, result)
        return CompletionMessage.void(invocation_id)

    @staticmethod
    def _bind(method: HubMethod, raw: tuple[Any, ...]) -> tuple[Any, ...]:
        if len(raw) != len(method.parameters):
            raise _BindingError(
                f"InvalidDataException: Invocation provides {len(raw)} argument(s) but target expects "
                f"{len(method.parameters)}."
            )
        bound = []
        for parameter, value in zip(method.parameters, raw, strict=True):
            try:
                bound.append(parameter.adapter.validate_python(value))
            except ValidationError as error:
                problem = error.errors()[0]["msg"]
                raise _BindingError(
                    "InvalidDataException: Error binding arguments. Make sure that the types of the provided "
                    f"values match the types of the hub method being invoked. ({parameter.name}: {problem})"
                ) from None
        return tuple(bound)

    @staticmethod
    def _refuse(level: int, method: str, outcome: str, invocation_id: str, error: str) -> CompletionMessage:
        log.log(level, "hub.invocation_refused", method=method, outcome=outcome, error=error)
        HUB_INVOCATIONS.labels(method if outcome != "unknown_method" else "<unknown>", outcome).inc()
        return CompletionMessage.with_error(invocation_id, error)


def _unknown_method(target: str) -> str:
    return f"Failed to invoke '{target}' due to an error on the server. HubException: Method does not exist."
