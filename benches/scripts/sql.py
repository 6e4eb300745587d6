"""What Flight SQL saves a reader, in one run: a query against taking the whole table and
filtering it in Python, and against DuckDB in-process over the same Arrow table (no network).

On a cached table of about 1 GiB (64 float64 columns, an int64 `id`, an int32 `k` with 100
values, a short string `s`):

(a) selective: `SELECT id, c1 FROM t WHERE k = 7` (1% of the rows, 2 columns);
(b) aggregate: `SELECT sum(c0) FROM t`;
(c) everything: `SELECT * FROM t`, against a plain `do_get` of the table.

Each through ADBC's Flight SQL driver (what Python users run), beside a plain pyarrow `do_get`
+ `pyarrow.compute` (what they do today) and DuckDB over the Arrow table in the same process.
The server's resident memory is sampled every 5 ms during (a) and (b); its growth over the
resident memory before the query is reported.

With `--compression lz4` (or zstd) the table is uploaded compressed, as pyarrow writes it with
`IpcWriteOptions(compression=...)`, and stored so: each query decompresses the columns it reads.

Usage: .venv/bin/python benches/scripts/sql.py [--bin target/release/flightcache] [--repeat 5]
       [--gib 1.0] [--compression none|lz4|zstd]
Prints one JSON object; the figures go to benches/RESULTS.md by hand.
"""

import argparse
import json
import statistics
import subprocess
import threading
import time

import adbc_driver_flightsql.dbapi as flight_sql
import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.flight as flight

SELECTIVE = 'SELECT id, c1 FROM "t" WHERE k = 7'
AGGREGATE = 'SELECT sum(c0) AS s FROM "t"'
EVERYTHING = 'SELECT * FROM "t"'


def make_table(gib):
    row_bytes = 64 * 8 + 8 + 4 + 8
    rows = int(gib * (1 << 30) / row_bytes)
    rng = np.random.default_rng(0)
    columns = {f"c{i}": rng.random(rows) for i in range(64)}
    ids = np.arange(rows, dtype=np.int64)
    columns["id"] = ids
    columns["k"] = (ids % 100).astype(np.int32)
    columns["s"] = pa.array(np.char.add("s", (ids % 1000).astype(str)))
    return pa.table(columns)


def statement_query(sql):
    """A Flight SQL CommandStatementQuery in a protobuf Any, encoded by hand (pyarrow has no
    Flight SQL)."""

    def field(number, payload):
        out = bytes([number << 3 | 2])
        length = len(payload)
        while length >= 0x80:
            out += bytes([length & 0x7F | 0x80])
            length >>= 7
        return out + bytes([length]) + payload

    url = b"type.googleapis.com/arrow.flight.protocol.sql.CommandStatementQuery"
    return field(1, url) + field(2, field(1, sql.encode()))


class Serve:
    def __init__(self, binary):
        self.process = subprocess.Popen(
            [binary, "serve", "--port", "0", "--max-memory", "0"], stdout=subprocess.PIPE, text=True
        )
        self.url = self.process.stdout.readline().strip().removeprefix("listening on ")

    def rss(self):
        with open(f"/proc/{self.process.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=60)


class PeakRss:
    """The server's peak resident memory while the block runs, sampled every 5 ms."""

    def __init__(self, server):
        self.server = server

    def __enter__(self):
        self.before = self.server.rss()
        self.peak = self.before
        self.running = True
        self.thread = threading.Thread(target=self._sample)
        self.thread.start()
        return self

    def _sample(self):
        while self.running:
            self.peak = max(self.peak, self.server.rss())
            time.sleep(0.005)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()
        self.growth = self.peak - self.before


def timed(run, repeat):
    seconds = []
    result = None
    for _ in range(repeat):
        start = time.perf_counter()
        result = run()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds), seconds, result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bin", default="target/release/flightcache")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--gib", type=float, default=1.0)
    parser.add_argument("--compression", choices=["none", "lz4", "zstd"], default="none")
    args = parser.parse_args()
    codec = None if args.compression == "none" else args.compression
    put_options = flight.FlightCallOptions(write_options=pa.ipc.IpcWriteOptions(compression=codec))

    table = make_table(args.gib)
    nbytes = table.nbytes
    server = Serve(args.bin)
    try:
        client = flight.connect(server.url)
        descriptor = flight.FlightDescriptor.for_command("t")
        writer, _ = client.do_put(descriptor, table.schema, options=put_options)
        writer.write_table(table, max_chunksize=65536)
        writer.close()
        conn = flight_sql.connect(server.url, autocommit=True)
        cursor = conn.cursor()
        duck = duckdb.connect()
        duck.register("t", table)

        def sql(query):
            cursor.execute(query)
            return cursor.fetch_arrow_table()

        def get_all():
            return client.do_get(flight.Ticket(b"t")).read_all()

        def get_then_filter():
            whole = get_all()
            return whole.filter(pc.equal(whole["k"], 7)).select(["id", "c1"])

        def get_then_sum():
            return pc.sum(get_all()["c0"]).as_py()

        report = {
            "table_bytes": nbytes,
            "rows": table.num_rows,
            "repeat": args.repeat,
            "compression": args.compression,
        }
        # Warm up each path once.
        sql(SELECTIVE), get_then_filter(), duck.execute(SELECTIVE).to_arrow_table()

        with PeakRss(server) as selective_rss:
            a_sql, a_sql_runs, a_result = timed(lambda: sql(SELECTIVE), args.repeat)
        a_get, a_get_runs, a_expected = timed(get_then_filter, args.repeat)
        a_duck, _, _ = timed(lambda: duck.execute(SELECTIVE).to_arrow_table(), args.repeat)
        assert a_result.sort_by("id").equals(a_expected.sort_by("id"))
        report["a_selective"] = {
            "flight_sql_s": a_sql,
            "get_then_filter_s": a_get,
            "duckdb_in_process_s": a_duck,
            "speedup_over_get_then_filter": a_get / a_sql,
            "server_rss_growth_mib": selective_rss.growth / (1 << 20),
            "runs": {"flight_sql": a_sql_runs, "get_then_filter": a_get_runs},
        }

        with PeakRss(server) as aggregate_rss:
            b_sql, b_sql_runs, b_result = timed(lambda: sql(AGGREGATE), args.repeat)
        b_get, _, b_expected = timed(get_then_sum, args.repeat)
        b_duck, b_duck_runs, _ = timed(lambda: duck.execute(AGGREGATE).fetchall(), args.repeat)
        assert abs(b_result["s"][0].as_py() - b_expected) < 1e-6 * abs(b_expected)
        report["b_aggregate"] = {
            "flight_sql_s": b_sql,
            "get_then_sum_s": b_get,
            "duckdb_in_process_s": b_duck,
            "flight_sql_over_duckdb": b_sql / b_duck,
            "server_rss_growth_mib": aggregate_rss.growth / (1 << 20),
            "runs": {"flight_sql": b_sql_runs, "duckdb": b_duck_runs},
        }

        def statement_via_pyarrow(query):
            # The same Flight SQL statement read by pyarrow's Flight client (C++), as the
            # plain get is: isolates the server's cost from the ADBC driver's (Go, then the C
            # data interface).
            command = flight.FlightDescriptor.for_command(statement_query(query))
            info = client.get_flight_info(command)
            return client.do_get(info.endpoints[0].ticket).read_all()

        c_sql, c_sql_runs, c_result = timed(lambda: sql(EVERYTHING), args.repeat)
        c_get, c_get_runs, _ = timed(get_all, args.repeat)
        c_pyarrow, c_pyarrow_runs, _ = timed(lambda: statement_via_pyarrow(EVERYTHING), args.repeat)
        assert c_result.num_rows == table.num_rows
        report["c_everything"] = {
            "flight_sql_s": c_sql,
            "flight_sql_gb_per_s": nbytes / c_sql / 1e9,
            "do_get_s": c_get,
            "do_get_gb_per_s": nbytes / c_get / 1e9,
            "flight_sql_over_do_get_throughput": c_get / c_sql,
            "flight_sql_read_by_pyarrow_s": c_pyarrow,
            "flight_sql_read_by_pyarrow_over_do_get_throughput": c_get / c_pyarrow,
            "runs": {
                "flight_sql": c_sql_runs,
                "do_get": c_get_runs,
                "flight_sql_read_by_pyarrow": c_pyarrow_runs,
            },
        }
        cursor.close()
        conn.close()
    finally:
        server.stop()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
