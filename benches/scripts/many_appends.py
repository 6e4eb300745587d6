"""Appends per second as a key grows without retention, while two readers keep taking
snapshots of it (gets from `latest`): an append copies the key's list of segments (not their
data) when a reader holds the table, so its cost grows with the number of appends kept.

Usage: .venv/bin/python benches/scripts/many_appends.py (needs target/release/flightcache).
Prints JSON: appends per second in each block of 2,500 appends of 10 rows, 20,000 in all.
"""
import subprocess, time, json, threading
import pyarrow as pa, pyarrow.flight as flight
p = subprocess.Popen(["target/release/flightcache","serve","--port","0"],stdout=subprocess.PIPE,text=True)
url = p.stdout.readline().strip().removeprefix("listening on ")
c = flight.connect(url)
opts = flight.FlightCallOptions(headers=[(b"x-flightcache-append",b"1")])
t = pa.table({"x": pa.array(range(10), pa.int64())})
def append():
    w,r = c.do_put(flight.FlightDescriptor.for_command("k"), t.schema, options=opts); w.write_table(t); w.close()
append()
stop = threading.Event()
def reader():
    rc = flight.connect(url)
    while not stop.is_set():
        rc.do_get(flight.Ticket(b"k"), options=flight.FlightCallOptions(headers=[(b"x-flightcache-from", b"latest")])).read_all()
th = [threading.Thread(target=reader) for _ in range(2)]
for x in th: x.start()
rates = []
for block in range(8):
    s = time.perf_counter()
    for _ in range(2500): append()
    rates.append(round(2500/(time.perf_counter()-s)))
stop.set()
for x in th: x.join()
print(json.dumps({"appends_per_s_by_2500": rates}))
p.terminate(); p.wait()
