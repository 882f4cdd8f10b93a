"""Helpers the tests share, reached one way: `from tests.helpers.<module> import ...`.

Rules this package keeps: it holds code, not tests (pytest collects nothing here); fixtures that
build on it live in the conftest.py of the folder whose tests use them; the repository root is on
sys.path through pyproject's pytest `pythonpath`, so no test edits sys.path and no test module
imports another.

- pair.py: a real pair through the CLI (`pair up --json`, `pair down`, `status`), and HTTP calls.
- delivery.py: a delivery node on a thread, a raw LMTP/SMTP client, test messages.
- postfix.py: a private Postfix relaying to a node over LMTP (needs root and postfix).
- store.py: quick stores and recognisable messages for store tests.
- crash_writer.py: the process the crash test kills (`python -m tests.helpers.crash_writer`).
- threads.py: worker threads whose failures fail the test.
"""
