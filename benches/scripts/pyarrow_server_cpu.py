"""Server CPU (utime + stime, from /proc) per pyarrow put and get of a 1 GiB table, in 1 MiB
batches and as one chunk, for two or more running servers in alternation (rounds alternate
which goes first; the first round is a warm-up).

    python benches/scripts/pyarrow_server_cpu.py NAME,PID,URL NAME,PID,URL ...

Run it with the pinned venv (scripts/venv.sh) against `flightcache serve` processes on this
machine.
"""
import sys, os, time, statistics
import numpy as np, pyarrow as pa, pyarrow.flight as fl
tick = os.sysconf("SC_CLK_TCK")
def cpu(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / tick
servers = {}
for arg in sys.argv[1:]:
    name, pid, url = arg.split(",")
    servers[name] = (int(pid), fl.connect(url))
rows = (1 << 30) // (8 * 64)
rng = np.random.default_rng(1)
single = pa.table({f"c{i}": rng.random(rows) for i in range(64)})
batched = pa.Table.from_batches(single.to_batches(max_chunksize=(1 << 20) // 512))
res = {}
for shape, table in [("batches", batched), ("single", single)]:
    for rnd in range(7):
        order = list(servers) if rnd % 2 == 0 else list(reversed(servers))
        for name in order:
            pid, c = servers[name]
            a = cpu(pid); t = time.perf_counter()
            w, _ = c.do_put(fl.FlightDescriptor.for_command("t"), table.schema); w.write_table(table); w.close()
            put = (cpu(pid) - a, time.perf_counter() - t)
            a = cpu(pid); t = time.perf_counter()
            got = c.do_get(fl.Ticket("t")).read_all(); del got
            get = (cpu(pid) - a, time.perf_counter() - t)
            if rnd > 0:
                res.setdefault((shape, name), []).append((put, get))
for (shape, name), v in sorted(res.items()):
    pc = statistics.median(x[0][0] for x in v); pw = statistics.median(x[0][1] for x in v)
    gc = statistics.median(x[1][0] for x in v); gw = statistics.median(x[1][1] for x in v)
    print(f"{shape:8} {name:5} put cpu {pc:.3f} s wall {pw:.3f} s | get cpu {gc:.3f} s wall {gw:.3f} s")
