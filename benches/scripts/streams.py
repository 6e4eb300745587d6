"""Keys that grow, measured beside Redis Streams in one run: one producer appends, followers
receive (issue 23).

1. Latency: one producer appends 1,000-row batches (one batch an append, every --interval-ms),
   followed by 1 and 16 followers (pyarrow.flight processes) and 100 followers (this crate's
   client: `flightcache bench --followers 100`, whose producer is in the same process, one
   append every 10 ms): from each
   append's acknowledgement to each follower's receipt of it, p50 and p99. Redis Streams the
   same way: `XADD` of the same Arrow IPC bytes, followers in `XREAD BLOCK` (redis-py; 1 and
   16 processes, and 100 as asyncio connections in 4 processes), each decoding the Arrow bytes.
2. Fan-out throughput: 64 appends of 1 MiB (one float64 column) read by 16 followers from the
   first row: 16 x 64 MiB over the time from the first append to the last follower's last
   batch. Redis the same, XADD + XREAD of the IPC bytes.
3. Server memory: flightcache's resident memory (VmRSS) while 1 and while 100 followers read
   (the crate's client, same appends), and while one follower stalls (reads one batch, then
   nothing) as 100 appends of 1 MiB arrive under `x-flightcache-max-rows` of 8 of them.

Times are CLOCK_MONOTONIC (`time.monotonic_ns`), the same clock in every process.

Usage: .venv/bin/python benches/scripts/streams.py [--bin target/release/flightcache]
       [--appends 300] [--interval-ms 10]
Needs redis-server (apt-get install redis-server) and `cargo build --release`. Prints one JSON object; the figures go to
benches/RESULTS.md by hand.
"""

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import shutil
import socket
import statistics
import subprocess
import threading
import time

import numpy as np
import pyarrow as pa
import pyarrow.flight as flight
import redis

MIB = 1 << 20


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_flightcache(binary):
    process = subprocess.Popen(
        [binary, "serve", "--port", "0", "--max-memory", "2GiB"], stdout=subprocess.PIPE, text=True
    )
    url = process.stdout.readline().strip().removeprefix("listening on ")
    return process, url


def start_redis():
    port = free_port()
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    return process, port


def rss(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def batch(seq, rows):
    return pa.table({"seq": pa.array([seq] * rows, pa.int64()), "value": np.arange(rows, dtype=np.float64)})


def ipc_bytes(table):
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


APPEND = [(b"x-flightcache-append", b"1")]


def fc_append(client, key, table, headers=()):
    options = flight.FlightCallOptions(headers=[*APPEND, *headers])
    writer, reader = client.do_put(flight.FlightDescriptor.for_command(key), table.schema, options=options)
    writer.write_table(table)
    writer.done_writing()
    reader.read()
    writer.close()


def percentiles(values):
    values = sorted(values)
    at = lambda q: values[round((len(values) - 1) * q)]  # noqa: E731
    return {"p50_us": round(at(0.5) / 1e3), "p99_us": round(at(0.99) / 1e3), "max_us": round(values[-1] / 1e3)}


# --- followers in processes of their own ------------------------------------------------------


def warm_up():
    """Run once, before a follower says it is ready, what it does with each batch: pyarrow
    builds its scalar and IPC machinery on first use (20 ms of CPU in each process), which
    16 processes starting at once would otherwise pay inside the first appends' latency."""
    table = batch(0, 1)
    table.to_batches()[0].column(0)[0].as_py()
    pa.ipc.open_stream(ipc_bytes(table)).read_all().column(0)[0].as_py()


def fc_follower(url, key, count, start, ready, results):
    client = flight.connect(url)
    options = flight.FlightCallOptions(headers=[(b"x-flightcache-follow", b"1"), (b"x-flightcache-from", start.encode())])
    reader = client.do_get(flight.Ticket(key), options=options)
    warm_up()
    ready.put(True)
    seen = {}
    while len(seen) < count:
        chunk = reader.read_chunk().data
        now = time.monotonic_ns()
        seq = chunk.column(0)[0].as_py()
        if seq >= 0:
            seen[seq] = now
    results.put(seen)


def redis_follower(port, key, count, ready, results):
    client = redis.Redis(port=port)
    last = "$"
    warm_up()
    ready.put(True)
    seen = {}
    while len(seen) < count:
        for _, entries in client.xread({key: last}, block=0, count=1000):
            for entry_id, fields in entries:
                last = entry_id
                table = pa.ipc.open_stream(fields[b"ipc"]).read_all()
                now = time.monotonic_ns()
                seq = table.column(0)[0].as_py()
                if seq >= 0:
                    seen[seq] = now
    results.put(seen)


def redis_async_followers(port, key, count, tasks, ready, results):
    warm_up()

    async def one():
        client = redis.asyncio.Redis(port=port)
        last = "$"
        seen = {}
        ready.put(True)
        while len(seen) < count:
            for _, entries in await client.xread({key: last}, block=0, count=1000):
                for entry_id, fields in entries:
                    last = entry_id
                    table = pa.ipc.open_stream(fields[b"ipc"]).read_all()
                    seen[table.column(0)[0].as_py()] = time.monotonic_ns()
        await client.aclose()
        return seen

    async def all_of_them():
        return await asyncio.gather(*(one() for _ in range(tasks)))

    for seen in asyncio.run(all_of_them()):
        results.put(seen)


def spawn(target, args, n):
    context = mp.get_context("spawn")
    ready, results = context.Queue(), context.Queue()
    processes = [context.Process(target=target, args=(*args, ready, results)) for _ in range(n)]
    for process in processes:
        process.start()
    return processes, ready, results


def measure_latency(followers_started, append, appends, interval):
    """Latency percentiles: `followers_started()` starts the followers (returns their
    processes, a queue each puts True on once it waits, and a queue of what each saw), then
    `append(seq)` is called `appends` times, one every `interval`."""
    processes, ready, results, count = followers_started()
    for _ in range(count):
        ready.get()
    time.sleep(0.5)
    acked = {}
    for seq in range(appends):
        append(seq)
        acked[seq] = time.monotonic_ns()
        time.sleep(interval)
    latencies = []
    for _ in range(count):
        seen = results.get()
        latencies += [seen[seq] - acked[seq] for seq in range(appends)]
    for process in processes:
        process.join()
    return percentiles(latencies)


def latency_flightcache(url, followers, appends, interval, rows=1000):
    client = flight.connect(url)
    key = f"latency-{followers}"
    fc_append(client, key, batch(-1, rows))
    started = lambda: (*spawn(fc_follower, (url, key.encode(), appends, "latest"), followers), followers)  # noqa: E731
    result = measure_latency(started, lambda seq: fc_append(client, key, batch(seq, rows)), appends, interval)
    client.do_action(flight.Action("drop", key.encode()))
    return result


def latency_redis(port, followers, appends, interval, rows=1000, async_tasks=0):
    client = redis.Redis(port=port)
    key = f"latency-{followers}"

    def started():
        if async_tasks:
            args = (port, key, appends, async_tasks)
            return (*spawn(redis_async_followers, args, followers // async_tasks), followers)
        return (*spawn(redis_follower, (port, key, appends), followers), followers)

    def append(seq):
        client.xadd(key, {"seq": seq, "ipc": ipc_bytes(batch(seq, rows))})

    result = measure_latency(started, append, appends, interval)
    client.delete(key)
    return result


def followers_bench(binary, url, followers, appends, server_pid):
    peak = [0]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], rss(server_pid))
            time.sleep(0.01)

    sampler = threading.Thread(target=sample)
    sampler.start()
    out = subprocess.run(
        [binary, "bench", "--server", url, "--followers", str(followers), "--appends", str(appends), "--json"],
        capture_output=True, text=True, check=True,
    ).stdout
    done.set()
    sampler.join()
    result = json.loads(out)
    result["server_rss_peak_mib"] = round(peak[0] / MIB, 1)
    return result


def measure_fanout(processes, ready, results, append, followers, appends, rows):
    """Aggregate MiB/s: `append(seq)` `appends` times as fast as it goes, to `followers`
    followers already started."""
    for _ in range(followers):
        ready.get()
    time.sleep(0.5)
    start = time.monotonic_ns()
    for seq in range(appends):
        append(seq)
    ends = []
    for _ in range(followers):
        seen = results.get()
        ends.append(max(seen.values()))
    for process in processes:
        process.join()
    seconds = (max(ends) - start) / 1e9
    return {"seconds": round(seconds, 3), "aggregate_mib_s": round(followers * appends * (rows * 16) / MIB / seconds)}


def numbered(table, seq):
    return table.set_column(0, "seq", pa.array([seq] * table.num_rows, pa.int64()))


def throughput_flightcache(url, followers=16, appends=64):
    client = flight.connect(url)
    key = "fanout"
    rows = MIB // 16  # 1 MiB an append: int64 seq + float64 value
    table = batch(0, rows)
    fc_append(client, key, batch(-1, 1))
    started = spawn(fc_follower, (url, key.encode(), appends, "latest"), followers)
    append = lambda seq: fc_append(client, key, numbered(table, seq))  # noqa: E731
    result = measure_fanout(*started, append, followers, appends, rows)
    client.do_action(flight.Action("drop", key.encode()))
    return result


def throughput_redis(port, followers=16, appends=64):
    client = redis.Redis(port=port)
    key = "fanout"
    rows = MIB // 16
    table = batch(0, rows)
    started = spawn(redis_follower, (port, key, appends), followers)
    append = lambda seq: client.xadd(key, {"seq": seq, "ipc": ipc_bytes(numbered(table, seq))})  # noqa: E731
    result = measure_fanout(*started, append, followers, appends, rows)
    client.delete(key)
    return result


def stalled_follower(url, server_pid, appends=100):
    client = flight.connect(url)
    key = "stalled"
    rows = MIB // 16  # 1 MiB an append: int64 seq + float64 value
    capped = [(b"x-flightcache-max-rows", str(8 * rows).encode())]  # 8 appends
    fc_append(client, key, batch(0, rows), capped)
    options = flight.FlightCallOptions(headers=[(b"x-flightcache-follow", b"1"), (b"x-flightcache-from", b"earliest")])
    stalled = flight.connect(url)
    reader = stalled.do_get(flight.Ticket(key.encode()), options=options)
    reader.read_chunk()  # then it reads nothing more
    samples = []
    for seq in range(1, appends):
        fc_append(client, key, batch(seq, rows), capped)
        samples.append(rss(server_pid))
    client.do_action(flight.Action("drop", key.encode()))
    return {
        "rss_after_10_appends_mib": round(samples[9] / MIB, 1),
        "rss_after_50_mib": round(samples[49] / MIB, 1),
        "rss_after_all_mib": round(samples[-1] / MIB, 1),
        "rss_max_mib": round(max(samples) / MIB, 1),
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", default="target/release/flightcache")
    parser.add_argument("--appends", type=int, default=300)
    parser.add_argument("--interval-ms", type=float, default=10)
    args = parser.parse_args()
    if not shutil.which("redis-server"):
        raise SystemExit("redis-server is not installed: apt-get install redis-server")
    interval = args.interval_ms / 1000
    server, url = start_flightcache(args.bin)
    redis_server, port = start_redis()
    results = {"appends": args.appends, "interval_ms": args.interval_ms, "rows_per_append": 1000}
    try:
        results["idle_server_rss_mib"] = round(rss(server.pid) / MIB, 1)
        for followers in (1, 16):
            results[f"flightcache_pyarrow_{followers}"] = latency_flightcache(url, followers, args.appends, interval)
            results[f"redis_py_{followers}"] = latency_redis(port, followers, args.appends, interval)
        results["flightcache_rust_1"] = followers_bench(args.bin, url, 1, args.appends, server.pid)
        results["flightcache_rust_100"] = followers_bench(args.bin, url, 100, args.appends, server.pid)
        results["redis_py_asyncio_100"] = latency_redis(port, 100, args.appends, interval, async_tasks=25)
        results["fanout_flightcache_16"] = throughput_flightcache(url)
        results["fanout_redis_16"] = throughput_redis(port)
        results["fanout_ratio"] = round(
            results["fanout_flightcache_16"]["aggregate_mib_s"] / results["fanout_redis_16"]["aggregate_mib_s"], 2
        )
        results["stalled_follower"] = stalled_follower(url, server.pid)
    finally:
        server.terminate()
        server.wait()
        redis_server.terminate()
        redis_server.wait()
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
