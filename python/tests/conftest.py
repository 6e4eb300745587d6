"""A real `flightcache serve` process per test, and a pyarrow.flight client for it."""

import os
import subprocess

import pyarrow.flight as flight
import pytest


def _binary():
    path = os.environ.get("FLIGHTCACHE_BIN", "")
    if not path or not os.access(path, os.X_OK):
        pytest.fail(
            "FLIGHTCACHE_BIN does not name the built flightcache binary; "
            "run scripts/test.sh, which builds it and sets FLIGHTCACHE_BIN"
        )
    return path


class Server:
    """A running `flightcache serve --port 0`."""

    def __init__(self):
        self.process = subprocess.Popen(
            [_binary(), "serve", "--port", "0"],
            stdout=subprocess.PIPE,
            text=True,
        )
        line = self.process.stdout.readline().strip()
        assert line.startswith("listening on grpc://"), f"unexpected first line {line!r}"
        self.url = line.removeprefix("listening on ")

    def stop(self):
        self.process.terminate()
        assert self.process.wait(timeout=60) == 0, "serve exits 0 on SIGTERM"


@pytest.fixture
def server():
    server = Server()
    try:
        yield server
    finally:
        if server.process.poll() is None:
            server.stop()


@pytest.fixture
def client(server):
    client = flight.connect(server.url)
    yield client
    client.close()
