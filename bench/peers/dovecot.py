"""Debian's Dovecot as a peer for side-by-side benchmarks: LMTP and IMAP on loopback, with its
own configuration, users and mail in a temporary directory. No system service is touched: dovecot
runs in the foreground (`dovecot -F -c CONFIG`) as a child process with its own base_dir, and is
stopped with SIGTERM when the block ends.

    from bench.peers.dovecot import Dovecot

    with Dovecot(users={"user1": "secret", "user2": "secret"}) as dc:
        dc.lmtp_port, dc.imap_port      # loopback ports it listens on (host: dc.host)
        dc.maildir("user1")             # the user's Maildir (new/ cur/ tmp/)
        dc.log_text()                   # its log, for error messages

Users log in over IMAP with plain-text passwords (LOGIN / AUTHENTICATE PLAIN; no TLS; stored in
the clear unless `hashed` gives a user a "{SCHEME}..." string from `doveadm pw`) and take
LMTP delivery as RCPT TO:<user1> or <user1@anything>. Mail is stored in Maildir (or the format
`mail_location` names: sdbox, mdbox) with Dovecot's default fsync policy ("optimized": every
delivered message is fsync'd before the 250).

Needs the Debian packages dovecot-core, dovecot-imapd and dovecot-lmtpd. Run as root, Dovecot
drops to its own `dovecot`/`dovenull` users and stores mail as the `mail` user (the temporary
directory is handed to it); run as another user, everything runs as that user.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from mailpair.ports import free_port

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"


def available() -> bool:
    """True when a dovecot binary with LMTP and IMAP is installed."""
    return Path(DOVECOT).exists() and Path("/usr/lib/dovecot/lmtp").exists() and Path("/usr/lib/dovecot/imap").exists()


class Dovecot:
    """A private Dovecot instance. Use as a context manager, or call start() and stop()."""

    def __init__(
        self,
        users: dict[str, str] | None = None,
        host: str = "127.0.0.1",
        directory: str | Path | None = None,
        extra_config: str = "",
        process_limit: int = 200,
        mail_location: str = "maildir:~/Maildir",
        hashed: dict[str, str] | None = None,
    ):
        self.users = dict(users or {"user1": "mailpair"})
        self.hashed = dict(hashed or {})  # user -> "{SCHEME}hash" as `doveadm pw` prints it
        self.host = host
        self._own_dir = directory is None
        self.dir = Path(directory or tempfile.mkdtemp(prefix="mailpair-dovecot-"))
        self.extra_config = extra_config
        self.process_limit = process_limit
        self.mail_location = mail_location  # e.g. "sdbox:~/sdbox" or "mdbox:~/mdbox", Dovecot's own formats
        self.lmtp_port = 0
        self.imap_port = 0
        self.proc: subprocess.Popen | None = None

    # ------------------------------------------------------------------ configuration
    def _accounts(self) -> tuple[int, int, str, str]:
        """(mail uid, mail gid, internal user, login user) for this process's privileges."""
        if os.geteuid() == 0:
            mail = pwd.getpwnam("mail")
            return mail.pw_uid, mail.pw_gid, "dovecot", "dovenull"
        me = pwd.getpwuid(os.geteuid()).pw_name
        return os.geteuid(), os.getegid(), me, me

    def config_text(self) -> str:
        uid, gid, internal, login = self._accounts()
        d = self.dir
        return f"""\
# written by bench/peers/dovecot.py: a private instance, nothing shared with a system dovecot
instance_name = mailpair-peer-{os.getpid()}-{self.lmtp_port}
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
info_log_path = {d}/dovecot.log
protocols = imap lmtp
listen = {self.host}
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
default_internal_user = {internal}
default_login_user = {login}
default_process_limit = {self.process_limit}
first_valid_uid = 1
first_valid_gid = 1
mail_location = {self.mail_location}
mail_uid = {uid}
mail_gid = {gid}
lmtp_save_to_detail_mailbox = no
recipient_delimiter = +
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%n {d}/passwd
}}
userdb {{
  driver = passwd-file
  args = username_format=%n {d}/passwd
  default_fields = uid={uid} gid={gid} home={d}/home/%n
}}
service imap-login {{
  inet_listener imap {{
    address = {self.host}
    port = {self.imap_port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service lmtp {{
  inet_listener lmtp {{
    address = {self.host}
    port = {self.lmtp_port}
  }}
}}
service stats {{
  unix_listener stats-reader {{
    mode = 0600
  }}
  unix_listener stats-writer {{
    mode = 0666
  }}
}}
{self.extra_config}
"""

    def maildir(self, user: str) -> Path:
        return self.dir / "home" / user / "Maildir"

    def log_text(self) -> str:
        try:
            return (self.dir / "dovecot.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # ------------------------------------------------------------------ lifecycle
    def start(self, timeout: float = 15.0) -> Dovecot:
        if not available():
            raise RuntimeError("dovecot is not installed (Debian: dovecot-core dovecot-imapd dovecot-lmtpd)")
        uid, gid, _, _ = self._accounts()
        self.lmtp_port = free_port(self.host)
        self.imap_port = free_port(self.host)
        for sub in ("run", "state", "home"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        for user in self.users:
            (self.dir / "home" / user).mkdir(exist_ok=True)
        with open(self.dir / "passwd", "w") as f:
            for user, password in self.users.items():
                stored = self.hashed.get(user) or f"{{PLAIN}}{password}"
                f.write(f"{user}:{stored}:{uid}:{gid}::{self.dir}/home/{user}::\n")
        (self.dir / "dovecot.conf").write_text(self.config_text())
        if os.geteuid() == 0:
            os.chmod(self.dir, 0o755)
            for root, dirs, _files in os.walk(self.dir / "home"):
                for name in dirs:
                    os.chown(os.path.join(root, name), uid, gid)
            os.chown(self.dir / "home", uid, gid)
        self.proc = subprocess.Popen(
            [DOVECOT, "-F", "-c", str(self.dir / "dovecot.conf")],
            stdout=subprocess.DEVNULL,
            stderr=open(self.dir / "stderr.log", "wb"),  # noqa: SIM115 - kept open by the child
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        pending = {self.lmtp_port, self.imap_port}
        while pending:
            if self.proc.poll() is not None:
                err = (self.dir / "stderr.log").read_text(errors="replace")
                raise RuntimeError(f"dovecot exited with {self.proc.returncode}: {err}\n{self.log_text()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"dovecot did not listen within {timeout}s:\n{self.log_text()}")
            for port in list(pending):
                try:
                    with socket.create_connection((self.host, port), timeout=0.5) as s:
                        if s.recv(100).startswith((b"220", b"* OK")):
                            pending.discard(port)
                except OSError:
                    time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)  # its own session: only its children
                self.proc.wait(5)
        self.proc = None
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Dovecot:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


if __name__ == "__main__":  # a quick look: start it, deliver one message over LMTP, read it over IMAP
    import imaplib
    import smtplib

    with Dovecot(users={"user1": "pw"}) as dc:
        lmtp = smtplib.LMTP(dc.host, dc.lmtp_port)
        lmtp.sendmail("a@example.org", ["user1"], b"Subject: hello\r\n\r\nhi\r\n")
        lmtp.quit()
        imap = imaplib.IMAP4(dc.host, dc.imap_port)
        imap.login("user1", "pw")
        print("dovecot", dc.lmtp_port, dc.imap_port, imap.select("INBOX"))
        imap.logout()
