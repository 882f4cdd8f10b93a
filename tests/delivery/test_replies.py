"""The delivery replies as pure functions: no listener, no socket."""

from __future__ import annotations

from mailpair.protocols.delivery.replies import recipient_error_reply, smtp_data_reply, with_enhanced_code
from mailpair.store import NoSuchAccount, NotActive, OverQuota, StoreError, TooLarge


def test_store_errors_map_to_the_reply_an_mta_acts_on():
    assert recipient_error_reply("a@x", NoSuchAccount("no")) == ("550 5.1.1 <a@x> User unknown", "unknown_user")
    assert recipient_error_reply("a@x", OverQuota("full"))[0].startswith("552 5.2.2")
    assert recipient_error_reply("a@x", TooLarge("big"))[0].startswith("552 5.3.4")
    assert recipient_error_reply("a@x", NotActive("passive"))[1] == "unavailable"
    # anything unforeseen is temporary: the MTA keeps the message
    assert recipient_error_reply("a@x", StoreError("?"))[0].startswith("451 ")
    assert recipient_error_reply("a@x", RuntimeError("?"))[0].startswith("451 ")


def test_enhanced_codes_are_added_once():
    assert with_enhanced_code("250 OK") == "250 2.0.0 OK"
    assert with_enhanced_code("250 2.1.0 Sender ok") == "250 2.1.0 Sender ok"
    assert with_enhanced_code("354 End data") == "354 End data"  # none defined for 354
    assert with_enhanced_code("250-PIPELINING") == "250-PIPELINING"


def test_smtp_reply_is_a_failure_when_any_recipient_failed_temporary_first():
    ok = "250 2.0.0 <a@x> Delivered"
    assert smtp_data_reply([ok, ok]).startswith("250 2.0.0 Message accepted for delivery to 2 recipients")
    assert smtp_data_reply([ok, "550 5.1.1 no", "452 4.2.2 full"]) == "452 4.2.2 full"
    assert smtp_data_reply(["550 5.1.1 no", ok]) == "550 5.1.1 no"
