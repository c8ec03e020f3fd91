"""``python -m bench.broker_floor`` (RabbitMQ alone, a classic queue and a stream, measured alike),
``python -m bench.consume_path`` (aio-pika's consumer against aiormq's) and ``python -m bench.read_cost``
(the consumer's CPU per message with the publisher in another process).

Asserts what a correct measurement must show — everything published was consumed, latency and CPU
figures exist, nothing it declared is left on the broker — never a timing.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest

from bench.broker_floor import SOURCES, measure, names
from bench.consume_path import WAYS, consume_cost
from bench.procs import find_broker_process
from bench.read_cost import SOURCES as READ_SOURCES
from bench.read_cost import measure as measure_read
from bench.read_cost import names as read_names
from tests.support.broker import existing_queues

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


@pytest.mark.parametrize("source", SOURCES)
def test_each_source_delivers_everything_is_measured_and_deleted(broker_url: str, source: str) -> None:
    tag = f"test-{uuid.uuid4().hex[:8]}"
    run = asyncio.run(measure(broker_url, source, rate=300, seconds=1.0, tag=tag))
    assert run.source == source
    assert run.received == run.published > 0
    assert run.p50_ms is not None
    assert run.p99_ms is not None
    assert run.max_ms is not None
    assert 0 <= run.p50_ms <= run.p99_ms <= run.max_ms
    assert run.consumer_cpu_pct > 0
    if find_broker_process(broker_url) is not None:
        assert run.broker_cpu_pct is not None
        assert run.broker_cpu_pct > 0
    _exchange, queue = names(tag)
    assert asyncio.run(existing_queues(broker_url, [queue])) == []


@pytest.mark.parametrize("source", SOURCES)
def test_a_write_only_run_consumes_nothing_measures_the_broker_and_deletes_what_it_declared(
    broker_url: str, source: str
) -> None:
    tag = f"test-{uuid.uuid4().hex[:8]}"
    run = asyncio.run(measure(broker_url, source, rate=300, seconds=1.0, tag=tag, consume=False))
    assert not run.consumed
    assert run.published > 0
    assert run.received == 0
    assert run.p99_ms is None
    if find_broker_process(broker_url) is not None:
        assert run.broker_cpu_pct is not None
        assert run.broker_cpu_pct > 0
    _exchange, queue = names(tag)
    assert asyncio.run(existing_queues(broker_url, [queue])) == []


def test_both_ways_of_consuming_read_every_entry_and_delete_the_stream(broker_url: str) -> None:
    """``python -m bench.consume_path``: each way reads the whole stream (it would hang otherwise)."""
    stream = f"bench.consume.test-{uuid.uuid4().hex[:8]}"
    costs = asyncio.run(consume_cost(broker_url, count=600, rounds=1, stream=stream))
    assert set(costs) == set(WAYS)
    for values in costs.values():
        assert len(values) == 1
        assert values[0] > 0
    assert asyncio.run(existing_queues(broker_url, [stream])) == []


@pytest.mark.parametrize("source", READ_SOURCES)
def test_the_read_cost_counts_every_message_the_child_published_and_deletes_its_queue(
    broker_url: str, source: str
) -> None:
    tag = f"test-{uuid.uuid4().hex[:8]}"
    run = asyncio.run(measure_read(broker_url, source, rate=200, seconds=1.0, tag=tag))
    assert run.source == source
    assert run.received == run.published > 1
    assert run.cpu_us_per_message is not None
    assert run.cpu_us_per_message > 0
    _exchange, queue = read_names(tag)
    assert asyncio.run(existing_queues(broker_url, [queue])) == []
