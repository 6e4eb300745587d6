"""The plain pyarrow.flight server flightcache is compared with: do_put keeps
`reader.read_all()` in a dict, do_get returns `RecordBatchStream(table)`."""

import pyarrow.flight as flight


class ReferenceServer(flight.FlightServerBase):
    def __init__(self, location="grpc://127.0.0.1:0"):
        super().__init__(location)
        self.tables = {}

    def do_put(self, context, descriptor, reader, writer):
        self.tables[descriptor.command] = reader.read_all()

    def do_get(self, context, ticket):
        return flight.RecordBatchStream(self.tables[ticket.ticket])


if __name__ == "__main__":
    server = ReferenceServer()
    print(f"listening on grpc://127.0.0.1:{server.port}", flush=True)
    server.serve()
