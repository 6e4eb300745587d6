"""Appends per second as a key grows without retention, while readers hold the table.

An append must not cost more as the key grows. It changes the key's table under the store's
index lock, which every put, append and drop takes; while a reader holds that table, it
changes a clone of it (whose list of segments shares all but a few nodes with the reader's
since session 19; before, a copy of the whole list).

Readers (--readers):
- snapshot (default): two threads take gets from `latest` over and over, each holding the
  table for a moment;
- stalled: one get of the whole key is opened and never read past its first batch, so the
  server holds what it started to send throughout.

--dictionary appends a dictionary-encoded column: such appends are never merged (a batch may
need an earlier append's dictionary), so every append stays a segment of its own. Without it,
the key's tiny appends are merged 64 at a time in the background.

Usage: .venv/bin/python benches/scripts/many_appends.py [--bin target/release/flightcache]
       [--appends 20000] [--readers snapshot|stalled] [--dictionary]
Prints JSON: appends per second and the server's CPU time per append (user + system) in each
of 8 blocks, and the rows the key ends with.
"""
import argparse
import json
import os
import subprocess
import threading
import time

import pyarrow as pa
import pyarrow.flight as flight

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--bin", default="target/release/flightcache")
parser.add_argument("--appends", type=int, default=20000)
parser.add_argument("--readers", choices=["snapshot", "stalled"], default="snapshot")
parser.add_argument("--dictionary", action="store_true")
args = parser.parse_args()

server = subprocess.Popen([args.bin, "serve", "--port", "0"], stdout=subprocess.PIPE, text=True)
url = server.stdout.readline().strip().removeprefix("listening on ")
client = flight.connect(url)
append_options = flight.FlightCallOptions(headers=[(b"x-flightcache-append", b"1")])
table = pa.table({"x": pa.array(range(10), pa.int64())})
if args.dictionary:
    table = table.append_column("d", pa.array(["a", "b"] * 5).dictionary_encode())


def append():
    writer, _ = client.do_put(
        flight.FlightDescriptor.for_command("k"), table.schema, options=append_options
    )
    writer.write_table(table)
    writer.close()


append()
stop = threading.Event()
threads = []
stalled = None
if args.readers == "snapshot":

    def reader():
        reader_client = flight.connect(url)
        latest = flight.FlightCallOptions(headers=[(b"x-flightcache-from", b"latest")])
        while not stop.is_set():
            reader_client.do_get(flight.Ticket(b"k"), options=latest).read_all()

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for thread in threads:
        thread.start()
else:
    # 64 MiB first, far more than the HTTP/2 window lets the get send unread.
    big = pa.concat_tables([table] * 400_000).combine_chunks()
    writer, _ = client.do_put(
        flight.FlightDescriptor.for_command("k"), table.schema, options=append_options
    )
    writer.write_table(big, max_chunksize=65536)
    writer.close()
    stalled_client = flight.connect(url)
    stalled = stalled_client.do_get(flight.Ticket(b"k"))
    stalled.read_chunk()



def server_cpu_seconds():
    """The server's user + system CPU time so far."""
    with open(f"/proc/{server.pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


block = args.appends // 8
rates = []
cpu_us = []
for _ in range(8):
    start, cpu = time.perf_counter(), server_cpu_seconds()
    for _ in range(block):
        append()
    rates.append(round(block / (time.perf_counter() - start)))
    cpu_us.append(round((server_cpu_seconds() - cpu) / block * 1e6))
stop.set()
for thread in threads:
    thread.join()
info = client.get_flight_info(flight.FlightDescriptor.for_command("k"))
print(json.dumps({
    "readers": args.readers,
    "dictionary": args.dictionary,
    "appends_per_s_by_block": rates,
    "server_cpu_us_per_append_by_block": cpu_us,
    "block": block,
    "rows": info.total_records,
}))
server.terminate()
server.wait()
