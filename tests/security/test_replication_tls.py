"""The replication stream (issue 17): it was authenticated (HMAC) but not encrypted, so mail bodies
and password hashes crossed the network in clear. Now it runs over mutual TLS with certificates of
the pair's own authority, made at `pair up`: a capture of the port shows no mail, and a peer whose
certificate the pair did not make is refused. A plain channel is there only on request, and
status says so."""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path

import pytest

from mailpair.config import Listen, NodeConfig
from tests.helpers.pair import active, http, pair_down, pair_up

MARKER = b"the-quarterly-figures-are-7743-and-secret"


class CapturingProxy:
    """A TCP proxy that forwards both ways and keeps every byte it saw, as a tap on the link would."""

    def __init__(self, target_port: int):
        self.target = target_port
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.seen = bytearray()
        self.lock = threading.Lock()
        self.closing = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closing:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target), timeout=5)
            except OSError:
                client.close()
                continue
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        src.settimeout(None)
        try:
            while chunk := src.recv(65536):
                with self.lock:
                    self.seen += chunk
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.closing = True
        self.server.close()


def _copy(info: dict, node: dict) -> dict:
    status = json.loads(http(f"http://127.0.0.1:{node['admin']}/api/status", info["admin_token"])[1])
    return status["databases"][0]["copies"][0]


def _deliver_and_wait(info: dict) -> None:
    import smtplib

    act = active(info)
    passive = next(n for n in info["nodes"] if n["role"] == "passive")
    body = b"Subject: figures\r\n\r\n" + MARKER + b"\r\n"
    with smtplib.LMTP("127.0.0.1", act["lmtp"]) as lm:
        assert lm.sendmail("boss@example.org", [f"user1@{info['domain']}"], body) == {}
    head = json.loads(http(f"http://127.0.0.1:{act['admin']}/api/status", info["admin_token"])[1])["databases"][0]["last_lsn"]
    deadline = time.monotonic() + 30
    while (_copy(info, passive).get("stored_lsn") or 0) < head:
        assert time.monotonic() < deadline, "the passive never stored the message"
        time.sleep(0.2)


def _through_proxy(root: Path) -> CapturingProxy:
    """Point the passive at a capturing proxy in front of the active's replication port."""
    cfg_path = root / "node2" / "node.json"
    cfg = NodeConfig.load(cfg_path)
    proxy = CapturingProxy(cfg.peer_replication.port)
    cfg.peer_replication = Listen(port=proxy.port)
    cfg.save(cfg_path)
    return proxy


def test_a_capture_of_the_replication_port_shows_no_mail(tmp_path):
    root = tmp_path / "pair"
    pair_up(root, users=1)
    pair_down(root)
    proxy = _through_proxy(root)
    try:
        info = pair_up(root)
        _deliver_and_wait(info)
        with proxy.lock:
            seen = bytes(proxy.seen)
        assert len(seen) > 1000, "the capture saw no replication traffic"
        assert MARKER not in seen, "the mail body crossed the replication link in clear"
        assert b"$scrypt$" not in seen, "a password hash crossed the replication link in clear"
        assert seen[:1] == b"\x16"  # a TLS handshake record opens the stream
        passive = next(n for n in info["nodes"] if n["role"] == "passive")
        assert _copy(info, passive)["transport"] == "tls"
    finally:
        pair_down(root)
        proxy.close()


def test_plain_only_when_asked_and_status_says_so(tmp_path):
    root = tmp_path / "pair"
    pair_up(root, users=1)
    pair_down(root)
    for name in ("node1", "node2"):
        path = root / name / "node.json"
        cfg = NodeConfig.load(path)
        cfg.replication_transport = "plain"
        cfg.save(path)
    proxy = _through_proxy(root)
    try:
        info = pair_up(root)
        _deliver_and_wait(info)
        passive = next(n for n in info["nodes"] if n["role"] == "passive")
        assert _copy(info, passive)["transport"] == "plain"
        with proxy.lock:
            assert MARKER in bytes(proxy.seen)  # what "plain" means, and why it is not the default
    finally:
        pair_down(root)
        proxy.close()


def _foreign_certificate(where: Path) -> tuple[Path, Path]:
    """A self-signed certificate the pair did not make, named like one of its nodes."""
    where.mkdir(parents=True, exist_ok=True)
    cert, key = where / "cert.pem", where / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-days", "30", "-subj", "/CN=node2", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    return cert, key


def test_a_peer_with_a_certificate_the_pair_did_not_make_is_refused(tmp_path):
    root = tmp_path / "pair"
    info = pair_up(root, users=1)
    try:
        port = NodeConfig.load(root / "node1" / "node.json").replication.port
        cert, key = _foreign_certificate(tmp_path / "mallory")
        for with_cert in (True, False):
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE  # mallory does not care whom she talks to
            if with_cert:
                ctx.load_cert_chain(cert, key)
            with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
                with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
                    with ctx.wrap_socket(raw) as tls:
                        tls.sendall(b"\x00" * 12)  # TLS 1.3: the refusal of her certificate may come at the first read
                        if not tls.recv(1):
                            raise ConnectionError("closed")
        log = (root / "node1" / "node.log").read_text()
        assert log.count("refused connection") >= 2 and "TLS" in log  # refused, and said so
        # And the passive, asked to talk to an "active" with mallory's certificate, refuses it.
        from mailpair.replication.tls import client_context

        cfg = NodeConfig.load(root / "node2" / "node.json")
        client = client_context(*cfg.replication_tls_files())
        server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server.load_cert_chain(cert, key)
        listener = socket.create_server(("127.0.0.1", 0))

        def serve() -> None:
            conn, _ = listener.accept()
            try:
                server.wrap_socket(conn, server_side=True).recv(1)
            except (ssl.SSLError, OSError):
                pass
            finally:
                conn.close()

        threading.Thread(target=serve, daemon=True).start()
        with socket.create_connection(listener.getsockname(), timeout=10) as raw:
            with pytest.raises(ssl.SSLCertVerificationError):
                client.wrap_socket(raw)
        listener.close()
        # The control: the pair's own certificate gets through TLS to the active.
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with client.wrap_socket(raw) as tls:
                assert tls.version() == "TLSv1.3"
        # The pair still replicates with its own certificates.
        _deliver_and_wait(info)
    finally:
        pair_down(root)
