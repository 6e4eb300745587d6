"""Flight SQL over one giant batch with a nested or view column, as pyarrow sends a table
chunk (one message however large; such a batch is stored as it came, never re-split).

The table: `k` int64 (100 values) and `v`, in one batch of --mib MiB: with --column list,
list<int64> of 8 values a row; with --column string_view, strings of 60 characters; with
--column dictionary, the same strings dictionary-encoded (a dictionary of one value a row). Queries
through ADBC's Flight SQL driver, beside a plain `do_get` of the table:

(a) `SELECT sum(k)`; (b) `SELECT k, sum(size of v) ... GROUP BY k`; (c) `SELECT *`.

With --batch-rows N the table is uploaded in batches of N rows instead (a dictionary column's
one dictionary then written once for all of them). With --max-memory the server runs under
that budget (the table takes its share of it).

Usage: .venv/bin/python benches/scripts/sql_nested.py [--bin target/release/flightcache]
       [--mib 512] [--repeat 3] [--max-memory 2GiB] [--column list|string_view|dictionary]
       [--batch-rows N]
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

SIZE_OF = {"list": "array_length(v)", "string_view": "length(v)", "dictionary": "length(v)"}


def queries(column):
    """The three queries over a table whose `v` is a `column`."""
    return {
        "a_sum_k": 'SELECT sum(k) AS s FROM "t"',
        "b_group_by_k": f'SELECT k, sum({SIZE_OF[column]}) AS v FROM "t" GROUP BY k',
        "c_select_star": 'SELECT * FROM "t"',
    }


def giant_table(mib, column):
    """`k` and a `column` column: about `mib` MiB."""
    if column == "list":
        rows = (mib << 20) // (8 + 4 + 64)
        values = pa.array(np.arange(rows * 8, dtype=np.int64))
        offsets = pa.array(np.arange(0, rows * 8 + 1, 8, dtype=np.int32))
        v = pa.ListArray.from_arrays(offsets, values)
    elif column == "string_view":
        rows = (mib << 20) // (8 + 16 + 60)
        v = pa.array([f"{i:060d}" for i in range(rows)], pa.string_view())
    else:
        rows = (mib << 20) // (8 + 4 + 4 + 60)
        v = pa.array([f"{i:060d}" for i in range(rows)]).dictionary_encode()
    return pa.table({"k": pa.array(np.arange(rows, dtype=np.int64) % 100), "v": v})


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
    parser.add_argument("--column", choices=["list", "string_view", "dictionary"], default="list")
    parser.add_argument("--batch-rows", type=int, default=None)
    args = parser.parse_args()
    command = [args.bin, "serve", "--port", "0"]
    if args.max_memory:
        command += ["--max-memory", args.max_memory]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        url = server.stdout.readline().strip().removeprefix("listening on ")
        client = flight.connect(url)
        table = giant_table(args.mib, args.column)
        writer, _ = client.do_put(flight.FlightDescriptor.for_command("t"), table.schema)
        writer.write_table(table, max_chunksize=args.batch_rows)
        writer.close()
        result = {
            "column": args.column,
            "batch_rows": args.batch_rows,
            "rows": table.num_rows,
            "table_mib": round(table.nbytes / 2**20, 1),
        }
        with flight_sql.connect(url.replace("grpc+tcp", "grpc")) as conn:

            def query(sql):
                with conn.cursor() as cursor:
                    cursor.execute(sql)
                    cursor.fetch_arrow_table()

            for name, sql in queries(args.column).items():
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
