"""Time the same pyarrow.flight client against two servers, put and get, for two table shapes.

Prints medians (seconds and GB/s) and the ratio flightcache / reference for each.
Run through benches/scripts/compare_pyarrow.sh, which starts both servers.
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


def measure(urls, table, repeat):
    """Median put and get seconds for each server, timed in alternation in this one process.

    Rounds alternate between the servers, and which one goes first alternates too, so that
    neither is timed while this client's own allocator is still growing or while the other's
    freed memory is still being returned: the client's state is the same for both.
    """
    clients = {name: flight.connect(url) for name, url in urls.items()}
    key = "compare"
    for client in clients.values():  # warm-up, untimed
        put(client, key, table)
        got = get(client, key)
        assert got.num_rows == table.num_rows
        del got
    times = {name: ([], []) for name in clients}
    for round_index in range(repeat):
        order = list(clients) if round_index % 2 == 0 else list(reversed(clients))
        for name in order:
            puts, gets = times[name]
            start = time.perf_counter()
            put(clients[name], key, table)
            puts.append(time.perf_counter() - start)
            start = time.perf_counter()
            got = get(clients[name], key)
            gets.append(time.perf_counter() - start)
            del got
    for client in clients.values():
        client.close()
    return {name: (statistics.median(puts), statistics.median(gets))
            for name, (puts, gets) in times.items()}


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
        medians = measure({"flightcache": args.flightcache, "reference": args.reference},
                          table, args.repeat)
        ours, ref = medians["flightcache"], medians["reference"]
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
