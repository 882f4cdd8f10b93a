"""The directory witness: the witness state as numbered files on a share (file share witness).

Layout: `state.<n>` holds the n-th state as JSON; the highest n is the current one and n is the
token. Temporary files are `tmp.<random>` and are never read as state.

Rules this module keeps:
- Never overwrite. A new state is written to a fresh temp file, fsync'd, then *linked* to
  `state.<n+1>`: link() fails if another node made n+1 first, so of two writers from one version
  exactly one wins. A rename over the old file under a lock is not safe on NFS; link is atomic there.
- A lost reply (NFS retransmit, EEXIST or EIO after the link was made) is recognised as the
  recipe in open(2) says: the temp file's link count is 2 exactly when our link exists.
- A link that landed below a higher state (its number had been pruned and is made again by a
  writer with a stale token) is not a win. Each file names the nonce of the state it follows, so
  after linking a writer checks that its file is the newest or the one the next file follows.
- Durable: the temp file is fsync'd before the link and the directory after it. The share must be
  exported `sync` (README), or the server may lose a state it acknowledged.
- Old states are pruned, keeping the newest `keep`, only below the one just written, so a reader
  that listed the directory finds its file or finds that newer ones exist and lists again.
- All file I/O runs in worker threads, bounded by the timeout (Witness.read / compare_and_swap), so
  a hung share never blocks the event loop or the commit path.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from mailpair.durable import fsync_dir

from .witness import Token, Witness, WitnessError, WitnessState, new_nonce

STATE_RE = re.compile(r"^state\.(\d+)$")
TMP_PREFIX = "tmp."
KEEP = 8
STALE_TMP_S = 600.0  # a temp file this old belongs to a writer that crashed or gave up


class DirectoryWitness(Witness):
    def __init__(self, path: Path | str, timeout: float = 2.0, keep: int = KEEP) -> None:
        super().__init__(timeout)
        if keep < 2:
            raise ValueError("keep at least two states, so a reader racing a prune finds one")
        self.path = Path(path)
        self.keep = keep
        # Own threads: a share that hangs holds these, never the default executor the node uses.
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="witness-dir")

    def describe(self) -> str:
        return f"directory {self.path}"

    async def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def _read(self) -> tuple[WitnessState | None, Token]:
        return await asyncio.get_running_loop().run_in_executor(self._pool, self.read_sync)

    async def _cas(self, expected: Token, new: WitnessState) -> Token | None:
        return await asyncio.get_running_loop().run_in_executor(self._pool, self.cas_sync, expected, new)

    # The blocking halves, also used directly by tests that race real processes.

    def _numbers(self) -> list[int]:
        try:
            names = os.listdir(self.path)
        except OSError as exc:
            raise WitnessError(f"witness directory {self.path} unreadable: {exc}") from exc
        return sorted(int(m.group(1)) for name in names if (m := STATE_RE.match(name)))

    def read_sync(self) -> tuple[WitnessState | None, Token]:
        for _ in range(5):
            numbers = self._numbers()
            if not numbers:
                return None, Token(0)
            n = numbers[-1]
            try:
                data = (self.path / f"state.{n}").read_bytes()
            except FileNotFoundError:
                continue  # pruned between the listing and the open: newer states exist, list again
            except OSError as exc:
                raise WitnessError(f"witness state.{n} unreadable: {exc}") from exc
            # A state file is linked only after its content was fsync'd, so a bad one is damage, not
            # a write in progress: report it rather than fall back to an older state.
            return WitnessState.from_json(data), Token(n)
        raise WitnessError(f"witness directory {self.path} keeps changing under the reader")

    def cas_sync(self, expected: Token, new: WitnessState) -> Token | None:
        n = expected.value
        after = ""
        if n > 0:
            try:
                after = WitnessState.from_json((self.path / f"state.{n}").read_bytes()).nonce
            except FileNotFoundError:
                return None  # that version was pruned: newer ones exist
            except OSError as exc:
                raise WitnessError(f"witness state.{n} unreadable: {exc}") from exc
        # Each file names the state it follows ("after": its nonce), so a writer can tell a state
        # built on its own from one that was there before it (see _confirm).
        payload = json.loads(new.to_json())
        payload["after"] = after
        tmp = self.path / f"{TMP_PREFIX}{new_nonce()}"
        target = self.path / f"state.{n + 1}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # private, as every mailpair file (issue 17)
            try:
                view = memoryview(json.dumps(payload, sort_keys=True).encode() + b"\n")
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise WitnessError(f"witness temp file not written: {exc}") from exc
        try:
            won = self._link(tmp, target)
            if won:
                fsync_dir(self.path)  # the new name is durable before anyone is told
                won = self._confirm(n + 1, new.nonce)
        except OSError as exc:
            raise WitnessError(f"witness write of state.{n + 1} failed: {exc}") from exc
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        if won:
            self._prune(n + 1)
            return Token(n + 1)
        return None

    def _confirm(self, n: int, nonce: str) -> bool:
        """Our link made state.<n>: is it the current state (or the one the next state follows)?

        A writer whose token was very stale may re-make a number that had been pruned, under newer
        states; that is not a win. If state.<n+1> is already gone too (many writes in between), the
        answer is unknowable and the write is counted as lost: a lost win only delays, never splits.
        """
        if max(self._numbers(), default=0) == n:
            return True
        try:
            following = json.loads((self.path / f"state.{n + 1}").read_bytes())
        except (OSError, ValueError):
            return False
        return isinstance(following, dict) and following.get("after") == nonce

    @staticmethod
    def _link(tmp: Path, target: Path) -> bool:
        try:
            os.link(tmp, target)
            return True
        except OSError as exc:
            # EEXIST may be our own link whose reply was lost and retried; other errors may hide a
            # link that was made. The temp file's link count tells (open(2), "O_EXCL ... NFS").
            try:
                made = os.stat(tmp).st_nlink == 2
            except OSError:
                raise exc from None
            if made:
                return True
            if exc.errno == errno.EEXIST:
                return False
            raise

    def _prune(self, newest: int) -> None:
        """Remove states older than the newest `keep`, and temp files left by crashed writers."""
        removed = False
        for m in self._numbers():
            if m <= newest - self.keep:
                with contextlib.suppress(OSError):
                    os.unlink(self.path / f"state.{m}")
                    removed = True
        now = time.time()  # file ages come from the share's mtime, so wall time is the right ruler
        with contextlib.suppress(OSError):
            for name in os.listdir(self.path):
                if name.startswith(TMP_PREFIX):
                    p = self.path / name
                    with contextlib.suppress(OSError):
                        if now - p.stat().st_mtime > STALE_TMP_S:
                            p.unlink()
                            removed = True
        if removed:
            with contextlib.suppress(OSError):
                fsync_dir(self.path)
