"""SMTP with Python's smtplib: ESMTP extensions, STARTTLS, size limit, reply codes."""

from __future__ import annotations

import smtplib
import ssl

import pytest

from tests.helpers.delivery import DOMAIN, DeliveryNode, message


def test_ehlo_extensions_and_delivery(node):
    with smtplib.SMTP("127.0.0.1", node.smtp.port, local_hostname="relay.test") as s:
        s.ehlo()
        for ext in ("size", "8bitmime", "pipelining", "enhancedstatuscodes", "smtputf8", "starttls"):
            assert s.has_extn(ext), ext
        assert int(s.esmtp_features["size"]) == node.settings.max_message_bytes
        assert not s.has_extn("auth")
        refused = s.sendmail("sender@example.org", [f"alice@{DOMAIN}", f"bob+x@{DOMAIN}"], message("smtp"))
        assert refused == {}
    raw = node.messages("alice")[0]
    assert b"with ESMTP id" in raw and b"\tfor <" not in raw  # no "for" with two recipients
    assert node.messages("bob")[0].endswith(message("smtp"))


def test_starttls(node):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the listener's certificate is self-signed
    with smtplib.SMTP("127.0.0.1", node.smtp.port) as s:
        s.starttls(context=ctx)
        s.ehlo()
        assert not s.has_extn("starttls")
        assert s.sock.version().startswith("TLS")
        s.sendmail("a@example.org", [f"alice@{DOMAIN}"], message("tls"))
    assert b"with ESMTPS id" in node.messages("alice")[0]


def test_unknown_user_and_domain(node):
    with smtplib.SMTP("127.0.0.1", node.smtp.port) as s:
        s.ehlo()
        s.mail("a@example.org")
        code, text = s.rcpt(f"nobody@{DOMAIN}")
        assert (code, text[:5]) == (550, b"5.1.1")
        code, text = s.rcpt("alice@elsewhere.example")
        assert (code, text[:5]) == (550, b"5.1.1")
        s.rset()
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            s.sendmail("a@example.org", [f"ghost@{DOMAIN}"], message("x"))
    assert node.count() == 0


def test_size_limit_declared_and_actual(tmp_path):
    from dataclasses import replace

    n = DeliveryNode(tmp_path / "n")
    n.close()
    n = DeliveryNode(tmp_path / "n2", settings=replace(n.settings, max_message_bytes=10_000), users=("alice",))
    try:
        with smtplib.SMTP("127.0.0.1", n.smtp.port) as s:
            s.ehlo()
            code, text = s.mail("a@example.org", ["SIZE=20000"])
            assert code == 552 and text.startswith(b"5.3.4")
            s.rset()
            # a client that does not declare SIZE: the data itself is measured
            s.mail("a@example.org")
            s.rcpt(f"alice@{DOMAIN}")
            code, text = s.data(message("big", size=15_000))
            assert code == 552 and text.startswith(b"5.3.4")
            # the session is still in step and takes the next message
            assert s.sendmail("a@example.org", [f"alice@{DOMAIN}"], message("small", size=5_000)) == {}
        assert len(n.messages("alice")) == 1
    finally:
        n.close()


def test_smtputf8_and_8bit(node):
    body = "Grüße, ça va? 你好\r\n".encode()
    raw = message("utf8").replace(b"Hello there.\r\n", body)
    with smtplib.SMTP("127.0.0.1", node.smtp.port) as s:
        s.ehlo()
        s.sendmail("jörg@example.org", [f"alice@{DOMAIN}"], raw, mail_options=["SMTPUTF8", "BODY=8BITMIME"])
    stored = node.messages("alice")[0]
    assert stored.startswith("Return-Path: <jörg@example.org>".encode())
    assert stored.endswith(raw)


def test_too_many_recipients(tmp_path):
    from dataclasses import replace

    n = DeliveryNode(tmp_path / "n", users=("alice",))
    n.close()
    n = DeliveryNode(tmp_path / "n2", settings=replace(n.settings, max_recipients=2), users=("alice",))
    try:
        with smtplib.SMTP("127.0.0.1", n.smtp.port) as s:
            s.ehlo()
            s.mail("a@example.org")
            assert s.rcpt(f"alice@{DOMAIN}")[0] == 250
            assert s.rcpt(f"alice+a@{DOMAIN}")[0] == 250
            code, text = s.rcpt(f"alice+b@{DOMAIN}")
            assert code == 452 and text.startswith(b"4.5.3")
            code, _ = s.data(message("many"))
            assert code == 250
        assert len(n.messages("alice")) == 1  # both recipients are the same mailbox
    finally:
        n.close()


def test_big_message_through_lmtp_and_smtp(node):
    """A 5 MiB message (checked and parsed off the event loop) arrives byte for byte."""
    raw = message("big", size=5 * 1024 * 1024) + b"\r\n"
    with smtplib.LMTP("127.0.0.1", node.lmtp.port) as lm:
        assert lm.sendmail("s@example.org", [f"alice@{DOMAIN}"], raw) == {}
    with smtplib.SMTP("127.0.0.1", node.smtp.port) as s:
        assert s.sendmail("s@example.org", [f"bob@{DOMAIN}"], raw) == {}
    assert node.messages("alice")[0].endswith(raw) and node.messages("bob")[0].endswith(raw)


def test_configured_certificate_and_missing_openssl(tmp_path, monkeypatch):
    """A configured certificate is used as is; with no openssl to make one, SMTP still takes mail
    (without STARTTLS) rather than keeping the node from starting."""
    import subprocess

    from mailpair.protocols.smtp import start_smtp

    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=mx.test",
                    "-keyout", str(tmp_path / "k.pem"), "-out", str(tmp_path / "c.pem")], check=True, capture_output=True)  # fmt: skip
    n = DeliveryNode(tmp_path / "n")
    try:
        from dataclasses import replace

        own = n.call(start_smtp(n.store, replace(n.settings, tls_cert=str(tmp_path / "c.pem"), tls_key=str(tmp_path / "k.pem"))))
        ctx = ssl.create_default_context(cafile=str(tmp_path / "c.pem"))
        ctx.check_hostname = False
        with smtplib.SMTP("127.0.0.1", own.port) as s:
            s.starttls(context=ctx)  # verifies against the configured certificate
            s.sendmail("a@example.org", [f"alice@{DOMAIN}"], message("own-cert"))
        n.call(own.close())
        monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no openssl on PATH
        bare = n.call(start_smtp(n.store, replace(n.settings, tls_dir=str(tmp_path / "tls"))))
        with smtplib.SMTP("127.0.0.1", bare.port) as s:
            s.ehlo()
            assert not s.has_extn("starttls")
            s.sendmail("a@example.org", [f"alice@{DOMAIN}"], message("no-tls"))
        n.call(bare.close())
        assert len(n.messages("alice")) == 2
    finally:
        n.close()
