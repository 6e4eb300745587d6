"""Time the same pyarrow.flight client against two servers, put and get, for two table shapes.

Prints medians (seconds and GB/s) and the ratio flightcache / reference for each.
Run through scripts/compare_pyarrow.sh, which starts both servers.
"""

import argparse
import json
import statistics
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.flight as flight


def tables(size_bytes, cols):
    rows = size_bytes // (8 * cols)
    rng = np.random.default_rng(42)
    columns = {f"c{i}": rng.random(rows) for i in range(cols)}
    single = pa.table(columns)  # one chunk: pyarrow sends it as one giant message
    batch_rows = max(1, (1 << 20) // (8 * cols))
    batched = pa.Table.from_batches(single.to_batches(max_chunksize=batch_rows))  # ~1 MiB batches
    return {"1MiB-batches": batched, "single-chunk": single}


def put(client, key, table):
    writer, _ = client.do_put(flight.FlightDescriptor.for_command(key), table.schema)
    writer.write_table(table)
    writer.close()


def get(client, key):
    return client.do_get(flight.Ticket(key)).read_all()


def measure(url, table, repeat):
    client = flight.connect(url)
    key = "compare"
    put(client, key, table)  # warm-up, untimed
    got = get(client, key)
    assert got.num_rows == table.num_rows
    del got
    puts, gets = [], []
    for _ in range(repeat):
        start = time.perf_counter()
        put(client, key, table)
        puts.append(time.perf_counter() - start)
        start = time.perf_counter()
        got = get(client, key)
        gets.append(time.perf_counter() - start)
        del got
    client.close()
    return statistics.median(puts), statistics.median(gets)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--flightcache", required=True, help="URL of flightcache serve")
    parser.add_argument("--reference", required=True, help="URL of the pyarrow reference server")
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--cols", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print a JSON record instead")
    args = parser.parse_args()

    results = []
    for shape, table in tables(args.size_mib << 20, args.cols).items():
        nbytes = table.nbytes
        ours = measure(args.flightcache, table, args.repeat)
        ref = measure(args.reference, table, args.repeat)
        for i, op in enumerate(["put", "get"]):
            results.append({
                "shape": shape, "operation": op, "bytes": nbytes,
                "flightcache_s": ours[i], "reference_s": ref[i],
                "flightcache_gbps": nbytes / ours[i] / 1e9, "reference_gbps": nbytes / ref[i] / 1e9,
                "ratio": ref[i] / ours[i],
            })
    if args.json:
        json.dump({"pyarrow": pa.__version__, "repeat": args.repeat, "results": results}, sys.stdout, indent=2)
        print()
        return
    print(f"pyarrow {pa.__version__}; {args.size_mib} MiB random float64, {args.cols} columns; "
          f"medians of {args.repeat} rounds")
    print(f"{'shape':<14} {'op':<4} {'flightcache s':>14} {'GB/s':>7} {'reference s':>12} {'GB/s':>7} {'ratio':>7}")
    for r in results:
        print(f"{r['shape']:<14} {r['operation']:<4} {r['flightcache_s']:>14.4f} {r['flightcache_gbps']:>7.3f} "
              f"{r['reference_s']:>12.4f} {r['reference_gbps']:>7.3f} {r['ratio']:>6.2f}x")


if __name__ == "__main__":
    main()
