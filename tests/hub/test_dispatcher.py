"""Hub method registration and invocation: from an Invocation to the Completion the caller gets.

Texts are ASP.NET's (``DefaultHubDispatcher`` / ``ErrorMessageHelper``), so client code written
against a .NET server sees the same strings.
"""

from __future__ import annotations

import pytest

from service.errors import HubException
from service.hub import CallerContext, HubDispatcher, HubMethods, InMemoryHubLifetimeManager, hub_method
from service.protocol import CompletionMessage, InvocationMessage, StreamInvocationMessage

from .harness import make_principal


class SampleHub:
    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []

    @hub_method()
    async def add_numbers(self, caller: CallerContext, a: int, b: int) -> int:
        return a + b

    @hub_method("Echo")
    async def echo(self, caller: CallerContext, text: str) -> str:
        return text

    @hub_method()
    async def remember(self, caller: CallerContext, value: str) -> None:
        self.calls.append((caller.connection_id, value))

    @hub_method()
    async def refuse(self, caller: CallerContext) -> None:
        raise HubException("You may not.")

    @hub_method()
    async def crash(self, caller: CallerContext) -> None:
        raise RuntimeError("secret internals")

    async def not_a_hub_method(self, caller: CallerContext) -> None:
        raise AssertionError("never registered")


def _caller() -> CallerContext:
    return CallerContext("conn-1", make_principal(), InMemoryHubLifetimeManager())


async def _invoke(
    dispatcher: HubDispatcher, target: str, *arguments: object, stream_ids: tuple[str, ...] = ()
) -> CompletionMessage:
    message = InvocationMessage(target=target, arguments=arguments, invocation_id="7", stream_ids=stream_ids)
    completion = await dispatcher.invoke(_caller(), message)
    assert completion is not None
    assert completion.invocation_id == "7"
    return completion


# --- registration ---------------------------------------------------------------------------------


def test_hub_methods_of_collects_the_marked_methods_with_their_names() -> None:
    methods = HubMethods.of(SampleHub())
    assert sorted(method.name for method in methods) == ["AddNumbers", "Crash", "Echo", "Refuse", "Remember"]
    assert methods.get("notAHubMethod") is None
    assert methods.get("NotAHubMethod") is None


def test_method_names_match_case_insensitively() -> None:
    methods = HubMethods.of(SampleHub())
    add = methods.get("addnumbers")
    assert add is not None
    assert add.name == "AddNumbers"
    assert methods.get("ADDNUMBERS") is add


def test_registering_a_name_twice_is_refused() -> None:
    methods = HubMethods()

    async def one(caller: CallerContext) -> None:
        return None

    methods.add("Same", one)
    with pytest.raises(ValueError, match="registered twice"):
        methods.add("same", one)


def test_hub_methods_must_be_async_typed_and_positional() -> None:
    with pytest.raises(TypeError, match="must be 'async def'"):
        hub_method()(lambda caller: None)  # type: ignore[arg-type,return-value]

    async def untyped(caller: CallerContext, value) -> None:  # type: ignore[no-untyped-def]
        return None

    async def keyword_only(caller: CallerContext, *, value: int) -> None:
        return None

    methods = HubMethods()
    with pytest.raises(TypeError, match="needs a type"):
        methods.add("Untyped", untyped)
    with pytest.raises(TypeError, match="only plain positional parameters"):
        methods.add("KeywordOnly", keyword_only)


# --- invocation -----------------------------------------------------------------------------------


async def test_a_result_is_returned_and_a_void_method_completes_empty() -> None:
    hub = SampleHub()
    dispatcher = HubDispatcher(HubMethods.of(hub))
    assert await _invoke(dispatcher, "AddNumbers", 2, 3) == CompletionMessage.with_result("7", 5)
    assert await _invoke(dispatcher, "remember", "x") == CompletionMessage.void("7")
    assert hub.calls == [("conn-1", "x")]


async def test_arguments_are_validated_from_the_annotations() -> None:
    dispatcher = HubDispatcher(HubMethods.of(SampleHub()))
    wrong_count = await _invoke(dispatcher, "AddNumbers", 1)
    assert wrong_count.error == (
        "Failed to invoke 'AddNumbers' due to an error on the server. InvalidDataException: Invocation "
        "provides 1 argument(s) but target expects 2."
    )
    wrong_type = await _invoke(dispatcher, "Echo", {"not": "text"})
    assert wrong_type.error is not None
    assert wrong_type.error.startswith(
        "Failed to invoke 'Echo' due to an error on the server. InvalidDataException: Error binding "
        "arguments. Make sure that the types of the provided values match the types of the hub method "
        "being invoked. (text: "
    )


async def test_an_unknown_method_fails_that_invocation() -> None:
    completion = await _invoke(HubDispatcher(HubMethods.of(SampleHub())), "Nope")
    assert completion.error == (
        "Failed to invoke 'Nope' due to an error on the server. HubException: Method does not exist."
    )


async def test_a_hub_exception_reaches_the_caller_with_its_message() -> None:
    completion = await _invoke(HubDispatcher(HubMethods.of(SampleHub())), "Refuse")
    assert completion.error == (
        "An unexpected error occurred invoking 'Refuse' on the server. HubException: You may not."
    )


@pytest.mark.parametrize("detailed", [False, True])
async def test_unexpected_errors_show_details_only_when_detailed_errors_are_on(detailed: bool) -> None:
    completion = await _invoke(HubDispatcher(HubMethods.of(SampleHub()), detailed_errors=detailed), "Crash")
    generic = "An unexpected error occurred invoking 'Crash' on the server."
    expected = f"{generic} RuntimeError: secret internals" if detailed else generic
    assert completion.error == expected


async def test_a_non_blocking_invocation_gets_no_reply_not_even_an_error() -> None:
    dispatcher = HubDispatcher(HubMethods.of(SampleHub()))
    message = InvocationMessage(target="Nope", arguments=())
    assert await dispatcher.invoke(_caller(), message) is None


async def test_streams_are_refused_as_aspnet_refuses_them() -> None:
    dispatcher = HubDispatcher(HubMethods.of(SampleHub()))
    uploads = await _invoke(dispatcher, "Remember", "x", stream_ids=("1",))
    assert uploads.error == (
        "An unexpected error occurred invoking 'Remember' on the server. HubException: Client sent "
        "1 stream(s), Hub method expects 0."
    )
    streaming = dispatcher.stream_invocation_error(
        StreamInvocationMessage(target="Echo", arguments=("x",), invocation_id="9")
    )
    assert streaming.error == (
        "The client attempted to invoke the non-streaming 'Echo' method with a streaming invocation."
    )
    unknown = dispatcher.stream_invocation_error(
        StreamInvocationMessage(target="Nope", arguments=(), invocation_id="9")
    )
    assert unknown.error == (
        "Failed to invoke 'Nope' due to an error on the server. HubException: Method does not exist."
    )
