"""The config (bigram_jax/config.py): 'auto' resolves to the cheaper loss."""
from __future__ import annotations

import pytest

from bigram_jax.config import resolve_loss
from bigram_jax.errors import UserError

V_BIG = 8000  # a 64M-parameter table: 256 MB, 768 MB with both AdamW moments


def test_auto_loss_picks_the_cheaper_implementation():
    assert resolve_loss("auto", 65, 32, 8) == "counts"  # the lecture: V^2 = 4,225 < B*T*V = 16,640
    assert resolve_loss("auto", V_BIG, 32, 8) == "gather"  # V^2 = 64M >> B*T*V = 2M
    assert resolve_loss("gather", 65, 32, 8) == "gather" and resolve_loss("counts", V_BIG, 32, 8) == "counts"
    with pytest.raises(UserError, match="needs V\\^2 < 2\\^31"):  # int32 pair ids would wrap at GPT-2's V
        resolve_loss("counts", 50304, 32, 8)


def test_auto_never_picks_a_loss_it_would_refuse():
    """A batch of 64 x 1024 positions at GPT-2's 50,304 ids: counts would be cheaper by B*T, but its int32 pair
    ids stop at V = 46,340, so auto takes gather (and an explicit counts is refused in one line)."""
    from bigram_jax.config import resolve_loss

    assert resolve_loss("auto", 50_304, 64, 1024) == "gather"
    assert resolve_loss("auto", 46_340, 64, 1024) == "counts"
    with pytest.raises(UserError, match="V\\^2 < 2\\^31"):
        resolve_loss("counts", 50_304, 64, 1024)
