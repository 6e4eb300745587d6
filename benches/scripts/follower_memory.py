"""What a follower costs the server beyond its connection: server VmRSS with one key, then with
100 idle pyarrow.flight connections (one `list_actions` each), then with those 100 connections
each following the key (`x-flightcache-follow: 1`).

Usage: .venv/bin/python benches/scripts/follower_memory.py [--bin target/release/flightcache]
       [--connections 100]
Prints one JSON object (MiB); the figures go to benches/RESULTS.md by hand.
"""

import argparse
import json
import subprocess
import time

import pyarrow as pa
import pyarrow.flight as flight

from streams import rss  # benches/scripts/streams.py: the server's VmRSS


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", default="target/release/flightcache")
    parser.add_argument("--connections", type=int, default=100)
    args = parser.parse_args()
    server = subprocess.Popen([args.bin, "serve", "--port", "0"], stdout=subprocess.PIPE, text=True)
    url = server.stdout.readline().strip().removeprefix("listening on ")
    try:
        client = flight.connect(url)
        append = flight.FlightCallOptions(headers=[(b"x-flightcache-append", b"1")])
        writer, _ = client.do_put(flight.FlightDescriptor.for_command("k"), pa.schema([("x", pa.int64())]), options=append)
        writer.write_table(pa.table({"x": [1]}))
        writer.close()
        time.sleep(0.5)
        base = rss(server.pid)
        connections = []
        for _ in range(args.connections):
            connection = flight.connect(url)
            list(connection.list_actions())
            connections.append(connection)
        time.sleep(0.5)
        idle = rss(server.pid)
        follow = flight.FlightCallOptions(headers=[(b"x-flightcache-follow", b"1")])
        readers = [c.do_get(flight.Ticket(b"k"), options=follow) for c in connections]
        time.sleep(0.5)
        following = rss(server.pid)
        mib = 1 << 20
        print(json.dumps({
            "connections": args.connections,
            "base_mib": round(base / mib, 2),
            "idle_connections_mib": round(idle / mib, 2),
            "following_mib": round(following / mib, 2),
            "per_connection_kib": round((idle - base) / args.connections / 1024, 1),
            "per_follower_beyond_its_connection_kib": round((following - idle) / args.connections / 1024, 1),
        }))
        del readers
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
