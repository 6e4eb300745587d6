"""Hostile clients, with pyarrow as the judge: mutated uploads are refused or read back valid,
and client mistakes are INVALID_ARGUMENT with a bounded message. Raw requests go through grpcio,
since pyarrow only sends what it encodes itself. (Timeouts are tested in Rust, on a paused
clock.)"""

import os
import random
import re

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


def pyarrow_reads(messages):
    """pyarrow's verdict on an IPC stream of (header, body) messages: the table it reads and
    fully validates, or None if it refuses the stream (what Arrow C++ would refuse to read)."""
    stream = b""
    for header, body in messages:
        if not header:
            if body:
                return None  # Flight's readers refuse a body without a header
            continue  # a Flight message with neither carries nothing
        try:
            message = pa.ipc.read_message(pa.py_buffer(ipc_message_bytes(header, body)))
        except (pa.ArrowException, OSError, ValueError):
            return None
        declared = message.body.size if message.body is not None else 0
        if declared != len(body):
            return None  # Flight carries each body whole: one of another length is malformed
        stream += message.serialize().to_pybytes()
    try:
        table = pa.ipc.open_stream(stream).read_all()
        table.validate(full=True)
        return table
    except (pa.ArrowException, OSError, ValueError, OverflowError):
        return None


def ipc_message_bytes(header, body):
    """One encapsulated IPC message: continuation, length, header padded to 8, body."""
    padding = (8 - (len(header) + 8) % 8) % 8
    size = len(header) + padding
    return b"\xff\xff\xff\xff" + size.to_bytes(4, "little") + header + b"\x00" * padding + body


def _ipc_bytes(table):
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def same_table(got, want):
    """Whether two tables hold the same schema (with metadata) and values, bit for bit: the
    same bytes once pyarrow writes both (pyarrow's `equals` holds NaN unequal to itself)."""
    if not got.schema.equals(want.schema, check_metadata=True):
        return False
    return got.equals(want) or _ipc_bytes(got) == _ipc_bytes(want)


# Refusals of what pyarrow reads, each for a reason that makes storing it unsafe: a table
# arrow-rs (the Rust clients') readers refuse or misread. Each says what it is and why; see
# docs/protocol.md, "What is refused".
STRICTER_THAN_PYARROW = {
    # The flatbuffers format holds strings as UTF-8; C++'s verifier does not check, Rust's does.
    "not valid Arrow IPC (Utf8 error": "a header string that is not UTF-8",
    # A view under a null slot pointing outside its buffers: C++ skips null slots, arrow-rs
    # checks every view.
    "Invalid buffer slice": "a view out of its buffers under a null slot",
    # A batch length other than its columns': C++ reads the columns' own lengths.
    "rows, the batch": "a batch whose declared rows are not its columns'",
    # Nulls in a non-nullable field: C++ does not enforce nullability, arrow-rs does.
    "declared as non-nullable but contains null values": "nulls in a non-nullable field",
    # Nodes or buffers the schema has no column for: C++ ignores the extra ones.
    "its schema calls for": "more nodes or buffers than the schema's columns",
    # Null counts above the length (matched with their numbers below): C++ recounts them.
    "and null count": "a null count above its array's length",
    # Served as uploaded, so big-endian bytes would reach little-endian readers unswapped
    # (pyarrow swaps as it reads; arrow-rs refuses).
    "the schema is big-endian": "a big-endian schema",
}


def stricter_reason(problem):
    """Why a refusal of what pyarrow reads is allowed, or None."""
    node = re.search(r"declares length (-?\d+) and null count (-?\d+)", problem)
    if node and not 0 <= int(node.group(1)) < int(node.group(2)):
        return None  # only a null count above a sound length is allowed
    return next((why for text, why in STRICTER_THAN_PYARROW.items() if text in problem), None)


def upload(server, key, messages):
    requests = [
        flight_data(header, body, key=key if j == 0 else None)
        for j, (header, body) in enumerate(messages)
    ]
    return raw_call(server.url, DO_PUT, requests)


def test_mutated_uploads_are_judged_as_pyarrow_judges_them(server, client):
    """The fuzzer's property with pyarrow as the judge, in both directions: an upload pyarrow
    reads and fully validates is stored and read back exactly as pyarrow read it (every
    unmutated seed first of all); one it refuses is refused as INVALID_ARGUMENT, saying what
    is wrong. The server may refuse more only for its own safety (sizes), which these small
    uploads never reach."""
    cases = int(os.environ.get("FLIGHTCACHE_PY_FUZZ_CASES", "600"))
    rng = random.Random(int(os.environ.get("FLIGHTCACHE_PY_FUZZ_SEED", "20261201")))
    # Without the test's own extension type: pyarrow hands its metadata to this test's Python
    # code, whose refusals say nothing of the server.
    table = every_type_table().drop_columns(["label"])
    seeds = [ipc_messages(table)] + [
        ipc_messages(table.select([name])) for name in table.column_names
    ]
    for number, messages in enumerate(seeds):
        key = f"seed-{number}".encode()
        code, details = upload(server, key, messages)
        assert code == grpc.StatusCode.OK, f"seed {number} refused: {details}"
        assert same_table(client.do_get(flight.Ticket(key)).read_all(), pyarrow_reads(messages))
    verdicts = {"stored": 0, "refused": 0}
    disagreements = []
    stricter = {}
    for case in range(cases):
        messages = rng.choice(seeds)
        for _ in range(rng.randrange(1, 3)):
            messages = mutate(rng, messages)
        key = f"fuzz-{case}".encode()
        want = pyarrow_reads(messages)
        code, details = upload(server, key, messages)
        if code == grpc.StatusCode.OK:
            got = client.do_get(flight.Ticket(key)).read_all()
            got.validate(full=True)
            verdicts["stored"] += 1
            if want is None:
                disagreements.append(f"case {case}: stored, but pyarrow refuses to read it")
            elif not same_table(got, want):
                disagreements.append(f"case {case}: read back other than pyarrow reads it")
        else:
            assert code == grpc.StatusCode.INVALID_ARGUMENT, f"case {case}: {code} {details}"
            problem = details.partition("nothing was stored: ")[2]
            assert problem.strip(), f"case {case}: a refusal that does not say what is wrong: {details}"
            verdicts["refused"] += 1
            if want is not None:
                why = stricter_reason(problem)
                if why is None:
                    disagreements.append(f"case {case}: refused ({problem[:200]}), but pyarrow reads it")
                else:
                    stricter[why] = stricter.get(why, 0) + 1
    print(
        f"{cases} mutated uploads: {verdicts['stored']} stored, {verdicts['refused']} refused, "
        f"of which pyarrow reads (refused as unsafe): {stricter}"
    )
    assert not disagreements, f"{len(disagreements)} verdicts differ from pyarrow's:\n" + "\n".join(disagreements[:10])
    # Both verdicts must occur, or the mutations test nothing.
    assert verdicts["stored"] and verdicts["refused"], verdicts


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
