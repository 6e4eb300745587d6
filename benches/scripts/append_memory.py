"""What a key's appends cost in memory and time: one pyarrow.flight producer appends
`--appends` batches of `--rows` rows (an int64 and a float64 column: 16 bytes a row) to one
key, as fast as it goes; prints the appends per second, the server's VmRSS growth, its
`stats` (data bytes against the table memory charged to the budget), and how long a pyarrow
get of the whole key takes (best of three) beside a get of the same rows put as one batch.

Usage: .venv/bin/python benches/scripts/append_memory.py [--bin target/release/flightcache]
       [--rows 65536] [--appends 64]
Prints one JSON object; the figures go to benches/RESULTS.md by hand.
"""

import argparse
import json
import subprocess
import time

import pyarrow as pa
import pyarrow.flight as flight

from streams import MIB, batch, fc_append, rss  # benches/scripts/streams.py


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", default="target/release/flightcache")
    parser.add_argument("--rows", type=int, default=65536)
    parser.add_argument("--appends", type=int, default=64)
    args = parser.parse_args()
    server = subprocess.Popen([args.bin, "serve", "--port", "0"], stdout=subprocess.PIPE, text=True)
    url = server.stdout.readline().strip().removeprefix("listening on ")
    try:
        client = flight.connect(url)
        base = rss(server.pid)
        table = batch(0, args.rows)
        start = time.monotonic()
        for _ in range(args.appends):
            fc_append(client, "k", table)
        seconds = time.monotonic() - start
        time.sleep(0.5)
        stats = json.loads(next(client.do_action(flight.Action("stats", b""))).body.to_pybytes())
        grown = rss(server.pid) - base
        whole = pa.concat_tables([table] * args.appends).combine_chunks()
        writer, _ = client.do_put(flight.FlightDescriptor.for_command("one"), whole.schema)
        writer.write_table(whole)
        writer.close()

        def get_ms(key):
            best = float("inf")
            for _ in range(3):
                start = time.monotonic()
                client.do_get(flight.Ticket(key)).read_all()
                best = min(best, time.monotonic() - start)
            return round(best * 1e3, 1)

        print(json.dumps({
            "rows": args.rows,
            "appends": args.appends,
            "data_mib": round(stats["bytes"] / MIB, 1),
            "table_memory_mib": round(stats["memory_tables"] / MIB, 1),
            "rss_growth_mib": round(grown / MIB, 1),
            "appends_per_s": round(args.appends / seconds),
            "get_appended_ms": get_ms(b"k"),
            "get_one_batch_ms": get_ms(b"one"),
        }))
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
