"""Debian's Postfix as a private relay for tests: its own main.cf/master.cf, queue and log in a
temporary directory, an smtpd on a free loopback port, and every mail for the test domain handed
to mailpair over LMTP. Nothing of a system Postfix is used or changed: no /etc/postfix/main.cf is
read (config_directory is the temporary one), no chroot, no system queue, and the master runs in
the foreground as a child of the test (`postfix -c DIR start-fg`), stopped with `postfix stop`.

Needs root (Postfix's master and its queue ownership) and the Debian package postfix.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from mailpair.ports import free_port


def available() -> bool:
    return os.geteuid() == 0 and shutil.which("postfix") is not None and Path("/etc/postfix/master.cf").exists()


class PostfixRelay:
    def __init__(self, domain: str, lmtp_port: int):
        # Postfix's daemons run as the postfix user, so every parent directory must be traversable:
        # a fresh directory in the system temporary directory (pytest's tmp_path is private).
        self.dir = Path(tempfile.mkdtemp(prefix="mailpair-postfix-"))
        self.conf = self.dir / "conf"
        self.domain = domain
        self.lmtp_port = lmtp_port
        self.port = 0
        self.proc: subprocess.Popen | None = None

    def _master_cf(self) -> str:
        """The packaged master.cf with chroot off, and smtpd only on our loopback port."""
        out = []
        for line in Path("/etc/postfix/master.cf").read_text().splitlines():
            fields = line.split()
            if line and not line[0].isspace() and not line.startswith("#") and len(fields) >= 8:
                if fields[0] == "smtp" and fields[1] == "inet":
                    fields[0] = f"127.0.0.1:{self.port}"
                fields[4] = "n"
                line = " ".join(fields)
            out.append(line)
        return "\n".join(out) + "\n"

    def _main_cf(self) -> str:
        d = self.dir
        return f"""\
compatibility_level = 3.6
queue_directory = {d}/queue
data_directory = {d}/data
maillog_file = /dev/stdout
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = relay.test
mydomain = relay.test
myorigin = relay.test
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
mynetworks = 127.0.0.0/8
relay_domains =
virtual_mailbox_domains = {self.domain}
virtual_transport = lmtp:inet:127.0.0.1:{self.lmtp_port}
smtpd_recipient_restrictions = permit_mynetworks, reject
biff = no
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
bounce_queue_lifetime = 0
"""

    def start(self, timeout: float = 30) -> PostfixRelay:
        self.port = free_port()
        for sub in ("conf", "queue", "data"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o755)
        (self.conf / "main.cf").write_text(self._main_cf())
        (self.conf / "master.cf").write_text(self._master_cf())
        shutil.chown(self.dir / "data", "postfix")
        env = {**os.environ, "MAIL_CONFIG": str(self.conf)}
        r = subprocess.run(["postfix", "-c", str(self.conf), "check"], capture_output=True, text=True, env=env, timeout=60)
        if r.returncode != 0:
            raise RuntimeError(f"postfix check: {r.stdout}{r.stderr}")
        # With maillog_file = /dev/stdout the master and its postlogd write the log to this file.
        self._log = open(self.dir / "postfix.log", "wb")  # noqa: SIM115 - the child writes to it
        self.proc = subprocess.Popen(
            ["postfix", "-c", str(self.conf), "start-fg"], stdout=self._log, stderr=subprocess.STDOUT, env=env
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    if s.recv(100).startswith(b"220"):
                        return self
            except OSError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError(f"postfix exited {self.proc.returncode}: {self.log()}")
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"postfix did not listen: {self.log()}")

    def log(self) -> str:
        try:
            return (self.dir / "postfix.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_log(self, needle: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log()
            if needle in text:
                return text
            time.sleep(0.1)
        raise AssertionError(f"{needle!r} not in the postfix log:\n{self.log()}")

    def stop(self) -> None:
        if self.proc is None:
            return
        env = {**os.environ, "MAIL_CONFIG": str(self.conf)}
        subprocess.run(["postfix", "-c", str(self.conf), "stop"], capture_output=True, env=env, timeout=60)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            subprocess.run(["postfix", "-c", str(self.conf), "abort"], capture_output=True, env=env, timeout=60)
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None
        self._log.close()
        shutil.rmtree(self.dir, ignore_errors=True)
