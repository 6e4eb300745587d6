"""Keys that grow, with plain pyarrow.flight and request headers: a producer appends, followers
read from an offset and stay open as the key grows (docs/streams.md shows the same code)."""

import json
import queue
import threading

import pyarrow as pa
import pyarrow.flight as flight
import pytest

from flight_helpers import LZ4, action, put, zeros
from test_security import users  # noqa: F401 (the users file fixture)

APPEND = flight.FlightCallOptions(headers=[(b"x-flightcache-append", b"1")])


def rows(start, count, words=("a", "b")):
    """`count` rows numbered from `start`, with a dictionary column of `words`."""
    return pa.table(
        {
            "n": pa.array(range(start, start + count), pa.int64()),
            "word": pa.array([words[i % len(words)] for i in range(count)]).dictionary_encode(),
        }
    )


def append(client, key, table, headers=()):
    """Append `table` to `key`; the put's summary (first_offset, rows, ...)."""
    options = flight.FlightCallOptions(headers=[(b"x-flightcache-append", b"1"), *headers])
    writer, reader = client.do_put(flight.FlightDescriptor.for_command(key), table.schema, options=options)
    writer.write_table(table)
    writer.done_writing()
    answer = reader.read()
    writer.close()  # raises the server's error, if it refused the append
    return json.loads(answer.to_pybytes())


def follow(client, key, start="earliest"):
    """A follower of `key` from `start`: pyarrow's reader of a do_get that stays open."""
    options = flight.FlightCallOptions(
        headers=[(b"x-flightcache-follow", b"1"), (b"x-flightcache-from", str(start).encode())]
    )
    return client.do_get(flight.Ticket(key), options=options)


def collect(reader, count, into):
    """Read chunks from `reader` until `count` rows came; put each chunk on `into`."""
    seen = 0
    while seen < count:
        chunk = reader.read_chunk()
        into.put(chunk)
        seen += chunk.data.num_rows


def test_a_producer_appends_and_a_follower_gets_every_row_as_it_lands(client):
    assert append(client, "events", rows(0, 10))["first_offset"] == 0
    reader = follow(client, "events")
    chunks = queue.Queue()
    reading = threading.Thread(target=collect, args=(reader, 40, chunks))
    reading.start()
    summaries = [append(client, "events", rows(10 * i, 10, ("c", "d", "e"))) for i in range(1, 4)]
    assert [s["first_offset"] for s in summaries] == [10, 20, 30]
    assert summaries[0]["rows"] == 10
    reading.join(timeout=60)
    assert not reading.is_alive()
    got = pa.Table.from_batches([chunks.get().data for _ in range(chunks.qsize())])
    assert got.column("n").to_pylist() == list(range(40))
    # pyarrow applies each append's own dictionaries (a replacement in the stream).
    assert got.column("word").to_pylist() == rows(0, 10)["word"].to_pylist() + 3 * rows(
        0, 10, ("c", "d", "e")
    )["word"].to_pylist()
    # Dropped: the follower's stream ends cleanly.
    action(client, "drop", b"events")
    with pytest.raises(StopIteration):
        reader.read_chunk()


def test_a_broken_download_resumes_from_the_rows_it_has(client):
    for i in range(5):
        append(client, "log", rows(10 * i, 10))
    reader = client.do_get(flight.Ticket(b"log"))
    first = reader.read_chunk().data
    assert first.num_rows == 10
    # Resumed at row 10, and mid-batch at row 23 (the rest of that batch first).
    for start in (10, 23):
        options = flight.FlightCallOptions(headers=[(b"x-flightcache-from", str(start).encode())])
        rest = client.do_get(flight.Ticket(b"log"), options=options).read_all()
        assert rest.column("n").to_pylist() == list(range(start, 50))


class StartOffset(flight.ClientMiddlewareFactory):
    """Keeps the `x-flightcache-start-offset` response header of each call."""

    def __init__(self):
        self.seen = []

    def start_call(self, info):
        factory = self

        class Middleware(flight.ClientMiddleware):
            def received_headers(self, headers):
                factory.seen.extend(headers.get("x-flightcache-start-offset", []))

        return Middleware()


def test_latest_follows_only_new_rows_and_says_where_it_started(server):
    offsets = StartOffset()
    client = flight.connect(server.url, middleware=[offsets])
    append(client, "k", rows(0, 7))
    reader = follow(client, "k", "latest")
    append(client, "k", rows(7, 3))
    chunk = reader.read_chunk().data
    assert chunk.column("n").to_pylist() == [7, 8, 9]
    assert offsets.seen == ["7"]
    info = client.get_flight_info(flight.FlightDescriptor.for_command("k"))
    metadata = json.loads(info.app_metadata)
    assert (metadata["earliest_offset"], metadata["next_offset"]) == (0, 10)
    client.close()


def test_retention_trims_and_a_reader_behind_it_is_told_the_oldest_row(client):
    capped = [(b"x-flightcache-max-rows", b"20")]
    for i in range(6):
        append(client, "capped", rows(10 * i, 10), capped)
    info = client.get_flight_info(flight.FlightDescriptor.for_command("capped"))
    assert json.loads(info.app_metadata)["earliest_offset"] == 40
    assert info.total_records == 20
    options = flight.FlightCallOptions(headers=[(b"x-flightcache-from", b"5")])
    with pytest.raises(pa.ArrowInvalid, match="out-of-range.*oldest kept row is 40"):
        client.do_get(flight.Ticket(b"capped"), options=options).read_all()
    retained = json.loads(action(client, "retain", json.dumps({"key": "capped", "max_rows": 5}).encode()))
    assert (retained["earliest_offset"], retained["next_offset"]) == (50, 60)
    stats = json.loads(action(client, "stats"))
    assert stats["trimmed_rows"] == 50


def test_an_append_of_another_schema_is_refused_naming_the_difference(client):
    append(client, "k", rows(0, 3))
    other = pa.table({"n": pa.array([1.5]), "word": pa.array(["x"]).dictionary_encode()})
    with pytest.raises(pa.ArrowInvalid, match="`n` is Float64 here, Int64 in the key"):
        append(client, "k", other)
    assert client.do_get(flight.Ticket(b"k")).read_all().num_rows == 3


def test_an_append_needs_the_write_right_and_a_follower_the_read_right(start_server, users):
    server = start_server("--users", users[0])
    client = flight.connect(server.url)
    alice = [client.authenticate_basic_token("alice", "alice-pw")]
    reader = [client.authenticate_basic_token("reader", "reader-pw")]
    assert append(client, "team-a/events", rows(0, 5), alice)["first_offset"] == 0
    with pytest.raises(flight.FlightUnauthorizedError):
        append(client, "team-a/events", rows(5, 5), reader)
    with pytest.raises(flight.FlightUnauthorizedError):
        append(client, "elsewhere", rows(0, 5), alice)
    options = flight.FlightCallOptions(headers=[*reader, (b"x-flightcache-from", b"2")])
    got = client.do_get(flight.Ticket(b"team-a/events"), options=options).read_all()
    assert got.column("n").to_pylist() == [2, 3, 4]
    with pytest.raises(flight.FlightUnauthorizedError):
        follow_options = flight.FlightCallOptions(headers=[*alice, (b"x-flightcache-follow", b"1")])
        client.do_get(flight.Ticket(b"elsewhere"), options=follow_options).read_all()
    client.close()


def _from(start):
    return flight.FlightCallOptions(headers=[(b"x-flightcache-from", str(start).encode())])


def test_a_read_from_inside_a_compressed_nested_batch_gets_exactly_the_rest(client):
    # Stored as sent (compressed, nested: never re-split), so a read from inside it gets the
    # rest of that one batch decoded and encoded again.
    count = 100_000
    table = pa.table(
        {
            "n": pa.array(range(count), pa.int64()),
            "lists": pa.array([[i, i + 1] if i % 5 else None for i in range(count)], pa.list_(pa.int64())),
            # The last string is null: from the last row, the strings' values are empty.
            "s": pa.array([f"row {i}" if i < count - 1 else None for i in range(count)]),
        }
    )
    assert table["n"].num_chunks == 1
    put(client, "packed", table, LZ4)
    for start in (1, 12_345, count - 1):
        got = client.do_get(flight.Ticket("packed"), options=_from(start)).read_all()
        assert got.equals(table.slice(start)), start
    # A follower from inside the batch gets its rest, then what is appended.
    reader = follow(client, "packed", 54_321)
    assert append(client, "packed", table.slice(0, 10))["first_offset"] == count
    got = []
    while sum(chunk.num_rows for chunk in got) < count - 54_321 + 10:
        got.append(reader.read_chunk().data)
    reader.cancel()
    assert pa.Table.from_batches(got).equals(pa.concat_tables([table.slice(54_321), table.slice(0, 10)]))


def test_a_read_from_inside_a_compressed_batch_evicts_other_keys_never_its_own(start_server):
    # A key that grows, capped, of two appends of 32 MiB of zeros each (under 1 MiB once
    # compressed), and 72 MiB of another key: a read from inside the second append needs the
    # batch decompressed, which fits only once something is freed.
    server = start_server("--max-memory", "96MiB")
    client = flight.connect(server.url)
    options = flight.FlightCallOptions(
        headers=[(b"x-flightcache-append", b"1"), (b"x-flightcache-max-rows", b"100000000")],
        write_options=pa.ipc.IpcWriteOptions(compression="lz4"),
    )
    count = 4 << 20
    for _ in range(2):
        put(client, "stream", zeros(count), options)
    put(client, "filler", pa.table({"f": pa.array(range(9 << 20), pa.int64())}))
    got = client.do_get(flight.Ticket("stream"), options=_from(count + 5)).read_all()
    assert got.num_rows == count - 5
    stats = json.loads(action(client, "stats"))
    # Trimming the key being read would free nothing while it is read.
    assert (stats["evictions"], stats["pressure_trims"]) == (1, 0), stats
    assert client.do_get(flight.Ticket("stream")).read_all().num_rows == 2 * count
    client.close()


def test_a_read_the_budget_cannot_copy_a_batch_for_is_refused_naming_where_to_start(start_server):
    server = start_server("--max-memory", "96MiB", "--eviction", "noeviction")
    client = flight.connect(server.url)
    # 64 MiB of zeros, compressed to well under 1 MiB: stored compressed, in one message
    # (checked on the way in, decompressed within the budget); then 40 MiB of another key.
    count = 8 << 20
    put(client, "zeros", zeros(count), LZ4)
    put(client, "filler", pa.table({"f": pa.array(range(5 << 20), pa.int64())}))
    # From its first row the batch is sent as stored; from inside it, it is decompressed.
    assert client.do_get(flight.Ticket("zeros")).read_all().num_rows == count
    with pytest.raises(
        pa.ArrowInvalid,
        match=rf"resource exhausted.*row 5 of .zeros. is inside a stored batch \(rows 0\.\.{count}\).*"
        rf"memory budget of 96\.00 MiB \(--max-memory\) has no room for it now.*Read from row 0 or {count}",
    ):
        client.do_get(flight.Ticket("zeros"), options=_from(5)).read_all()
    assert client.do_get(flight.Ticket("zeros"), options=_from(count)).read_all().num_rows == 0
    stats = json.loads(action(client, "stats"))
    assert stats["evictions"] == 0 and stats["memory_used"] < 48 << 20, stats
    client.close()
