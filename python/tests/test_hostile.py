"""Hostile clients, with pyarrow as the judge: mutated uploads are refused or read back valid,
and client mistakes are INVALID_ARGUMENT with a bounded message. Raw requests go through grpcio,
since pyarrow only sends what it encodes itself. (Timeouts are tested in Rust, on a paused
clock.)"""

import os
import random
import re
import struct

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


def header_numbers(header):
    """The positions of the 8-byte aligned little-endian integers of a flatbuffer header that
    look like a length, a count or an offset (0 to 2^24): a field node's length and null count,
    a buffer's offset and length are such integers."""
    return [
        pos
        for pos in range(0, len(header) - 7, 8)
        if 0 <= struct.unpack_from("<q", header, pos)[0] <= 1 << 24
    ]


def nudged(header, pos, delta):
    """`header` with the integer at `pos` changed by `delta`."""
    header = bytearray(header)
    struct.pack_into("<q", header, pos, struct.unpack_from("<q", header, pos)[0] + delta)
    return bytes(header)


def mutate(rng, messages):
    """One random change to (header, body) messages: bits, extreme bytes, lengths or offsets
    off by a little, cuts, drops."""
    messages = list(messages)
    i = rng.randrange(len(messages))
    header, body = messages[i]
    kind = rng.randrange(7)
    if kind == 6 and header and header_numbers(header):
        header = nudged(header, rng.choice(header_numbers(header)), rng.choice([-8, -1, 1, 8]))
    elif kind in (0, 1) and header:
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
    same bytes once pyarrow writes both (pyarrow's `equals` holds NaN unequal to itself).
    Bytes past the end of an array's values are not values: pyarrow writes a buffer with up to
    64 bytes of them, and the server keeps only whole values, so those are compared once each
    column is copied to buffers of its values alone."""
    if not got.schema.equals(want.schema, check_metadata=True):
        return False
    if got.equals(want) or _ipc_bytes(got) == _ipc_bytes(want):
        return True
    return _ipc_bytes(_values_only(got)) == _ipc_bytes(_values_only(want))


def _values_only(table):
    """`table` with each column copied into buffers that hold its values and nothing past
    them (pyarrow's concatenation copies exactly the slots it is given)."""
    columns = [
        pa.concat_arrays([*column.chunks, column.chunks[0].slice(0, 0)]) if column.num_chunks else column
        for column in table.columns
    ]
    return pa.table(columns, schema=table.schema)


# Refusals of what pyarrow reads, each for a reason that makes storing it unsafe: a table
# arrow-rs (the Rust clients') readers refuse or misread. Each says what it is and why; see
# docs/protocol.md, "What is refused".
STRICTER_THAN_PYARROW = {
    # The flatbuffers format holds strings as UTF-8; C++'s verifier does not check, Rust's does.
    "not valid Arrow IPC (Utf8 error": "a header string that is not UTF-8",
    # A view under a null slot pointing outside its buffers: C++ skips null slots, arrow-rs
    # checks every view.
    "Invalid buffer slice": "a view out of its buffers under a null slot",
    # Nulls declared on a union, which has no validity bitmap: C++ never writes any, and
    # ignores them as it reads.
    "it has no validity bitmap": "nulls declared on a union",
    # A buffer whose offset is not a multiple of 8 (here, of no bytes): C++ writes every
    # buffer 8-byte aligned.
    "8-byte aligned range": "an unaligned buffer",
    # Enum values the format does not define (a time unit of 128): C++ never writes one.
    "<UNKNOWN": "an undefined enum value",
    # A decimal scale arrow-rs cannot hold (it keeps scales in 8 bits): C++ checks none.
    "Invalid decimal scale": "a decimal scale outside -128 to 127",
    # Run ends declared nullable: C++ writes them non-nullable, as the format says.
    "field defining run_ends array": "nullable run ends",
    # A null array whose null count is not its length: C++ reads every slot as null anyway.
    "of NullArray has unequal null_count": "a null array's null count other than its length",
    # Views with bytes after a short string's data: C++ writes zeros there.
    "contained non-zero padding": "a short view with non-zero padding",
    # A null in a non-nullable child where its list has none: nullability again (below).
    "non-nullable child of type": "nulls in a non-nullable field",
    # Buffers the header lists in a form arrow-rs cannot take (a missing buffer list, an
    # index past it) where C++ reads the columns without them: C++ never writes either.
    "Unable to get buffers from IPC RecordBatch": "a record batch without its buffer list",
    "Invalid buffer index": "a buffer index past the buffer list",
    # A struct child longer than its struct: C++ never writes one, and reads the struct's
    # length where arrow-rs reads the child's, so the two would disagree on its rows.
    "a struct's children have its length": "a struct child longer than its struct",
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
    if node:
        length, null_count = int(node.group(1)), int(node.group(2))
        if null_count < 0 <= length:
            # C++ takes a negative null count as "unknown" and counts the nulls as it reads;
            # it never writes one.
            return "a negative null count (unknown)"
        if not 0 <= length < null_count:
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
    verdicts = Verdicts()
    for case in range(cases):
        messages = rng.choice(seeds)
        for _ in range(rng.randrange(1, 3)):
            messages = mutate(rng, messages)
        verdicts.judge(server, client, f"fuzz-{case}", messages)
    print(f"{cases} mutated uploads: {verdicts}")
    verdicts.assert_pyarrows()


def test_every_length_and_offset_off_by_one_is_judged_as_pyarrow_judges_it(server, client):
    """Each integer of each nested column's record batch header that may be a length, a null
    count or a buffer offset (see `header_numbers`), one more and one less, judged as the
    fuzzer judges: a struct node one row short under a map was stored while pyarrow refused it
    (the random fuzzer found it once in 20,000 cases)."""
    table = every_type_table()
    nested = ["list", "large_list", "fixed_list", "list_view", "large_list_view", "struct", "map",
              "sparse_union", "dense_union", "list_of_dict", "struct_of_dict", "run_end", "nested"]
    verdicts = Verdicts()
    for name in nested:
        messages = ipc_messages(table.select([name]))
        for i, (header, body) in enumerate(messages):
            if i == 0 or not body:
                continue  # the schema, and dictionary batches without a body
            for pos in header_numbers(header):
                for delta in (-1, 1):
                    changed = list(messages)
                    changed[i] = (nudged(header, pos, delta), body)
                    verdicts.judge(server, client, f"nudge-{name}-{i}-{pos}-{delta}", changed)
    print(f"nudged uploads: {verdicts}")
    verdicts.assert_pyarrows()


class Verdicts:
    """The server's verdicts on uploads, held against pyarrow's."""

    def __init__(self):
        self.stored = 0
        self.refused = 0
        self.stricter = {}
        self.disagreements = []

    def __repr__(self):
        return (f"{self.stored} stored, {self.refused} refused, of which pyarrow reads "
                f"(refused as unsafe): {self.stricter}")

    def judge(self, server, client, case, messages):
        """Upload `messages` under the key `case`; note where the verdict differs from
        pyarrow's. An upload pyarrow reads and fully validates must be stored and read back
        exactly as pyarrow read it; one it refuses must be refused as INVALID_ARGUMENT,
        saying what is wrong."""
        want = pyarrow_reads(messages)
        code, details = upload(server, case.encode(), messages)
        if code == grpc.StatusCode.OK:
            got = client.do_get(flight.Ticket(case.encode())).read_all()
            got.validate(full=True)
            self.stored += 1
            if want is None:
                self.disagreements.append(f"{case}: stored, but pyarrow refuses to read it")
            elif not same_table(got, want):
                self.disagreements.append(f"{case}: read back other than pyarrow reads it")
            return
        assert code == grpc.StatusCode.INVALID_ARGUMENT, f"{case}: {code} {details}"
        problem = details.partition("nothing was stored: ")[2]
        assert problem.strip(), f"{case}: a refusal that does not say what is wrong: {details}"
        self.refused += 1
        if want is not None:
            why = stricter_reason(problem)
            if why is None:
                self.disagreements.append(f"{case}: refused ({problem[:200]}), but pyarrow reads it")
            else:
                self.stricter[why] = self.stricter.get(why, 0) + 1

    def assert_pyarrows(self):
        """Every verdict was pyarrow's, and both verdicts occurred (or the cases tested
        nothing)."""
        assert not self.disagreements, (
            f"{len(self.disagreements)} verdicts differ from pyarrow's:\n"
            + "\n".join(self.disagreements[:10])
        )
        assert self.stored and self.refused, self


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
