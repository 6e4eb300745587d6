"""Flight SQL over one giant batch with a nested column, as pyarrow sends a table chunk (one
message however large; a batch with a nested column is stored as it came, never re-split).

The table: `k` int64 (100 values) and `l` list<int64> of 8 values a row, in one batch of
--mib MiB. Queries through ADBC's Flight SQL driver, beside a plain `do_get` of the table:

(a) `SELECT sum(k)`; (b) `SELECT k, sum(array_length(l)) ... GROUP BY k`; (c) `SELECT *`.

With --max-memory the server runs under that budget (the table takes its share of it).

Usage: .venv/bin/python benches/scripts/sql_nested.py [--bin target/release/flightcache]
       [--mib 512] [--repeat 3] [--max-memory 2GiB]
Prints one JSON object: the median seconds of each, or the error a query was refused with.
"""

import argparse
import json
import statistics
import subprocess
import time

import adbc_driver_flightsql.dbapi as flight_sql
import numpy as np
import pyarrow as pa
import pyarrow.flight as flight

QUERIES = {
    "a_sum_k": 'SELECT sum(k) AS s FROM "t"',
    "b_group_by_k": 'SELECT k, sum(array_length(l)) AS v FROM "t" GROUP BY k',
    "c_select_star": 'SELECT * FROM "t"',
}


def nested_table(mib):
    """`k` and a list column of 8 int64 a row: about `mib` MiB."""
    rows = (mib << 20) // (8 + 4 + 64)
    values = pa.array(np.arange(rows * 8, dtype=np.int64))
    offsets = pa.array(np.arange(0, rows * 8 + 1, 8, dtype=np.int32))
    lists = pa.ListArray.from_arrays(offsets, values)
    return pa.table({"k": pa.array(np.arange(rows, dtype=np.int64) % 100), "l": lists})


def timed(run, repeat):
    """Median seconds of `repeat` runs of `run`, or the error it raised."""
    seconds = []
    for _ in range(repeat):
        start = time.perf_counter()
        try:
            run()
        except Exception as err:  # noqa: BLE001 (the refusal is the figure)
            return str(err).splitlines()[0][:200]
        seconds.append(time.perf_counter() - start)
    return round(statistics.median(seconds), 3)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bin", default="target/release/flightcache")
    parser.add_argument("--mib", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--max-memory", default=None)
    args = parser.parse_args()
    command = [args.bin, "serve", "--port", "0"]
    if args.max_memory:
        command += ["--max-memory", args.max_memory]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        url = server.stdout.readline().strip().removeprefix("listening on ")
        client = flight.connect(url)
        table = nested_table(args.mib)
        writer, _ = client.do_put(flight.FlightDescriptor.for_command("t"), table.schema)
        writer.write_table(table)
        writer.close()
        result = {"rows": table.num_rows, "table_mib": round(table.nbytes / 2**20, 1)}
        with flight_sql.connect(url.replace("grpc+tcp", "grpc")) as conn:

            def query(sql):
                with conn.cursor() as cursor:
                    cursor.execute(sql)
                    cursor.fetch_arrow_table()

            for name, sql in QUERIES.items():
                result[name] = timed(lambda sql=sql: query(sql), args.repeat)
        result["do_get"] = timed(
            lambda: client.do_get(flight.Ticket(b"t")).read_all(), args.repeat
        )
        print(json.dumps(result))
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
