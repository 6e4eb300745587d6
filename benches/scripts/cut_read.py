"""What a read that starts inside a stored batch costs: one key holding one large batch as
pyarrow sends it (nested, so stored whole; `--compressed` for LZ4, as pyarrow compresses it),
read with pyarrow from its first row and from row 1 (the rest of the batch encoded again),
alternating, `--runs` times each; prints the median time of each read and the server's peak
VmRSS growth (VmHWM) over the reads from row 1, against the batch's size.

Usage: .venv/bin/python benches/scripts/cut_read.py [--bin target/release/flightcache]
       [--rows 8000000] [--runs 5] [--compressed]
Prints one JSON object; the figures go to benches/RESULTS.md by hand.
"""

import argparse
import json
import statistics
import subprocess
import time

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.flight as flight

MIB = 1 << 20


def status_kib(pid, field):
    """A `field` of /proc/PID/status (VmRSS, VmHWM), in KiB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def reset_peak(pid):
    """Start VmHWM again from the current VmRSS (Linux 4.0+: write 5 to clear_refs)."""
    with open(f"/proc/{pid}/clear_refs", "w") as refs:
        refs.write("5")


def table(rows):
    """`rows` lists of four int64s (every seventh list null): 33 bytes a row."""
    values = pa.array(range(rows * 4), pa.int64())
    offsets = pa.array(range(0, rows * 4 + 1, 4), pa.int32())
    mask = pc.equal(pc.bit_wise_and(pa.array(range(rows), pa.int64()), 7), 0)
    lists = pa.ListArray.from_arrays(offsets, values, mask=mask)
    return pa.table({"lists": lists})


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", default="target/release/flightcache")
    parser.add_argument("--rows", type=int, default=8_000_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--compressed", action="store_true")
    args = parser.parse_args()
    server = subprocess.Popen([args.bin, "serve", "--port", "0"], stdout=subprocess.PIPE, text=True)
    url = server.stdout.readline().strip().removeprefix("listening on ")
    try:
        client = flight.connect(url)
        data = table(args.rows)
        write_options = pa.ipc.IpcWriteOptions(compression="lz4" if args.compressed else None)
        options = flight.FlightCallOptions(write_options=write_options)
        writer, _ = client.do_put(flight.FlightDescriptor.for_command("big"), data.schema, options=options)
        writer.write_table(data)
        writer.close()
        stats = json.loads(next(client.do_action(flight.Action("stats", b""))).body.to_pybytes())
        times = {0: [], 1: []}
        peaks = []
        for _ in range(args.runs):
            for start in (0, 1):
                time.sleep(0.2)
                base = status_kib(server.pid, "VmRSS")
                reset_peak(server.pid)
                headers = [(b"x-flightcache-from", str(start).encode())]
                began = time.monotonic()
                got = client.do_get(flight.Ticket("big"), flight.FlightCallOptions(headers=headers)).read_all()
                times[start].append(time.monotonic() - began)
                assert got.num_rows == args.rows - start
                if start == 1:
                    peaks.append((status_kib(server.pid, "VmHWM") - base) / 1024)
                del got
        print(
            json.dumps(
                {
                    "rows": args.rows,
                    "compressed": args.compressed,
                    "data_mib": round(data.nbytes / MIB, 1),
                    "table_memory_mib": round(stats["memory_tables"] / MIB, 1),
                    "read_from_0_ms": round(statistics.median(times[0]) * 1000, 1),
                    "read_from_1_ms": round(statistics.median(times[1]) * 1000, 1),
                    "peak_rss_growth_from_1_mib": round(statistics.median(peaks), 1),
                }
            )
        )
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
