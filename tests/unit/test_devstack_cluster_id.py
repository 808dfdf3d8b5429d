"""The KRaft cluster id devstack formats the broker's storage with."""

from __future__ import annotations

import uuid

from devstack import stack


def test_a_cluster_id_never_starts_with_a_dash_which_the_storage_tool_would_take_for_an_option(monkeypatch):
    # uuid4 bytes whose URL-safe base64 starts with "-" (0xf8..0xfb in the first byte), then normal ones.
    dashed = uuid.UUID(bytes=bytes([0xF8]) + bytes(15))
    plain = uuid.UUID(bytes=bytes([0x10]) + bytes(15))
    drawn = iter([dashed, dashed, plain])
    monkeypatch.setattr(stack.uuid, "uuid4", lambda: next(drawn))
    cluster_id = stack._cluster_id()
    assert not cluster_id.startswith("-") and len(cluster_id) == 22
