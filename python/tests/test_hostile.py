"""Hostile clients, with pyarrow as the judge: mutated uploads are refused or read back valid,
and client mistakes are INVALID_ARGUMENT with a bounded message. Raw requests go through grpcio,
since pyarrow only sends what it encodes itself. (Timeouts are tested in Rust, on a paused
clock.)"""

import os
import random

import grpc
import pyarrow as pa
import pyarrow.flight as flight
import pytest

from arrow_types import every_type_table
from flight_helpers import field, varint

DO_PUT = "/arrow.flight.protocol.FlightService/DoPut"
DO_ACTION = "/arrow.flight.protocol.FlightService/DoAction"
GET_FLIGHT_INFO = "/arrow.flight.protocol.FlightService/GetFlightInfo"
DEADLINE_S = 30


def flight_data(header=b"", body=b"", key=None):
    """A FlightData message, serialized by hand: descriptor (1), header (2), body (1000)."""
    out = b""
    if key is not None:
        descriptor = varint(1 << 3) + varint(2) + field(2, key)  # type CMD, cmd
        out += field(1, descriptor)
    if header:
        out += field(2, header)
    if body:
        out += field(1000, body)
    return out


def ipc_messages(table):
    """The IPC messages (flatbuffer header, body) pyarrow writes for `table`."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        for batch in table.to_batches(max_chunksize=2):
            writer.write_batch(batch)
    reader = pa.ipc.MessageReader.open_stream(sink.getvalue())
    return [(m.metadata.to_pybytes(), m.body.to_pybytes() if m.body else b"") for m in reader]


def raw_call(url, path, requests, unary=False):
    """Send raw serialized requests; the gRPC status code and details."""
    target = url.removeprefix("grpc://")
    with grpc.insecure_channel(target) as channel:
        try:
            if unary:
                call = channel.unary_unary(path)
                call(requests, timeout=DEADLINE_S)
            else:
                call = channel.stream_stream(path)
                for _ in call(iter(requests), timeout=DEADLINE_S):
                    pass
        except grpc.RpcError as err:
            return err.code(), err.details()
    return grpc.StatusCode.OK, ""


def mutate(rng, messages):
    """One random change to (header, body) messages: bits, extreme bytes, cuts, drops."""
    messages = list(messages)
    i = rng.randrange(len(messages))
    header, body = messages[i]
    kind = rng.randrange(6)
    if kind in (0, 1) and header:
        header = bytearray(header)
        for _ in range(rng.randrange(1, 4)):
            header[rng.randrange(len(header))] ^= 1 << rng.randrange(8)
        header = bytes(header)
    elif kind == 2 and header:
        header = bytearray(header)
        header[rng.randrange(len(header))] = rng.choice([0x00, 0xFF, 0x7F, 0x80])
        header = bytes(header)
    elif kind == 3 and body:
        body = bytearray(body)
        for _ in range(rng.randrange(1, 6)):
            body[rng.randrange(len(body))] = rng.choice([0x00, 0xFF, 0x7F, 0x80, 0x01])
        body = bytes(body)
    elif kind == 4 and body:
        body = body[: rng.randrange(len(body))]
    else:
        messages.pop(i)
        if rng.random() < 0.5:
            messages.insert(rng.randrange(len(messages) + 1), (header, body))
        return messages or [(header, body)]
    messages[i] = (header, body)
    return messages


def test_mutated_uploads_are_refused_or_read_back_valid_by_pyarrow(server, client):
    """The fuzzer's property, with pyarrow as the reader: every upload the server accepts,
    pyarrow reads back and validates fully; every one it refuses is INVALID_ARGUMENT."""
    cases = int(os.environ.get("FLIGHTCACHE_PY_FUZZ_CASES", "300"))
    rng = random.Random(int(os.environ.get("FLIGHTCACHE_PY_FUZZ_SEED", "20261201")))
    # Without the test's own extension type: pyarrow hands its metadata to this test's Python
    # code, whose refusals say nothing of the server.
    table = every_type_table().drop_columns(["label"])
    seeds = [ipc_messages(table)] + [
        ipc_messages(table.select([name])) for name in table.column_names
    ]
    accepted = refused = 0
    for case in range(cases):
        messages = rng.choice(seeds)
        for _ in range(rng.randrange(1, 3)):
            messages = mutate(rng, messages)
        key = f"fuzz-{case}".encode()
        requests = [
            flight_data(header, body, key=key if j == 0 else None)
            for j, (header, body) in enumerate(messages)
        ]
        code, details = raw_call(server.url, DO_PUT, requests)
        if code == grpc.StatusCode.OK:
            got = client.do_get(flight.Ticket(key)).read_all()
            got.validate(full=True)
            accepted += 1
        else:
            assert code == grpc.StatusCode.INVALID_ARGUMENT, f"case {case}: {code} {details}"
            problem = details.partition("nothing was stored: ")[2]
            assert problem.strip(), f"case {case}: a refusal that does not say what is wrong: {details}"
            refused += 1
    print(f"{cases} mutated uploads: {accepted} accepted and valid, {refused} refused")
    assert refused > cases // 4


def test_malformed_requests_are_invalid_argument_not_internal(server):
    garbage = b"\xff\xff\xff"
    for path in [DO_PUT, DO_ACTION, GET_FLIGHT_INFO]:
        code, details = raw_call(server.url, path, [garbage] if path == DO_PUT else garbage, unary=path != DO_PUT)
        assert code == grpc.StatusCode.INVALID_ARGUMENT, (path, code, details)
    # A PATH descriptor segment that is not UTF-8: protobuf strings must be.
    bad_path = field(2, b"\xff\xfe")  # path = [b"\xff\xfe"]
    code, _ = raw_call(server.url, GET_FLIGHT_INFO, varint(1 << 3) + varint(1) + bad_path, unary=True)
    assert code == grpc.StatusCode.INVALID_ARGUMENT


def test_a_huge_unknown_action_name_is_quoted_in_part(client):
    name = "x" * (1 << 20)
    with pytest.raises(pa.ArrowInvalid) as refused:
        list(client.do_action(flight.Action(name, b"")))
    message = str(refused.value)
    assert len(message) < 1000, len(message)
    assert "1048576 bytes, cut" in message
    assert "drop, clear, stats" in message
