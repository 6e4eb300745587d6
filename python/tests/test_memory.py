"""The memory budget, eviction, times to live and metrics, through pyarrow.flight alone (and
urllib for the metrics page), as a user of plain pyarrow would use them."""

import json
import time
import urllib.request

import numpy as np
import pyarrow as pa
import pyarrow.flight as flight
import pytest

from flight_helpers import LZ4, action, advance_clock, field, put, zeros

TTL_HEADER = b"x-flightcache-ttl"


def mib_table(mib, value=1.0):
    """`mib` MiB of float64 as one chunk, as pa.table(numpy_arrays) gives."""
    return pa.table({"v": np.full(mib * (1 << 20) // 8, value)})


def seconds_since_epoch(timestamp):
    """An endpoint's expiration_time (a nanosecond timestamp scalar) in seconds."""
    return timestamp.value / 1e9


def renew_request(endpoint):
    """A serialized RenewFlightEndpointRequest: field 1, the serialized endpoint (pyarrow has no
    class for it; docs/protocol.md shows the same helper)."""
    return field(1, endpoint.serialize())


def test_a_ttl_header_sets_a_time_to_live_in_the_same_call(client):
    table = pa.table({"x": [1, 2, 3]})
    before = time.time()
    put(client, "t", table, flight.FlightCallOptions(headers=[(TTL_HEADER, b"600")]))
    info = client.get_flight_info(flight.FlightDescriptor.for_command("t"))
    expires = info.endpoints[0].expiration_time
    assert expires is not None, "every endpoint carries expiration_time"
    assert 599 <= seconds_since_epoch(expires) - before <= 601
    metadata = json.loads(info.app_metadata)
    assert 590 < metadata["ttl_seconds"] <= 600
    assert metadata["idle_seconds"] >= 0
    ttl = json.loads(action(client, "ttl", b"t"))
    assert ttl["key"] == "t" and 590 < ttl["ttl_seconds"] <= 600
    assert client.do_get(flight.Ticket("t")).read_all().equals(table)


def test_expire_persist_and_ttl_actions(client):
    put(client, "k", pa.table({"x": [1]}))
    assert json.loads(action(client, "ttl", b"k")) == {"key": "k", "ttl_seconds": None}
    set_ttl = json.loads(action(client, "expire", json.dumps({"key": "k", "seconds": 30}).encode()))
    assert 29 < set_ttl["ttl_seconds"] <= 30
    assert json.loads(action(client, "persist", b"k")) == {"key": "k", "had_ttl": True}
    assert json.loads(action(client, "ttl", b"k"))["ttl_seconds"] is None
    info = client.get_flight_info(flight.FlightDescriptor.for_command("k"))
    assert info.endpoints[0].expiration_time is None
    with pytest.raises(pa.ArrowKeyError):
        action(client, "ttl", b"missing")
    with pytest.raises(pa.ArrowInvalid, match="seconds"):
        action(client, "expire", json.dumps({"key": "k", "seconds": 0}).encode())


def test_a_key_is_never_served_after_it_expires(start_server):
    client = flight.connect(start_server("--test-clock").url)
    table = pa.table({"x": [1, 2]})
    put(client, "brief", table, flight.FlightCallOptions(headers=[(TTL_HEADER, b"60")]))
    advance_clock(client, 59.5)
    assert client.do_get(flight.Ticket("brief")).read_all().equals(table), "half a second left"
    assert advance_clock(client, 0.5) == {"skipped_seconds": 60.0}
    with pytest.raises(pa.ArrowKeyError):
        client.do_get(flight.Ticket("brief")).read_all()
    with pytest.raises(pa.ArrowKeyError):
        client.get_flight_info(flight.FlightDescriptor.for_command("brief"))
    assert list(client.list_flights()) == []
    stats = json.loads(action(client, "stats"))
    assert stats["expirations"] == 1 and stats["tables"] == 0


def test_renew_flight_endpoint_extends_a_key_by_its_ttl(start_server):
    client = flight.connect(start_server("--test-clock").url)
    put(client, "r", pa.table({"x": [1]}), flight.FlightCallOptions(headers=[(TTL_HEADER, b"100")]))
    endpoint = client.get_flight_info(flight.FlightDescriptor.for_command("r")).endpoints[0]
    advance_clock(client, 60)
    renewed = flight.FlightEndpoint.deserialize(action(client, "RenewFlightEndpoint", renew_request(endpoint)))
    assert renewed.ticket == endpoint.ticket
    assert renewed.locations == endpoint.locations
    gained = seconds_since_epoch(renewed.expiration_time) - seconds_since_epoch(endpoint.expiration_time)
    assert 59 <= gained <= 61, "the server's clock moved 60 s, and the table's 100 s start again"
    advance_clock(client, 99)
    assert client.do_get(flight.Ticket("r")).read_all().num_rows == 1, "renewed: 1 s left"
    missing = flight.FlightEndpoint(flight.Ticket("missing"), [])
    with pytest.raises(pa.ArrowKeyError):
        action(client, "RenewFlightEndpoint", renew_request(missing))


def test_only_a_test_server_moves_its_clock(client):
    with pytest.raises(pa.ArrowInvalid, match="precondition failed.*--test-clock"):
        advance_clock(client, 60)
    assert "advance-clock" not in [a.type for a in client.list_actions()]


def test_a_full_budget_evicts_least_recently_used_tables(start_server):
    server = start_server("--max-memory", "48MiB")
    assert server.budget_line.startswith("memory budget: 48.00 MiB (--max-memory)")
    client = flight.connect(server.url)
    for key in ["a", "b", "c"]:
        put(client, key, mib_table(12))
    client.do_get(flight.Ticket("a")).read_all()  # a is now the most recently used
    put(client, "d", mib_table(12))
    keys = sorted(info.descriptor.command.decode() for info in client.list_flights())
    assert keys == ["a", "c", "d"]
    stats = json.loads(action(client, "stats"))
    assert stats["evictions"] == 1 and stats["memory_used"] <= 48 << 20
    client.close()


def test_noeviction_refuses_with_resource_exhausted_and_keeps_the_old_table(start_server):
    server = start_server("--max-memory", "32MiB", "--eviction", "noeviction")
    client = flight.connect(server.url)
    old = mib_table(12, value=1.0)
    put(client, "a", old)
    put(client, "b", mib_table(12))
    # Arrow C++ reports gRPC's RESOURCE_EXHAUSTED as ArrowInvalid, naming the code.
    with pytest.raises(pa.ArrowInvalid, match="resource exhausted.*memory budget of 32.00 MiB"):
        put(client, "a", mib_table(16, value=2.0))
    assert client.do_get(flight.Ticket("a")).read_all().equals(old)
    stats = json.loads(action(client, "stats"))
    assert stats["rejected_uploads"] == 1 and stats["evictions"] == 0
    client.close()


def test_a_compressed_upload_is_checked_decompressed_within_the_budget(start_server):
    """Every batch is decoded to be checked; a compressed one is decompressed for that, into
    memory charged first: one that could not fit with nothing else cached is refused before
    it is decompressed, however small it is on the wire, and the key keeps its table."""
    server = start_server("--max-memory", "64MiB")
    client = flight.connect(server.url)
    old = mib_table(1)
    put(client, "z", old)
    # 128 MiB of zeros, under 1 MiB once compressed.
    with pytest.raises(pa.ArrowInvalid, match="resource exhausted.*memory budget of 64.00 MiB"):
        put(client, "z", zeros(16 << 20), LZ4)
    assert client.do_get(flight.Ticket("z")).read_all().equals(old)
    # A quarter of it fits: checked, and stored compressed.
    put(client, "z", zeros(4 << 20), LZ4)
    assert client.do_get(flight.Ticket("z")).read_all().equals(zeros(4 << 20))
    stats = json.loads(action(client, "stats"))
    assert stats["rejected_uploads"] == 1 and stats["memory_used"] < 4 << 20, stats
    client.close()


def test_metrics_are_served_in_the_prometheus_text_format(start_server):
    server = start_server("--max-memory", "1GiB", "--metrics", "127.0.0.1:0")
    client = flight.connect(server.url)
    put(client, "m", mib_table(1))
    with urllib.request.urlopen(server.metrics_url, timeout=30) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        page = response.read().decode()
    lines = page.splitlines()
    assert "flightcache_tables 1" in lines
    assert f"flightcache_memory_budget_bytes {1 << 30}" in lines
    assert "flightcache_puts_total 1" in lines
    assert any(line.startswith('flightcache_memory_held_bytes{by="tables"} ') for line in lines)
    client.close()
