"""Hypothesis strategies and helpers shared by the protocol tests: payload values, every hub message type,
and a normal form to compare messages after a round trip."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping
from typing import Any

from hypothesis import strategies as st

from service.protocol import (
    AckMessage,
    CancelInvocationMessage,
    CloseMessage,
    CompletionMessage,
    HubMessage,
    InvocationMessage,
    PingMessage,
    SequenceMessage,
    StreamInvocationMessage,
    StreamItemMessage,
)

# Both encoders reject lone surrogates (not valid UTF-8), so generated text never contains them.
texts = st.text(alphabet=st.characters(codec="utf-8"), max_size=12)
non_empty_texts = st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=12)
ids = st.one_of(st.sampled_from(["0", "1", "s1", "42"]), non_empty_texts)

# Values JSON and MessagePack both carry unchanged: 64-bit integers (orjson and msgpack both stop there),
# finite floats (NaN would not compare equal and JSON has no infinity), strings, lists and str-keyed dicts.
# Tuples are included on purpose: both protocols give them back as lists.
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    texts,
)
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.lists(children, max_size=3).map(tuple),
        st.dictionaries(texts, children, max_size=4),
    ),
    max_leaves=10,
)
arguments = st.lists(values, max_size=4).map(tuple)
headers: st.SearchStrategy[dict[str, str]] = st.one_of(
    st.just({}), st.dictionaries(non_empty_texts, texts, max_size=3)
)
sequence_ids = st.integers(min_value=0, max_value=2**63 - 1)

invocations = st.builds(
    InvocationMessage,
    target=non_empty_texts,
    arguments=arguments,
    invocation_id=st.none() | ids,
    headers=headers,
    stream_ids=st.lists(ids, max_size=3).map(tuple),
)
stream_invocations = st.builds(
    StreamInvocationMessage,
    invocation_id=ids,
    target=non_empty_texts,
    arguments=arguments,
    headers=headers,
    stream_ids=st.lists(ids, max_size=3).map(tuple),
)
stream_items = st.builds(StreamItemMessage, invocation_id=ids, item=values, headers=headers)
completions = st.one_of(
    st.builds(CompletionMessage.with_result, ids, values),
    # An empty error string is written as "no error" by the JSON protocol (like .NET); see the example tests.
    st.builds(CompletionMessage.with_error, ids, non_empty_texts),
    st.builds(CompletionMessage.void, ids),
).flatmap(lambda message: headers.map(lambda h: dataclasses.replace(message, headers=h)))
cancel_invocations = st.builds(CancelInvocationMessage, invocation_id=ids, headers=headers)
pings = st.just(PingMessage())
closes = st.builds(CloseMessage, error=st.none() | non_empty_texts, allow_reconnect=st.booleans())
acks = st.builds(AckMessage, sequence_id=sequence_ids)
sequences = st.builds(SequenceMessage, sequence_id=sequence_ids)

MESSAGE_STRATEGIES: dict[str, st.SearchStrategy[HubMessage]] = {
    "invocation": invocations,
    "stream_invocation": stream_invocations,
    "stream_item": stream_items,
    "completion": completions,
    "cancel_invocation": cancel_invocations,
    "ping": pings,
    "close": closes,
    "ack": acks,
    "sequence": sequences,
}
messages: st.SearchStrategy[HubMessage] = st.one_of(*MESSAGE_STRATEGIES.values())


def normalize_value(value: Any) -> Any:
    """Tuples become lists and mappings become dicts, as they do on the wire."""
    if isinstance(value, list | tuple):
        return [normalize_value(item) for item in value]
    if isinstance(value, Mapping):
        return {key: normalize_value(item) for key, item in value.items()}
    return value


def normalize(message: HubMessage) -> tuple[str, dict[str, Any]]:
    """A comparable form of `message`: its class name and its fields, normalized."""
    fields = {
        field.name: normalize_value(getattr(message, field.name)) for field in dataclasses.fields(message)
    }
    return type(message).__name__, fields


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    """`data` cut into chunks at the given offsets (sorted, deduplicated, clipped to the data)."""
    points = sorted({min(max(cut, 0), len(data)) for cut in cuts} | {0, len(data)})
    return [data[start:end] for start, end in itertools.pairwise(points)]
