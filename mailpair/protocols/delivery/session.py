"""One LMTP or SMTP connection: aiosmtpd's protocol class with mailpair's own MAIL, RCPT and DATA,
its admission, timeouts, pipelined replies and orderly shutdown.

Rules this module keeps: MAIL/RCPT arguments are parsed here, strictly (RFC 5321 4.1.2); a
MAIL/RCPT reply may wait for the next reply so pipelined commands get one packet (RFC 2920), but a
reply that may close the session is never held; while a delivery is being committed a shutdown or
a timeout waits for its reply. Outside a transaction (before the first command, between messages)
the wait for a command is settings.idle_timeout, inside one command_timeout; in DATA the client
must keep above settings.min_data_rate (data.data_deadline) or gets 421 and is disconnected.
Where aiosmtpd or asyncio offer no public way to do something, the private name used is marked
with a comment saying so.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiosmtpd.smtp import SMTP

from mailpair.protocols.delivery.admission import address_key
from mailpair.protocols.delivery.agent import DeliveryEnvelope
from mailpair.protocols.delivery.data import DataAbort, content_problem, data_deadline, read_data
from mailpair.protocols.delivery.replies import REPLY_SHUTDOWN, REPLY_TIMEOUT, too_slow_reply, with_enhanced_code

if TYPE_CHECKING:
    from mailpair.protocols.delivery.listener import Listener

# RFC 5321 4.1.2: "FROM:" / "TO:", a path <addr> (<> for MAIL), then optional parameters. Parsed
# here rather than by aiosmtpd, whose parser is lenient ("<a b@c>" and a missing ">" pass) and slow
# (the email package's header parser on every command).
_PATH = re.compile(r"^\s*<(?:@[^:<>\s]*:)?([^<>\s\x00-\x1f\x7f]*)>((?:\s+\S+)*)\s*$")
_MAILBOX = re.compile(r"^[^@\s\x00-\x1f\x7f]{1,256}(?:@[^@\s\x00-\x1f\x7f]{1,255})?$")

# A message bigger than this is checked off the event loop: scanning it would stall other sessions.
_CHECK_IN_THREAD_BYTES = 256 * 1024


class DeliverySession(SMTP):
    """One client connection (aiosmtpd protocol) with mailpair's DATA, limits and shutdown."""

    protocol_name = "smtp"
    with_proto = "ESMTP"

    def __init__(self, listener: Listener, **kwargs: Any):
        self.listener = listener
        self.agent = listener.agent
        s = listener.settings
        # aiosmtpd sizes the StreamReader from this in __init__; data lines are checked separately.
        self.line_length_limit = max(1001, s.max_line_length + 3)
        super().__init__(
            listener.agent,
            data_size_limit=s.max_message_bytes,
            enable_SMTPUTF8=True,
            decode_data=False,
            hostname=listener.agent.hostname,
            ident=f"mailpair {self.protocol_name.upper()} ready",
            timeout=s.command_timeout,
            auth_exclude_mechanism=["LOGIN", "PLAIN"],
            **kwargs,
        )
        self._raw_replies = False
        self._busy = False
        self._close_after = False
        self._refused = False
        self._admitted = False  # counted in the listener's sessions (STARTTLS calls connection_made again)
        self._address: str | None = None  # what this connection counts against (admission.address_key)
        # DATA pacing: bytes received since DATA began, when it began, the check's timer
        self._in_data = False
        self._data_bytes = 0
        self._data_started = 0.0
        self._pace_handle: asyncio.TimerHandle | None = None
        self._data_task: asyncio.Task | None = None
        self._too_slow = False
        self._pending_replies: list[bytes] = []
        # Count every command as it is dispatched. aiosmtpd has no public per-command hook; its
        # dispatch table (_smtp_methods, built in __init__) is the one place every command passes.
        counters = listener.command_counters
        for name, method in list(self._smtp_methods.items()):
            self._smtp_methods[name] = _counted(method, counters(name))

    # ------------------------------------------------------------------ connection bookkeeping
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        lst = self.listener
        if not self._admitted:
            address = address_key(transport.get_extra_info("peername"))
            refusal = lst.admit(address)
            if refusal is not None:
                self._refused = True
                transport.write(refusal.encode() + b"\r\n")  # type: ignore[attr-defined]
                transport.close()
                return
            self._admitted = True
            self._address = address
            lst.sessions.add(self)
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        if self._refused:
            return
        if self in self.listener.sessions:
            self.listener.sessions.discard(self)
            self.listener.release(self._address)
        self._end_data_pacing()
        super().connection_lost(error)

    def eof_received(self) -> bool | None:
        if self._refused:
            return False
        return super().eof_received()

    def data_received(self, data: bytes) -> None:
        if not self._refused:
            if self._in_data:
                self._data_bytes += len(data)
            super().data_received(data)

    def _create_envelope(self) -> DeliveryEnvelope:
        # aiosmtpd's (private) factory for the envelope it makes at connect, RSET and after DATA;
        # overriding it is the only way to have every envelope carry our resolved recipients.
        return DeliveryEnvelope()

    def _set_timeout(self, seconds: float | None = None) -> None:
        """Restart the idle timer (None: the timeout of the phase the session is in). aiosmtpd has
        no public way to give one phase (DATA) a longer timeout than the commands, so this calls
        its _reset_timeout."""
        self._reset_timeout(seconds)

    def _reset_timeout(self, duration: float | None = None) -> None:
        # aiosmtpd restarts its timer through this private method at connect and at every command;
        # overriding it is the one place where the wait can depend on the phase: short while no
        # transaction is open (before the first command, between messages), longer inside one.
        if duration is None:
            s = self.listener.settings
            env = self.envelope
            duration = s.command_timeout if env is not None and env.mail_from else s.idle_timeout
        super()._reset_timeout(duration)

    def _timeout_cb(self) -> None:
        # aiosmtpd's (private) timer callback closes without a word; say why first, and never cut
        # a delivery being committed (it closes right after its reply, as at shutdown).
        if self._busy:
            self._close_after = True
            return
        self._say_and_close(REPLY_TIMEOUT)

    def _say_and_close(self, reply: str) -> None:
        if self.transport is not None and not self.transport.is_closing():
            try:
                self.transport.write(reply.encode() + b"\r\n")  # type: ignore[attr-defined]
            except (AttributeError, RuntimeError, OSError):
                pass  # a TLS session already torn down underneath: closing is all that is left
            self.transport.close()

    # ------------------------------------------------------------------ DATA pacing
    def _start_data_pacing(self) -> None:
        loop = asyncio.get_running_loop()
        self._data_task = asyncio.current_task()
        self._data_bytes = 0
        self._data_started = loop.time()
        self._too_slow = False
        self._in_data = True
        self._pace_handle = loop.call_at(self._data_started + self.listener.settings.data_rate_grace, self._check_pace)

    def _check_pace(self) -> None:
        """Timer: is DATA still above the minimum rate? If so, look again when the bytes received
        so far stop being enough; if not, stop the read (smtp_DATA replies and closes)."""
        s = self.listener.settings
        due = self._data_started + data_deadline(self._data_bytes, s.min_data_rate, s.data_rate_grace)
        loop = asyncio.get_running_loop()
        if loop.time() < due:
            self._pace_handle = loop.call_at(due, self._check_pace)
            return
        self._pace_handle = None
        self._too_slow = True
        if self._data_task is not None:
            self._data_task.cancel()

    def _end_data_pacing(self) -> None:
        self._in_data = False
        self._data_task = None
        if self._pace_handle is not None:
            self._pace_handle.cancel()
            self._pace_handle = None

    def shutdown(self) -> None:
        """Say 421 and close, unless a delivery is being committed: then right after its reply."""
        if self._busy:
            self._close_after = True
        else:
            self._say_and_close(REPLY_SHUTDOWN)

    # ------------------------------------------------------------------ replies
    async def push(self, status: str | bytes) -> None:
        if not self._raw_replies and isinstance(status, str) and self.session is not None and self.session.extended_smtp:
            status = with_enhanced_code(status)
        if self._pending_replies:  # one write, so one packet
            if isinstance(status, str):
                status = status.encode("utf-8")
            status = b"".join(self._pending_replies) + status
            self._pending_replies.clear()
        await super().push(status)

    async def reply_soon(self, status: str) -> None:
        """A MAIL/RCPT reply: held back while the client's next command is already here, so a
        pipelined MAIL, RCPT..., DATA is answered in one packet (RFC 2920 3.3); the next push()
        sends it. Only these replies wait: anything that may close the session does not."""
        # Whether a whole next command line is buffered: asyncio's StreamReader has no public
        # peek, and aiosmtpd keeps its reader in a private attribute, so both are read here.
        if b"\n" in self._reader._buffer:  # type: ignore[attr-defined]
            self._pending_replies.append(status.encode("utf-8") + b"\r\n")
        else:
            await self.push(status)

    async def _ehlo(self, hostname: str) -> None:
        self._raw_replies = True  # EHLO lines carry no status codes
        try:
            await SMTP.smtp_EHLO(self, hostname)
        finally:
            self._raw_replies = False

    # ------------------------------------------------------------------ MAIL, RCPT
    async def _path(self, keyword: str, arg: str | None, allow_null: bool) -> tuple[str, list[str]] | None:
        """(address, parameters) of a MAIL/RCPT argument, or None after replying with the error."""
        if arg is None or arg[: len(keyword)].upper() != keyword or not arg[len(keyword) :].strip():
            await self.push(f"501 5.5.4 Syntax: {'MAIL FROM' if keyword == 'FROM:' else 'RCPT TO'}:<address> [parameters]")
            return None
        m = _PATH.match(arg[len(keyword) :])
        address = m.group(1) if m else None
        if address is None or not (_MAILBOX.match(address) or (allow_null and address == "")):
            await self.push("553 5.1.3 Error: malformed address (expected <local@domain>)")
            return None
        return address, m.group(2).split()

    async def _envelope(self) -> DeliveryEnvelope | None:
        """The transaction's envelope, or None after refusing a command sent before the greeting."""
        if await self.check_helo_needed():
            return None
        env = self.envelope
        assert isinstance(env, DeliveryEnvelope)
        return env

    async def smtp_MAIL(self, arg: str | None) -> None:
        env = await self._envelope()
        if env is None:
            return
        if env.mail_from:
            await self.push("503 5.5.1 Error: nested MAIL command")
            return
        parsed = await self._path("FROM:", arg, allow_null=True)
        if parsed is None:
            return
        address, params = parsed
        for p in params:
            key, eq, value = p.partition("=")
            key = key.upper()
            if key == "SIZE" and eq and value.isdigit():
                if int(value) > self.listener.settings.max_message_bytes:
                    await self.push("552 5.3.4 Message size exceeds fixed maximum message size")
                    return
            elif key == "BODY":
                if value.upper() not in ("7BIT", "8BITMIME"):
                    await self.push("501 5.5.4 BODY can only be 7BIT or 8BITMIME")
                    return
            elif key == "SMTPUTF8" and not eq:
                env.smtp_utf8 = True
            else:
                await self.push(f"555 5.5.4 MAIL FROM parameter {p} not recognized or not implemented")
                return
        env.mail_from = address or "<>"
        env.mail_options.extend(params)
        self._set_timeout()  # a transaction is open: the command timeout from now on
        await self.reply_soon("250 2.1.0 Sender ok")

    async def smtp_RCPT(self, arg: str | None) -> None:
        env = await self._envelope()
        if env is None:
            return
        if not env.mail_from:
            await self.push("503 5.5.1 Error: need MAIL command")
            return
        parsed = await self._path("TO:", arg, allow_null=False)
        if parsed is None:
            return
        address, params = parsed
        if params:
            await self.push(f"555 5.5.4 RCPT TO parameter {params[0]} not recognized or not implemented")
            return
        await self.reply_soon(await self.agent.add_recipient(env, address, params))

    # ------------------------------------------------------------------ DATA
    def data_replies(self, replies: list[str]) -> str:
        """LMTP: one reply per recipient; SMTP overrides this with one reply for all."""
        return "\r\n".join(replies)

    async def smtp_RSET(self, arg: str | None) -> None:
        await super().smtp_RSET(arg)
        self._set_timeout()  # no transaction any more: the idle timeout again

    async def smtp_DATA(self, arg: str | None) -> None:
        env = await self._envelope()
        if env is None:
            return
        if not env.rcpt_tos:
            await self.push("503 5.5.1 Error: need RCPT command")
            return
        if arg:
            await self.push("501 5.5.4 Syntax: DATA")
            return
        if self.agent.closing:
            await self.push(REPLY_SHUTDOWN)
            self.transport.close()
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        self._set_timeout(self.listener.settings.data_timeout)
        self._start_data_pacing()
        try:
            content, problem = await self._read_data()
        except DataAbort as e:
            await self.push(str(e))
            self.transport.close()
            return
        except asyncio.CancelledError:
            if not self._too_slow:
                raise  # the connection went away
            # our own pace check cancelled the read: take the cancellation back and say why
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
            self.agent.reject_all(env.recipients, "")  # counted as rejected in the metrics
            self._say_and_close(too_slow_reply(self.listener.settings.min_data_rate))
            return
        finally:
            self._end_data_pacing()
        recipients = env.recipients
        if problem is None:
            max_line = self.listener.settings.max_line_length
            if len(content) > _CHECK_IN_THREAD_BYTES:
                problem = await asyncio.to_thread(content_problem, content, max_line)
            else:
                problem = content_problem(content, max_line)
        if problem is not None:
            replies = self.agent.reject_all(recipients, problem)
        else:
            self._busy = True
            try:
                trace = self.agent.trace_headers(self.session, env, self.received_with())
                replies = await self.agent.deliver(trace, content, recipients)
            finally:
                self._busy = False
        self.envelope = DeliveryEnvelope()  # the next transaction starts clean
        self._set_timeout()
        await self.push(self.data_replies(replies))
        if self._close_after:
            await self.push(REPLY_SHUTDOWN)
            self.transport.close()

    def received_with(self) -> str:
        return self.with_proto

    async def _read_data(self) -> tuple[bytes, str | None]:
        # aiosmtpd keeps the connection's StreamReader in a private attribute; there is no public one.
        content = await read_data(self._reader, self.listener.settings.max_message_bytes)
        if content is None:
            return b"", f"552 5.3.4 Message too big (limit {self.listener.settings.max_message_bytes} bytes)"
        return content, None


def _counted(method: Callable, counter: Any) -> Callable:
    async def run(arg: Any) -> Any:
        counter.inc()
        return await method(arg)

    return run
