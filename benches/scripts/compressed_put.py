"""What an upload compressed with LZ4 costs the server: pyarrow puts one table (an int64
sequence and a float64 column of 1,000 distinct values, `--mib` MiB uncompressed, in batches of
65,536 rows) with `IpcWriteOptions(compression="lz4")`, `--runs` times under one key; prints
the median seconds and MiB/s (uncompressed) of the puts, and the server's CPU seconds over them.

Usage: .venv/bin/python benches/scripts/compressed_put.py [--bin target/release/flightcache]
       [--mib 256] [--runs 5]
Prints one JSON object; the figures go to benches/RESULTS.md by hand.
"""

import argparse
import json
import os
import statistics
import subprocess
import time

import numpy as np
import pyarrow as pa
import pyarrow.flight as flight

MIB = 1 << 20


def cpu_seconds(pid):
    """User + system CPU seconds of process `pid` so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", default="target/release/flightcache")
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    rows = args.mib * MIB // 16
    rng = np.random.default_rng(7)
    table = pa.table(
        {"n": np.arange(rows, dtype=np.int64), "v": rng.integers(0, 1000, rows).astype(np.float64)}
    )
    batches = table.to_batches(max_chunksize=65536)
    options = flight.FlightCallOptions(write_options=pa.ipc.IpcWriteOptions(compression="lz4"))
    server = subprocess.Popen([args.bin, "serve", "--port", "0"], stdout=subprocess.PIPE, text=True)
    url = server.stdout.readline().strip().removeprefix("listening on ")
    try:
        client = flight.connect(url)
        seconds = []
        cpu_before = cpu_seconds(server.pid)
        for _ in range(args.runs):
            began = time.monotonic()
            writer, _ = client.do_put(flight.FlightDescriptor.for_command("k"), table.schema, options=options)
            for batch in batches:
                writer.write_batch(batch)
            writer.close()
            seconds.append(time.monotonic() - began)
        cpu = cpu_seconds(server.pid) - cpu_before
        median = statistics.median(seconds)
        print(
            json.dumps(
                {
                    "mib": args.mib,
                    "put_s": round(median, 3),
                    "mib_per_s": round(args.mib / median),
                    "server_cpu_s_per_put": round(cpu / args.runs, 3),
                }
            )
        )
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
