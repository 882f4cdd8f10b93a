from __future__ import annotations

import pytest

from tests.helpers.delivery import DeliveryNode


@pytest.fixture
def node(tmp_path):
    n = DeliveryNode(tmp_path / "node")
    yield n
    n.close()
