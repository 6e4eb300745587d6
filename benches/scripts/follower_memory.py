"""What followers cost the server, with and without a connection each: server memory with one
follower, then with 100 (issue 23's aim: 100 followers at most 5% more than one).

Two servers, one after the other, each holding one key:
- shared: one pyarrow.flight client follows the key (`x-flightcache-follow: 1`), then 99 more
  follows on the same client (gRPC multiplexes calls over one HTTP/2 connection);
- own connections: one client follows, then 99 more clients connect (one `list_actions`
  each: the idle connection's cost), then each follows.

Memory is VmRSS (what the issue measures) and RssAnon (the process's own heap and stacks,
without the binary's pages, which vary between runs by the text faulted in).

Usage: .venv/bin/python benches/scripts/follower_memory.py [--bin target/release/flightcache]
       [--followers 100]
Prints one JSON object (MiB, KiB); the figures go to benches/RESULTS.md by hand.
"""

import argparse
import json
import subprocess
import time

import pyarrow as pa
import pyarrow.flight as flight

from streams import MIB  # benches/scripts/streams.py

FOLLOW = flight.FlightCallOptions(headers=[(b"x-flightcache-follow", b"1")])


def memory(pid):
    """(VmRSS, RssAnon) of `pid`, in bytes."""
    fields = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "RssAnon"):
                fields[name] = int(value.split()[0]) * 1024
    return fields["VmRSS"], fields["RssAnon"]


def settled(pid):
    time.sleep(0.5)
    return memory(pid)


def measure(binary, followers, shared):
    server = subprocess.Popen([binary, "serve", "--port", "0"], stdout=subprocess.PIPE, text=True)
    url = server.stdout.readline().strip().removeprefix("listening on ")
    try:
        first = flight.connect(url)
        append = flight.FlightCallOptions(headers=[(b"x-flightcache-append", b"1")])
        writer, _ = first.do_put(flight.FlightDescriptor.for_command("k"), pa.schema([("x", pa.int64())]), options=append)
        writer.write_table(pa.table({"x": [1]}))
        writer.close()
        readers = [first.do_get(flight.Ticket(b"k"), options=FOLLOW)]
        readers[0].read_chunk()
        one = settled(server.pid)
        result = {}
        if shared:
            clients = [first] * (followers - 1)
        else:
            clients = [flight.connect(url) for _ in range(followers - 1)]
            for client in clients:
                list(client.list_actions())
            idle = settled(server.pid)
            result["per_idle_connection_kib"] = round((idle[0] - one[0]) / (followers - 1) / 1024, 1)
            result["per_idle_connection_anon_kib"] = round((idle[1] - one[1]) / (followers - 1) / 1024, 1)
        for client in clients:
            reader = client.do_get(flight.Ticket(b"k"), options=FOLLOW)
            reader.read_chunk()
            readers.append(reader)
        many = settled(server.pid)
        result.update({
            "one_follower_mib": round(one[0] / MIB, 2),
            f"{followers}_followers_mib": round(many[0] / MIB, 2),
            "increase_pct": round((many[0] / one[0] - 1) * 100, 1),
            "one_follower_anon_mib": round(one[1] / MIB, 2),
            f"{followers}_followers_anon_mib": round(many[1] / MIB, 2),
            "anon_increase_pct": round((many[1] / one[1] - 1) * 100, 1),
        })
        del readers
        return result
    finally:
        server.terminate()
        server.wait()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", default="target/release/flightcache")
    parser.add_argument("--followers", type=int, default=100)
    args = parser.parse_args()
    print(json.dumps({
        "followers": args.followers,
        "shared_connection": measure(args.bin, args.followers, shared=True),
        "own_connections": measure(args.bin, args.followers, shared=False),
    }))


if __name__ == "__main__":
    main()
