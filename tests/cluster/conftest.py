"""Fixtures for the cluster tests: a private etcd on loopback, started and stopped by the test."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import urllib.request

import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def etcd_binary() -> str:
    path = shutil.which("etcd")
    if path is None:
        pytest.skip("etcd is not installed (Debian package etcd-server, listed in scripts/debian-test-packages.txt)")
    return path


@pytest.fixture
def etcd(etcd_binary, tmp_path):
    """A private single-member etcd with its own data directory; yields its client URL."""
    client, peer = _free_port(), _free_port()
    url = f"http://127.0.0.1:{client}"
    log = open(tmp_path / "etcd.log", "wb")
    proc = subprocess.Popen(
        [
            etcd_binary,
            "--name=test",
            f"--data-dir={tmp_path / 'etcd-data'}",
            f"--listen-client-urls={url}",
            f"--advertise-client-urls={url}",
            f"--listen-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-cluster=test=http://127.0.0.1:{peer}",
            "--initial-cluster-state=new",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(url + "/health", timeout=1) as r:
                    if b"true" in r.read():
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                log.flush()
                raise RuntimeError("private etcd did not start: " + (tmp_path / "etcd.log").read_text()[-2000:])
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
