"""What several test files do with a plain pyarrow.flight client, once: put and get a table,
run an action, and the two protobuf pieces pyarrow has no helper for."""

import json

import pyarrow as pa
import pyarrow.flight as flight

# Call options that make pyarrow compress what it uploads with LZ4, one frame a buffer.
LZ4 = flight.FlightCallOptions(write_options=pa.ipc.IpcWriteOptions(compression="lz4"))


def zeros(count):
    """`count` int64 zeros in one chunk: 8 bytes a row, a few hundred times less with LZ4."""
    return pa.table({"z": pa.repeat(pa.scalar(0, pa.int64()), count)})


def put(client, key, table, options=None):
    """Upload `table` under `key` as the classic client does: for_command, write, close."""
    writer, _ = client.do_put(flight.FlightDescriptor.for_command(key), table.schema, options=options)
    writer.write_table(table)
    writer.close()


def get(client, key, options=None):
    """The table under `key`, read whole."""
    return client.do_get(flight.Ticket(key), options=options).read_all()


def action(client, name, body=b"", options=None):
    """The one result of action `name`, as bytes."""
    [result] = client.do_action(flight.Action(name, body), options=options)
    return result.body.to_pybytes()


def advance_clock(client, seconds, options=None):
    """Move the clock of a server started with `--test-clock` forward by `seconds`: its keys'
    and sessions' times to live run out as if that much time had passed."""
    return json.loads(action(client, "advance-clock", json.dumps({"seconds": seconds}).encode(), options))


def varint(n):
    """`n` as a protobuf base-128 varint."""
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field(number, payload):
    """A length-delimited protobuf field: how the Flight requests pyarrow cannot build
    (RenewFlightEndpointRequest, CancelFlightInfoRequest) wrap the message they carry."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload
