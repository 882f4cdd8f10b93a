"""An operator sets the IMAP and delivery limits in node.json ("imap_settings", "delivery");
unknown names are refused at start with the known ones, not ignored."""

from __future__ import annotations

import pytest

from mailpair.config import NodeConfig
from mailpair.protocols import available_listeners


def test_imap_and_delivery_limits_come_from_node_json(tmp_path):
    cfg = NodeConfig(
        name="n",
        data=str(tmp_path),
        imap_settings={"max_preauth_per_address": 3, "login_delay_max": 30.0},
        delivery={"max_connections_per_address": 7},
    )
    settings = {name: s for name, _, s in available_listeners(cfg)}
    assert settings["imap"].max_preauth_per_address == 3 and settings["imap"].login_delay_max == 30.0
    assert settings["lmtp"].max_connections_per_address == 7 and settings["smtp"].max_connections_per_address == 7
    assert NodeConfig(name="n", data=str(tmp_path)).imap_settings == {}


@pytest.mark.parametrize("field", ["imap_settings", "delivery"])
def test_an_unknown_setting_is_refused_with_the_known_ones(tmp_path, field):
    cfg = NodeConfig(name="n", data=str(tmp_path), **{field: {"max_preauth_per_adress": 3}})
    with pytest.raises(ValueError, match="unknown .* setting.*max_preauth_per_adress.*known"):
        available_listeners(cfg)
