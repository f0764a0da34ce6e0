"""Metric updates made during one event-loop pass are written together when it
ends, and come out exactly as if each had been written on its own."""

import asyncio

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from cnnserve.serving.metrics import LATENCY_BUCKETS, pass_totals
from tests.serving.helpers import samples

DURATIONS = [0.0003, 0.0005, 0.0007, 0.003, 0.003, 0.02, 7.0, 12.0, 0.0011]


def metrics(registry: CollectorRegistry):
    return (Counter("answers", "", ["outcome"], registry=registry),
            Gauge("inflight", "", registry=registry),
            Histogram("duration_seconds", "", buckets=LATENCY_BUCKETS, registry=registry))


def test_a_pass_of_updates_reads_the_same_as_each_update_written_at_once():
    one_by_one, deferred = CollectorRegistry(), CollectorRegistry()
    answers, inflight, duration = metrics(one_by_one)
    for seconds in DURATIONS:
        inflight.inc()
        answers.labels("success").inc()
        duration.observe(seconds)
        inflight.dec()
    inflight.inc()

    async def one_pass():
        answers, inflight, duration = metrics(deferred)
        totals = pass_totals()
        for seconds in DURATIONS:
            totals.inc(inflight)
            totals.inc(answers.labels("success"))
            totals.observe(duration, seconds)
            totals.inc(inflight, -1)
        totals.inc(inflight)
        before = samples(deferred)
        await asyncio.sleep(0)
        return before

    before = asyncio.run(one_pass())
    assert before[("duration_seconds_count", ())] == 0 and before[("answers_total", (("outcome", "success"),))] == 0
    assert samples(deferred) == pytest.approx(samples(one_by_one))
    assert samples(deferred)[("inflight", ())] == 1


def test_updates_outside_an_event_loop_are_written_at_once():
    registry = CollectorRegistry()
    answers, _, duration = metrics(registry)
    pass_totals().inc(answers.labels("rejected"))
    pass_totals().observe(duration, 0.004)
    assert registry.get_sample_value("answers_total", {"outcome": "rejected"}) == 1
    assert registry.get_sample_value("duration_seconds_bucket", {"le": "0.004"}) == 1
    assert registry.get_sample_value("duration_seconds_bucket", {"le": "0.002"}) == 0
