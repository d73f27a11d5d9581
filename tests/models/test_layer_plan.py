"""Layer plans: SOLAR depth up-scaling, keeping the ends, explicit plans and their errors."""

import pytest

from lmbuild.models import layer_plan as lp
from lmbuild.errors import UserError


def test_solar_and_keep_ends_plans():
    # SOLAR 10.7B: 32 layers, m = 8 -> 48 layers.
    plan = lp.solar_plan(32, 8)
    assert len(plan) == 48 and plan[:24] == list(range(24)) and plan[24:] == list(range(8, 32))
    assert lp.solar_plan(4, 1) == [0, 1, 2, 1, 2, 3]
    assert lp.solar_plan(3, 0) == [0, 1, 2, 0, 1, 2]
    assert lp.keep_ends_plan(6, 2) == [0, 1, 4, 5]
    with pytest.raises(UserError, match=r"model.upscale_drop: 4 must be .* smaller than the source's 4 layers"):
        lp.solar_plan(4, 4)
    with pytest.raises(UserError, match=r"model.downscale_keep: .* removes nothing"):
        lp.keep_ends_plan(4, 2)
    with pytest.raises(UserError, match=r"model.layer_plan: layer 4 does not exist in the 4-layer source"):
        lp.layer_plan({"init": "upscale", "layer_plan": [0, 1, 2, 3, 4]}, 4)
    with pytest.raises(UserError, match=r"model.layer_plan: a downscale plan keeps fewer"):
        lp.layer_plan({"init": "downscale", "layer_plan": [0, 0, 1]}, 4)
    with pytest.raises(UserError, match=r"model.layer_plan: an upscale plan has more"):
        lp.layer_plan({"init": "upscale", "layer_plan": [0, 1, 2]}, 4)
