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
    """A running `flightcache serve --port 0`, with any more flags in `args`."""

    def __init__(self, *args):
        self.process = subprocess.Popen(
            [_binary(), "serve", "--port", "0", *args],
            stdout=subprocess.PIPE,
            text=True,
        )
        line = self.process.stdout.readline().strip()
        assert line.startswith(("listening on grpc://", "listening on grpc+tls://")), (
            f"unexpected first line {line!r}"
        )
        self.url = line.removeprefix("listening on ")
        self.budget_line = self.process.stdout.readline().strip()
        assert self.budget_line.startswith("memory budget: "), self.budget_line
        self.data_dir_line = None
        if "--data-dir" in args:
            self.data_dir_line = self.process.stdout.readline().strip()
            assert self.data_dir_line.startswith("data directory "), self.data_dir_line
        self.metrics_url = None
        if "--metrics" in args:
            line = self.process.stdout.readline().strip()
            assert line.startswith("metrics on "), line
            self.metrics_url = line.removeprefix("metrics on ")

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


@pytest.fixture
def start_server():
    """Start servers with flags of the test's choosing; each is stopped after the test."""
    started = []

    def start(*args):
        server = Server(*args)
        started.append(server)
        return server

    yield start
    for server in started:
        if server.process.poll() is None:
            server.stop()
