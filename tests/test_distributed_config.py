"""Per-shard seeds and --option parsing."""
from __future__ import annotations

import pytest

from xai_torch import XaiError
from xai_torch import dataset as xd


def test_shard_seed_and_option_parsing():
    assert xd.shard_seed(0, 3) == xd.shard_seed(0, 3) != xd.shard_seed(0, 4) != xd.shard_seed(1, 3)
    assert 0 <= xd.shard_seed(2**40, 10**6) < 2**63
    assert xd.parse_options(["steps=16", "normalize=(0.5, 0.5)", "layer=layer4.1"]) == \
        {"steps": 16, "normalize": (0.5, 0.5), "layer": "layer4.1"}
    with pytest.raises(XaiError, match="key=value"):
        xd.parse_options(["steps"])
