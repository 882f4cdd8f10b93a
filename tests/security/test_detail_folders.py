"""`user+Folder@` delivery (issue 17): anyone could put a message into a user's Sent or Drafts by
addressing user+Sent@, where it passes for mail the user wrote. A +detail now reaches only folders
without a special use; the others are refused and the message goes to INBOX, unless the account
is allowed it."""

from __future__ import annotations

import smtplib

import pytest

from mailpair.protocols.delivery import DeliverySettings
from tests.helpers.delivery import DOMAIN, DeliveryNode, message


def _send(node: DeliveryNode, rcpt: str, subject: str) -> None:
    with smtplib.LMTP("127.0.0.1", node.lmtp.port) as lm:
        assert lm.sendmail("s@example.org", [f"{rcpt}@{DOMAIN}"], message(subject)) == {}


def _node(tmp_path, **settings) -> DeliveryNode:
    n = DeliveryNode(tmp_path / "node", DeliverySettings(domain=DOMAIN, **settings))
    n.db.commit("mailbox_create", account="alice", name="Lists/rust")
    n.db.commit("mailbox_create", account="alice", name="Outbox", special_use="\\Drafts")
    n.db.commit("mailbox_create", account="alice", name="sent")  # made without the attribute
    return n


@pytest.fixture
def node(tmp_path):
    n = _node(tmp_path)
    yield n
    n.close()


@pytest.mark.parametrize("folder", ["Sent", "Drafts", "Trash", "Junk", "Archive", "Outbox", "sent"])
def test_detail_into_a_special_use_folder_goes_to_inbox(node, folder):
    _send(node, f"alice+{folder}", f"forged-{folder}")
    assert node.messages("alice", folder) == []
    assert any(f"forged-{folder}".encode() in m for m in node.messages("alice", "INBOX"))


def test_detail_into_an_ordinary_folder_is_kept(node):
    _send(node, "alice+Lists/rust", "list-mail")
    assert len(node.messages("alice", "Lists/rust")) == 1
    assert node.messages("alice", "INBOX") == []


def test_an_account_allowed_it_gets_its_special_use_folder(tmp_path):
    node = _node(tmp_path, detail_into_special_use=("bob",))
    try:
        _send(node, "bob+Sent", "copy-to-self")
        assert len(node.messages("bob", "Sent")) == 1
        _send(node, "alice+Sent", "not-allowed")
        assert node.messages("alice", "Sent") == []
    finally:
        node.close()
