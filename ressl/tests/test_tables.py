"""Parameter counts, queue size and FLOPs against the spec card (the rows ``python tables.py`` prints)."""
import pytest

import tables


@pytest.mark.parametrize('what,card,ours', tables.param_rows())
def test_parameter_counts_match_the_card(what, card, ours):
    assert ours == card, what


def test_flops_match_the_card():
    for what, card, ours in tables.flop_rows():
        assert round(ours, 2) == pytest.approx(card, abs=1e-9), what
