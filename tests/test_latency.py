"""Measured latency (measure/latency.py): what a measurement holds and that the cache answers.
Nothing here asserts a time: only that the figures are well formed and read back."""

from __future__ import annotations

import json

import pytest

from scalesearch import get_base, scale
from scalesearch.measure import latency as lat

from conftest import cli, ok


def small():
    return scale(get_base("resnet20-cifar").replace(resolution=16), 1.0, 0.5, 1.0)


def test_a_latency_is_a_median_with_its_spread_and_is_cached(monkeypatch):
    first = lat.measure_latency(small(), min_run_time=0.02)
    assert first.median_ms > 0 and first.iqr_ms >= 0 and first.blocks >= 1
    assert (first.batch, first.resolution, first.device) == (1, 16, "cpu") and "thread" in first.machine
    assert first.spread == pytest.approx(first.iqr_ms / first.median_ms)

    def no_timing(*args, **kwargs):
        raise AssertionError("timed again instead of reading the cache")
    monkeypatch.setattr(lat, "_time", no_timing)
    assert lat.measure_latency(small(), min_run_time=0.02) == first          # the same network: cached
    with pytest.raises(AssertionError, match="timed again"):
        lat.measure_latency(small(), batch=2, min_run_time=0.02)               # another batch: not the same
    saved = json.loads(lat.CACHE.path.read_text())
    assert saved["format"] == lat.CACHE.format and any(e == first.as_dict() for e in saved["entries"].values())


def test_flops_prints_the_latency_when_asked():
    said = json.loads(ok(cli("flops", "--base", "resnet20-cifar", "--resolution", "16", "--w", "0.5", "--latency",
                             "--json")))
    assert said["latency"]["median_ms"] > 0 and said["latency"]["batch"] == 1
    assert "latency" not in json.loads(ok(cli("flops", "--base", "resnet20-cifar", "--resolution", "16", "--json")))
