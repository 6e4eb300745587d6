"""What the data directory (`serve --data-dir`) costs and what a restart gives back, in one run.

1. The disk's own sequential write speed: 1 GiB in 1 MiB writes, then fsync.
2. Put throughput of 1 GiB tables in 1 MiB batches (8 float64 columns, pyarrow's client):
   memory only, `--durability background`, `--durability always`. For background, also how long
   the clean stop then takes (the queued files written).
3. A restart with 8 GiB of tables on disk (8 keys of 1 GiB), page cache dropped first when run
   as root: time from spawning `serve` to its listening line, to the first batch of the first
   get, and until `list_flights` lists every key; the throughput of that first get.

Usage: .venv/bin/python benches/scripts/persistence.py [--bin target/release/flightcache]
       [--dir /var/tmp/flightcache-persistence] [--repeat 2] [--restart-gib 8]
Each mode runs twice, alternated (memory, background, always, always, background, memory), on a
fresh server with the page cache dropped first when run as root.
Prints one JSON object; the figures go to benches/RESULTS.md by hand.
"""

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import time

import numpy as np
import pyarrow as pa
import pyarrow.flight as flight

GIB = 1 << 30
MIB = 1 << 20


def one_gib_table(seed):
    """1 GiB of float64 in 8 columns, as 1024 batches of 1 MiB."""
    rows_per_batch = MIB // (8 * 8)
    rng = np.random.default_rng(seed)
    columns = {f"c{i}": rng.random(rows_per_batch * 1024) for i in range(8)}
    return pa.table(columns).to_batches(max_chunksize=rows_per_batch)


def disk_write_speed(directory, repeat):
    path = os.path.join(directory, "disk-speed.tmp")
    block = os.urandom(MIB)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        for _ in range(1024):
            os.write(fd, block)
        os.fsync(fd)
        os.close(fd)
        times.append(time.perf_counter() - start)
        os.unlink(path)
    return GIB / statistics.median(times) / 1e9


class Serve:
    def __init__(self, binary, *args):
        self.started = time.perf_counter()
        self.process = subprocess.Popen([binary, "serve", "--port", "0", *args], stdout=subprocess.PIPE, text=True)
        line = self.process.stdout.readline().strip()
        self.listening = time.perf_counter() - self.started
        self.url = line.removeprefix("listening on ")
        self.lines = [self.process.stdout.readline().strip()]
        if "--data-dir" in args:
            self.lines.append(self.process.stdout.readline().strip())

    def stop(self):
        start = time.perf_counter()
        self.process.send_signal(signal.SIGTERM)
        assert self.process.wait(timeout=600) == 0
        return time.perf_counter() - start


def put(client, key, batches):
    writer, _ = client.do_put(flight.FlightDescriptor.for_command(key), batches[0].schema)
    for batch in batches:
        writer.write_batch(batch)
    writer.close()


def put_throughput(binary, directory, mode, batches, repeat):
    data = os.path.join(directory, f"data-{mode}")
    shutil.rmtree(data, ignore_errors=True)
    args = [] if mode == "memory" else ["--data-dir", data, "--durability", mode]
    server = Serve(binary, "--max-memory", "0", *args)
    client = flight.connect(server.url)
    put(client, "warm-up", batches)
    times = []
    for i in range(repeat):
        start = time.perf_counter()
        put(client, f"k{i}", batches)
        times.append(time.perf_counter() - start)
    stop = server.stop()
    shutil.rmtree(data, ignore_errors=True)
    median = statistics.median(times)
    return {"seconds": times, "median_s": median, "gb_per_s": GIB / median / 1e9, "clean_stop_s": stop}


def drop_page_cache():
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def restart(binary, directory, batches, gib):
    data = os.path.join(directory, "data-restart")
    shutil.rmtree(data, ignore_errors=True)
    server = Serve(binary, "--max-memory", "0", "--data-dir", data)
    client = flight.connect(server.url)
    for i in range(gib):
        put(client, f"t{i}", batches)
    server.stop()
    cold = drop_page_cache()
    server = Serve(binary, "--max-memory", "0", "--data-dir", data)
    client = flight.connect(server.url)
    reader = client.do_get(flight.Ticket(b"t0"))
    first = reader.read_chunk()
    first_batch = time.perf_counter() - server.started
    got_start = time.perf_counter()
    rows = first.data.num_rows
    while True:
        try:
            rows += reader.read_chunk().data.num_rows
        except StopIteration:
            break
    get_s = time.perf_counter() - got_start
    keys = [info.descriptor.command for info in client.list_flights()]
    listed = time.perf_counter() - server.started
    assert len(keys) == gib, keys
    assert rows == sum(b.num_rows for b in batches)
    result = {
        "gib_on_disk": gib,
        "page_cache_dropped": cold,
        "startup_line": server.lines[-1],
        "listening_s": server.listening,
        "first_batch_s": first_batch,
        "every_key_listed_s": listed,
        "first_get_gb_per_s": GIB / get_s / 1e9,
    }
    server.stop()
    shutil.rmtree(data, ignore_errors=True)
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bin", default="target/release/flightcache")
    parser.add_argument("--dir", default="/var/tmp/flightcache-persistence")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--restart-gib", type=int, default=8)
    args = parser.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    batches = one_gib_table(0)
    report = {"disk_write_gb_per_s": disk_write_speed(args.dir, 3)}
    # Alternated, each on a fresh server with the page cache dropped first (as root): filling
    # fresh memory on this VM costs several times more while the kernel must reclaim cache.
    runs = {"memory": [], "background": [], "always": []}
    for mode in ["memory", "background", "always", "always", "background", "memory"]:
        drop_page_cache()
        runs[mode].append(put_throughput(args.bin, args.dir, mode, batches, args.repeat))
    for mode, results in runs.items():
        seconds = [s for result in results for s in result["seconds"]]
        median = statistics.median(seconds)
        report[f"put_{mode}"] = {
            "seconds": seconds,
            "median_s": median,
            "gb_per_s": GIB / median / 1e9,
            "clean_stop_s": [result["clean_stop_s"] for result in results],
        }
    memory = report["put_memory"]["gb_per_s"]
    report["background_over_memory"] = report["put_background"]["gb_per_s"] / memory
    report["always_over_disk"] = report["put_always"]["gb_per_s"] / report["disk_write_gb_per_s"]
    report["restart"] = restart(args.bin, args.dir, batches, args.restart_gib)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
