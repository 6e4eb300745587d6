"""Peak server RSS while pyarrow uploads one table as a single chunk (what pa.table(numpy_arrays)
gives): `flightcache serve` in a process of its own, its RSS sampled every 5 ms from /proc during
the first put of the table, then a get back compared with the table.

    .venv/bin/python benches/scripts/single_chunk_rss.py [--gib 1] [--binary target/release/flightcache]

Target (issue 11): peak at most 1.1 x the table + 64 MiB, counted from the server's idle RSS.
"""

import argparse
import subprocess
import threading
import time

import numpy as np
import pyarrow as pa
import pyarrow.flight as flight


def rss_bytes(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gib", type=float, default=1.0, help="table size in GiB")
    parser.add_argument("--binary", default="target/release/flightcache")
    parser.add_argument("--period-ms", type=float, default=5.0)
    args = parser.parse_args()

    columns = 64
    rows = int(args.gib * (1 << 30)) // (8 * columns)
    rng = np.random.default_rng(1)
    table = pa.table({f"c{i}": rng.random(rows) for i in range(columns)})
    assert table.column(0).num_chunks == 1
    table_bytes = table.nbytes

    server = subprocess.Popen([args.binary, "serve", "--port", "0"], stdout=subprocess.PIPE, text=True)
    try:
        url = server.stdout.readline().strip().removeprefix("listening on ")
        client = flight.connect(url)
        client.list_flights()  # connected, server warm
        time.sleep(1.0)
        idle = rss_bytes(server.pid)

        peak, samples, done = [idle], [0], threading.Event()

        def sample():
            while not done.is_set():
                peak[0] = max(peak[0], rss_bytes(server.pid))
                samples[0] += 1
                time.sleep(args.period_ms / 1000)

        sampler = threading.Thread(target=sample)
        sampler.start()
        start = time.perf_counter()
        writer, _ = client.do_put(flight.FlightDescriptor.for_command("one-chunk"), table.schema)
        writer.write_table(table)
        writer.close()
        elapsed = time.perf_counter() - start
        time.sleep(0.2)
        done.set()
        sampler.join()
        holding = rss_bytes(server.pid)
        got = client.do_get(flight.Ticket("one-chunk")).read_all()
        assert got.equals(table), "the table came back different"
        client.close()
    finally:
        server.terminate()
        server.wait(timeout=60)

    mib = 1 << 20
    growth = peak[0] - idle
    target = 1.1 * table_bytes + 64 * mib
    print(f"table: {table_bytes / mib:.0f} MiB in one chunk ({columns} float64 columns), put in {elapsed:.2f} s")
    print(f"server RSS: idle {idle / mib:.0f} MiB, peak {peak[0] / mib:.0f} MiB over {samples[0]} samples "
          f"every {args.period_ms:g} ms, holding {holding / mib:.0f} MiB")
    print(f"peak growth {growth / mib:.0f} MiB = {growth / table_bytes:.3f} x the table "
          f"(target 1.1 x + 64 MiB = {target / mib:.0f} MiB: {'met' if growth <= target else 'MISSED'})")


if __name__ == "__main__":
    main()
