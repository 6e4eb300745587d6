"""What a key costs the server beyond its data: the server's resident memory (VmRSS) before and
after --keys puts of a 10-row table (one int64 column) under keys of their own.

Usage: .venv/bin/python benches/scripts/many_keys.py [--bin target/release/flightcache]
       [--keys 50000]
Prints JSON: RSS before and after, and the growth per key in bytes.
"""
import argparse
import json
import subprocess

import pyarrow as pa
import pyarrow.flight as flight

from streams import rss  # benches/scripts/streams.py

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--bin", default="target/release/flightcache")
parser.add_argument("--keys", type=int, default=50000)
args = parser.parse_args()


server = subprocess.Popen([args.bin, "serve", "--port", "0"], stdout=subprocess.PIPE, text=True)
try:
    url = server.stdout.readline().strip().removeprefix("listening on ")
    client = flight.connect(url)
    table = pa.table({"x": pa.array(range(10), pa.int64())})

    def put(key):
        writer, _ = client.do_put(flight.FlightDescriptor.for_command(key), table.schema)
        writer.write_table(table)
        writer.close()

    put("warm-up")
    before = rss(server.pid)
    for i in range(args.keys):
        put(f"key-{i}")
    after = rss(server.pid)
    print(json.dumps({
        "keys": args.keys,
        "rss_before_mib": round(before / 2**20, 1),
        "rss_after_mib": round(after / 2**20, 1),
        "bytes_per_key": round((after - before) / args.keys),
    }))
finally:
    server.terminate()
    server.wait()
