"""flightcache against the real pyarrow.flight client, with no other package."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.flight
import pytest

from arrow_types import every_type_table
from compare import assert_same_table
from flight_helpers import get, put


def test_blog_client_code_works_unchanged(server):
    # The classic "Flight vs JSON" client, with pa.table in place of pandas.
    def push_to_server(name, data, client):
        object_to_send = pa.table(data)
        writer, _ = client.do_put(pa.flight.FlightDescriptor.for_command(name), object_to_send.schema)
        writer.write_table(object_to_send)
        writer.close()

    def get_from_server(name, client):
        reader = client.do_get(pa.flight.Ticket(name))
        return reader.read_all()

    client = pa.flight.FlightClient(server.url)
    data = {"a": np.arange(1000), "b": np.random.rand(1000)}
    push_to_server("blog", data, client)
    got = get_from_server("blog", client)
    assert_same_table(got, pa.table(data))


def test_put_answers_rows_and_bytes_as_json(client):
    table = pa.table({"x": np.arange(500, dtype=np.int64)})
    writer, metadata = client.do_put(pa.flight.FlightDescriptor.for_command("t"), table.schema)
    writer.write_table(table)
    writer.done_writing()
    summary = json.loads(metadata.read().to_pybytes())
    writer.close()
    assert summary["key"] == "t"
    assert summary["rows"] == 500
    assert summary["bytes"] >= 500 * 8


def test_list_flights_lists_every_key_and_filters_by_prefix(client):
    for name in ["b/2", "a", "b/1"]:
        put(client, name, pa.table({"x": [1, 2, 3]}))
    infos = list(client.list_flights())
    assert sorted(i.descriptor.command.decode() for i in infos) == ["a", "b/1", "b/2"]
    assert all(i.total_records == 3 for i in infos)
    assert all(i.schema.equals(pa.schema([("x", pa.int64())])) for i in infos)
    prefixed = list(client.list_flights(b"b/"))
    assert sorted(i.descriptor.command.decode() for i in prefixed) == ["b/1", "b/2"]


def test_get_flight_info_describes_the_table_and_its_ticket_works(client):
    table = pa.table({"x": np.arange(10_000), "y": np.random.rand(10_000)})
    put(client, "info", table)
    info = client.get_flight_info(pa.flight.FlightDescriptor.for_command("info"))
    assert info.total_records == 10_000
    assert info.total_bytes >= table.nbytes
    assert info.schema.equals(table.schema, check_metadata=True)
    assert len(info.endpoints) == 1
    got = client.do_get(info.endpoints[0].ticket).read_all()
    assert_same_table(got, table)


def test_path_descriptors_name_the_same_table_as_commands(client):
    table = pa.table({"x": [1, 2]})
    writer, _ = client.do_put(pa.flight.FlightDescriptor.for_path("nyc", "trips"), table.schema)
    writer.write_table(table)
    writer.close()
    assert_same_table(get(client, "nyc/trips"), table)
    info = client.get_flight_info(pa.flight.FlightDescriptor.for_command("nyc/trips"))
    assert info.total_records == 2


def test_get_schema_returns_the_schema_with_metadata(client):
    table = every_type_table()
    put(client, "typed", table)
    result = client.get_schema(pa.flight.FlightDescriptor.for_command("typed"))
    assert result.schema.equals(table.schema, check_metadata=True)


def test_actions_drop_clear_and_stats(client):
    names = sorted(a.type for a in client.list_actions())
    # flightcache's own actions, Flight's standard ones, and Flight SQL's prepared statements.
    assert names == [
        "CancelFlightInfo", "ClosePreparedStatement", "CreatePreparedStatement", "RenewFlightEndpoint",
        "clear", "drop", "expire", "persist", "retain", "stats", "ttl", "whoami"
    ]
    put(client, "a", pa.table({"x": [1, 2, 3]}))
    put(client, "b", pa.table({"x": [4]}))
    get(client, "a")
    stats = json.loads(next(iter(client.do_action(pa.flight.Action("stats", b"")))).body.to_pybytes())
    assert (stats["tables"], stats["rows"], stats["puts"], stats["gets"]) == (2, 4, 2, 1)
    dropped = json.loads(next(iter(client.do_action(pa.flight.Action("drop", b"a")))).body.to_pybytes())
    assert (dropped["key"], dropped["rows"]) == ("a", 3)
    cleared = json.loads(next(iter(client.do_action(pa.flight.Action("clear", b"")))).body.to_pybytes())
    assert cleared == {"tables": 1}
    assert list(client.list_flights()) == []


def test_unknown_keys_raise_arrow_key_error(client):
    with pytest.raises(pa.ArrowKeyError, match="nope"):
        get(client, "nope")
    with pytest.raises(pa.ArrowKeyError, match="nope"):
        client.get_flight_info(pa.flight.FlightDescriptor.for_command("nope"))
    with pytest.raises(pa.ArrowKeyError, match="nope"):
        client.get_schema(pa.flight.FlightDescriptor.for_command("nope"))
    with pytest.raises(pa.ArrowKeyError, match="nope"):
        list(client.do_action(pa.flight.Action("drop", b"nope")))


def test_unknown_action_is_invalid_and_lists_the_valid_ones(client):
    with pytest.raises(pa.ArrowInvalid, match="drop, clear, stats"):
        list(client.do_action(pa.flight.Action("flushall", b"")))


def test_every_arrow_type_round_trips(client):
    table = every_type_table()
    put(client, "types", table)
    got = get(client, "types")
    assert_same_table(got, table)
    assert got.schema.field("label").type == table.schema.field("label").type
    assert got.schema.field("uuid").type == pa.uuid()


@pytest.mark.parametrize("column", every_type_table().column_names)
def test_each_arrow_type_round_trips_alone(client, column):
    table = every_type_table().select([column])
    put(client, column, table)
    assert_same_table(get(client, column), table)


def test_dictionaries_may_change_between_batches(client):
    chunks = [pa.array(["a", "b", None]).dictionary_encode(), pa.array(["z", None, "y"]).dictionary_encode()]
    table = pa.Table.from_batches([pa.record_batch([c], names=["d"]) for c in chunks])
    put(client, "dicts", table)
    got = get(client, "dicts")
    assert_same_table(got, table)
    assert got.column("d").type == pa.dictionary(pa.int32(), pa.utf8())


def test_many_batches_come_back_in_order(client):
    batches = [pa.record_batch({"id": np.arange(i * 1000, (i + 1) * 1000)}) for i in range(50)]
    table = pa.Table.from_batches(batches)
    put(client, "ordered", table)
    got = get(client, "ordered")
    assert_same_table(got.combine_chunks(), table.combine_chunks())
    assert got.column("id").to_numpy().tolist() == list(range(50_000))


def test_empty_table_keeps_its_schema(client):
    schema = pa.schema([("x", pa.int64()), ("y", pa.utf8())], metadata={"k": "v"})
    writer, _ = client.do_put(pa.flight.FlightDescriptor.for_command("empty"), schema)
    writer.close()
    got = get(client, "empty")
    assert got.num_rows == 0
    assert got.schema.equals(schema, check_metadata=True)


def test_overwrite_replaces_the_table(client):
    put(client, "k", pa.table({"v": [1, 2, 3]}))
    put(client, "k", pa.table({"w": ["new"]}))
    assert_same_table(get(client, "k"), pa.table({"w": ["new"]}))
    assert len(list(client.list_flights())) == 1


def test_a_300_mb_single_batch_round_trips(client):
    # pa.table over numpy arrays is one chunk, so pyarrow sends it as one giant message.
    rows = 300 * 1000 * 1000 // (8 * 8)
    table = pa.table({f"c{i}": np.random.default_rng(i).random(rows) for i in range(8)})
    assert table.column(0).num_chunks == 1
    assert table.nbytes >= 300 * 1000 * 1000
    put(client, "big", table)
    info = client.get_flight_info(pa.flight.FlightDescriptor.for_command("big"))
    assert info.total_records == rows
    got = get(client, "big")
    assert got.num_rows == rows
    assert got.equals(table)


def put_with(client, name, table, **write_options):
    options = pa.flight.FlightCallOptions(write_options=pa.ipc.IpcWriteOptions(**write_options))
    writer, _ = client.do_put(pa.flight.FlightDescriptor.for_command(name), table.schema, options=options)
    writer.write_table(table)
    writer.close()


@pytest.mark.parametrize("codec", ["zstd", "lz4"])
def test_compressed_uploads_round_trip(client, codec):
    table = pa.table({"x": np.arange(100_000), "s": [f"v{i % 100}" for i in range(100_000)]})
    put_with(client, f"compressed-{codec}", table, compression=codec)
    assert_same_table(get(client, f"compressed-{codec}"), table)


def test_dictionary_deltas_round_trip(client):
    # The second batch's dictionary extends the first, so pyarrow sends a delta dictionary batch.
    first = pa.array(["a", "b", "a"]).dictionary_encode()
    second = pa.DictionaryArray.from_arrays(pa.array([2, 0, None], pa.int32()), pa.array(["a", "b", "c"]))
    table = pa.Table.from_batches([pa.record_batch([first], names=["d"]), pa.record_batch([second], names=["d"])])
    put_with(client, "deltas", table, emit_dictionary_deltas=True)
    got = get(client, "deltas")
    assert got.column("d").to_pylist() == ["a", "b", "a", "c", "a", None]
    assert got.schema.equals(table.schema, check_metadata=True)


def test_batches_keep_their_app_metadata_and_metadata_alone_is_not_stored(client):
    # write_with_metadata puts app_metadata between the IPC header and the body of a message;
    # write_metadata sends a message with app_metadata alone. The first comes back with its
    # batch; the second is acknowledged but not stored, since pyarrow's read_all() would end
    # the table at it. Batches of 2 MiB, so that their bodies go into the server's table
    # memory, not its heap.
    batches = [pa.record_batch({"x": np.arange(i << 18, (i + 1) << 18, dtype=np.float64)}) for i in range(4)]
    writer, _ = client.do_put(pa.flight.FlightDescriptor.for_command("meta"), batches[0].schema)
    writer.write_metadata(pa.py_buffer(b"before the batches"))
    for i, batch in enumerate(batches):
        writer.write_with_metadata(batch, pa.py_buffer(f"batch {i}".encode()))
    writer.close()
    got = get(client, "meta")
    assert_same_table(got, pa.Table.from_batches(batches))
    assert got.to_batches()[3].column(0)[0].as_py() == float(3 << 18)
    reader = client.do_get(pa.flight.Ticket("meta"))
    tags = [chunk.app_metadata.to_pybytes() for chunk in iter_chunks(reader)]
    assert tags == [f"batch {i}".encode() for i in range(4)]


def iter_chunks(reader):
    while True:
        try:
            yield reader.read_chunk()
        except StopIteration:
            return
