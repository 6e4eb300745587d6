"""What the Flight specification asks of a server, through pyarrow.flight alone: streamed
acknowledgements of uploaded app_metadata, app_metadata with each batch on get, locations,
PATH descriptors, CancelFlightInfo, and a client that behaves like Arrow's integration client."""

import pyarrow as pa
import pyarrow.flight as flight
import pytest

from arrow_types import every_type_table
from compare import assert_same_table
from flight_helpers import field

# Every call gets a deadline, so that a server that never answers fails a test instead of
# hanging it (the acknowledgement pattern waits for the server between batches).
DEADLINE = flight.FlightCallOptions(timeout=30)


def chunks(reader):
    """Every (batch, app_metadata) a do_get reader yields."""
    while True:
        try:
            chunk = reader.read_chunk()
        except StopIteration:
            return
        tag = chunk.app_metadata.to_pybytes() if chunk.app_metadata is not None else None
        yield chunk.data, tag


def test_each_batch_is_acknowledged_before_the_next_is_written(client):
    table = pa.table({"x": list(range(30))})
    writer, acks = client.do_put(flight.FlightDescriptor.for_command("acked"), table.schema, options=DEADLINE)
    for i, batch in enumerate(table.to_batches(max_chunksize=10)):
        writer.write_with_metadata(batch, pa.py_buffer(str(i).encode()))
        ack = acks.read()  # pyarrow's resumable-write pattern: wait for the echo
        assert ack is not None, f"batch {i} was not acknowledged"
        assert ack.to_pybytes() == str(i).encode()
    writer.done_writing()
    assert acks.read() is None, "only echoes when batches carry app_metadata"
    writer.close()
    assert client.do_get(flight.Ticket("acked")).read_all().equals(table)


def test_each_batch_comes_back_with_its_app_metadata(client):
    table = pa.table({"x": list(range(6)), "s": [f"v{i}" for i in range(6)]})
    batches = table.to_batches(max_chunksize=2)
    writer, _ = client.do_put(flight.FlightDescriptor.for_command("tagged"), table.schema, options=DEADLINE)
    writer.write_with_metadata(batches[0], pa.py_buffer(b"\x00first\xff"))
    writer.write_batch(batches[1])  # no app_metadata: none comes back
    writer.write_with_metadata(batches[2], pa.py_buffer(b"third"))
    writer.close()
    got = list(chunks(client.do_get(flight.Ticket("tagged"), options=DEADLINE)))
    assert [tag for _, tag in got] == [b"\x00first\xff", None, b"third"]
    assert [batch.equals(want) for (batch, _), want in zip(got, batches)] == [True] * 3


def test_locations_name_the_server_and_serve_the_ticket(server, client):
    table = pa.table({"x": [1, 2, 3]})
    writer, _ = client.do_put(flight.FlightDescriptor.for_command("located"), table.schema)
    writer.write_table(table)
    writer.close()
    port = int(server.url.rsplit(":", 1)[1])
    expected = flight.Location.for_grpc_tcp("127.0.0.1", port)
    infos = [
        client.get_flight_info(flight.FlightDescriptor.for_command("located")),
        *client.list_flights(),
    ]
    for info in infos:
        [endpoint] = info.endpoints
        assert endpoint.locations == [expected]
    # Follow the location, as a client of a distributed Flight service does.
    endpoint = infos[0].endpoints[0]
    with flight.connect(endpoint.locations[0]) as there:
        assert there.do_get(endpoint.ticket).read_all().equals(table)


@pytest.mark.parametrize("segments,key", [(["", "x"], "/x"), (["a", "", "b"], "a//b")])
def test_path_descriptors_join_every_segment(client, segments, key):
    table = pa.table({"x": [1]})
    writer, _ = client.do_put(flight.FlightDescriptor.for_path(*segments), table.schema)
    writer.write_table(table)
    writer.close()
    assert client.do_get(flight.Ticket(key)).read_all().equals(table)
    info = client.get_flight_info(flight.FlightDescriptor.for_command(key))
    assert info.total_records == 1


def encode_cancel_request(info):
    """CancelFlightInfoRequest { info = 1 } serialized by hand: pyarrow has no helper for it."""
    return field(1, info.serialize())


def test_cancel_flight_info_of_a_cached_table_is_not_cancellable(client):
    table = pa.table({"x": [1, 2]})
    writer, _ = client.do_put(flight.FlightDescriptor.for_command("kept"), table.schema)
    writer.write_table(table)
    writer.close()
    info = client.get_flight_info(flight.FlightDescriptor.for_command("kept"))
    [result] = client.do_action(flight.Action("CancelFlightInfo", encode_cancel_request(info)))
    # CancelFlightInfoResult { status = CANCEL_STATUS_NOT_CANCELLABLE (3) }
    assert result.body.to_pybytes() == b"\x08\x03"
    assert client.do_get(flight.Ticket("kept")).read_all().equals(table)


def arrow_integration_client(client, path, table):
    """What Arrow's integration client does: put batch by batch, each tagged with its index and
    acknowledged before the next is sent; then follow every location of every endpoint and
    compare the schema, every batch and every tag."""
    descriptor = flight.FlightDescriptor.for_path(path)
    batches = table.to_batches(max_chunksize=2)
    writer, acks = client.do_put(descriptor, table.schema, options=DEADLINE)
    for i, batch in enumerate(batches):
        writer.write_with_metadata(batch, pa.py_buffer(str(i).encode()))
        assert acks.read().to_pybytes() == str(i).encode()
    writer.done_writing()
    assert acks.read() is None
    writer.close()

    info = client.get_flight_info(descriptor, options=DEADLINE)
    assert info.endpoints, "no endpoints"
    for endpoint in info.endpoints:
        assert endpoint.locations, "an endpoint without a location"
        for location in endpoint.locations:
            with flight.connect(location) as there:
                reader = there.do_get(endpoint.ticket, options=DEADLINE)
                assert reader.schema.equals(table.schema, check_metadata=True)
                got = list(chunks(reader))
                assert len(got) == len(batches)
                for i, ((batch, tag), want) in enumerate(zip(got, batches)):
                    assert tag == str(i).encode(), f"batch {i} came back without its tag"
                    assert_same_table(pa.Table.from_batches([batch]), pa.Table.from_batches([want]))


def test_arrow_integration_client_round_trips_every_type_in_one_table(client):
    arrow_integration_client(client, "every-type", every_type_table())


@pytest.mark.parametrize("column", every_type_table().column_names)
def test_arrow_integration_client_round_trips_each_type_alone(client, column):
    arrow_integration_client(client, column, every_type_table().select([column]))
