"""STARTTLS and implicit TLS, and plain-text logins refused without TLS where so configured."""

from __future__ import annotations

import imaplib
import shutil
import ssl
import subprocess

import pytest

from .conftest import PASSWORD, message, start_server, stop_server

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    d = tmp_path_factory.mktemp("cert")
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-keyout",
            str(d / "key.pem"),
            "-out",
            str(d / "cert.pem"),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return str(d / "cert.pem"), str(d / "key.pem")


def _trusting(cert_path: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=cert_path)
    ctx.check_hostname = False
    return ctx


def test_starttls_required_for_login(tmp_path, cert):
    srv, t = start_server(tmp_path, tls_cert=cert[0], tls_key=cert[1], allow_plaintext_login=False)
    srv.add_user("alice")
    srv.deliver("alice", message(1))
    try:
        c = imaplib.IMAP4("127.0.0.1", srv.port)
        assert "LOGINDISABLED" in c.capabilities and "STARTTLS" in c.capabilities
        with pytest.raises(imaplib.IMAP4.error, match="PRIVACYREQUIRED"):
            c.login("alice", PASSWORD)
        c.starttls(ssl_context=_trusting(cert[0]))
        assert "AUTH=PLAIN" in c.capabilities and "STARTTLS" not in c.capabilities
        c.login("alice", PASSWORD)
        c.select("INBOX")
        assert c.fetch("1", "(BODY.PEEK[])")[1][0][1] == message(1)
        c.logout()
    finally:
        stop_server(srv, t)


def test_implicit_tls(tmp_path, cert):
    srv, t = start_server(tmp_path, tls_cert=cert[0], tls_key=cert[1], implicit_tls=True)
    srv.add_user("alice")
    try:
        c = imaplib.IMAP4_SSL("127.0.0.1", srv.port, ssl_context=_trusting(cert[0]))
        assert "STARTTLS" not in c.capabilities
        c.login("alice", PASSWORD)
        assert c.select("INBOX")[0] == "OK"
        c.logout()
    finally:
        stop_server(srv, t)


def test_failed_logins_are_slowed_down(tmp_path):
    import time

    srv, t = start_server(tmp_path)
    srv.settings.login_delay = 0.2
    srv.add_user("alice")
    try:
        c = imaplib.IMAP4("127.0.0.1", srv.port)
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            with pytest.raises(imaplib.IMAP4.error):
                c.login("alice", "wrong")
            times.append(time.perf_counter() - t0)
        assert times[2] > times[0] + 0.3, times  # each failure from this address adds delay
        c.login("alice", PASSWORD)
        c.logout()
    finally:
        stop_server(srv, t)


def test_garbage_on_tls_port_and_vanishing_tls_clients(tmp_path, cert, caplog):
    import logging
    import socket

    srv, t = start_server(tmp_path, tls_cert=cert[0], tls_key=cert[1], implicit_tls=True)
    srv.add_user("alice")
    try:
        with caplog.at_level(logging.ERROR):
            s = socket.create_connection(("127.0.0.1", srv.port))
            s.sendall(b"a1 LOGIN alice x\r\n" * 10)  # plain text where TLS is expected
            s.settimeout(5)
            try:
                s.recv(100)
            except OSError:
                pass
            s.close()
            raw = socket.create_connection(("127.0.0.1", srv.port))
            tls = _trusting(cert[0]).wrap_socket(raw)
            tls.recv(100)
            raw.close()  # vanish without a TLS close
            c = imaplib.IMAP4_SSL("127.0.0.1", srv.port, ssl_context=_trusting(cert[0]))
            c.login("alice", PASSWORD)
            c.logout()
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    finally:
        stop_server(srv, t)
