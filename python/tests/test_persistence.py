"""The data directory (`serve --data-dir`) from plain pyarrow: every table file is an Arrow IPC
file that pyarrow.ipc reads without the server, and a restarted server serves the same tables."""

import glob
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.flight as flight
import pyarrow.ipc as ipc
import pytest

from arrow_types import every_type_table
from compare import assert_same_table
from flight_helpers import action, get, put


def same(got, want):
    """Equal tables; a dictionary column by its values (its chunks' dictionaries differ as
    deltas accumulate, in any reader)."""
    assert got.schema.equals(want.schema, check_metadata=True), f"{got.schema}\n!=\n{want.schema}"
    assert got.num_rows == want.num_rows
    for name in want.column_names:
        if pa.types.is_dictionary(want.schema.field(name).type):
            assert got.column(name).to_pylist() == want.column(name).to_pylist(), name
        else:
            assert_same_table(got.select([name]), want.select([name]))


def put_with(client, name, table, **write_options):
    options = flight.FlightCallOptions(write_options=ipc.IpcWriteOptions(**write_options))
    writer, _ = client.do_put(flight.FlightDescriptor.for_command(name), table.schema, options=options)
    writer.write_table(table, max_chunksize=2)
    writer.close()


def tables():
    """Tables whose files pyarrow reads back: every type in batches of 2 rows, compressed
    buffers, dictionary deltas, an empty table."""
    first = pa.array(["a", "b", "a"]).dictionary_encode()
    second = pa.DictionaryArray.from_arrays(pa.array([2, 0, None], pa.int32()), pa.array(["a", "b", "c"]))
    deltas = pa.Table.from_batches([pa.record_batch([first], names=["d"]), pa.record_batch([second], names=["d"])])
    numbers = pa.table({"x": np.arange(10_000), "s": [f"v{i % 100}" for i in range(10_000)]})
    empty = pa.schema([("x", pa.int64()), ("y", pa.utf8())], metadata={"k": "v"}).empty_table()
    return {
        "every/type": (every_type_table(), {}),
        "zstd": (numbers, {"compression": "zstd"}),
        "deltas": (deltas, {"emit_dictionary_deltas": True}),
        "empty": (empty, {}),
    }


@pytest.mark.parametrize("durability", ["always", "background"])
def test_table_files_read_back_with_pyarrow_and_after_a_restart(start_server, tmp_path, durability):
    data = str(tmp_path / "data")
    server = start_server("--data-dir", data, "--durability", durability)
    assert server.data_dir_line == f"data directory {data} (--durability {durability}): 0 tables, 0 B back from disk"
    client = flight.connect(server.url)
    for name, (table, options) in tables().items():
        put_with(client, name, table, **options)
    served = {name: get(client, name) for name in tables()}
    server.stop()

    files = glob.glob(os.path.join(data, "tables", "*.arrow"))
    assert len(files) == len(tables())
    by_key = {}
    for path in files:
        reader = ipc.open_file(path)
        by_key[json.loads(reader.metadata[b"flightcache"])["key"]] = path
    for name, (table, _) in tables().items():
        # The footer names the key; the Arrow data is the table as put.
        same(served[name], table)
        same(ipc.open_file(by_key[name]).read_all(), table)

    server = start_server("--data-dir", data, "--durability", durability)
    assert server.data_dir_line.startswith(f"data directory {data} (--durability {durability}): 4 tables, ")
    client = flight.connect(server.url)
    for name, (table, _) in tables().items():
        same(get(client, name), table)
    assert sorted(info.descriptor.command.decode() for info in client.list_flights()) == sorted(tables())
    stats = json.loads(action(client, "stats"))
    assert stats["disk_tables"] == 4 and stats["disk_write_failures"] == 0


def test_the_classic_blog_client_gets_its_table_after_a_restart(start_server, tmp_path):
    data = str(tmp_path / "data")
    server = start_server("--data-dir", data, "--durability", "always")
    client = flight.connect(server.url)
    table = pa.table({"city": ["Paris", "Lyon"], "people": [2_100_000, 520_000]})
    put(client, "cities", table)
    server.stop()
    client = flight.connect(start_server("--data-dir", data).url)
    assert get(client, "cities").equals(table)
