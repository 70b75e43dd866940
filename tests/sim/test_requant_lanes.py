# amaranth: UnusedElaboratable=no
"""Run compiled models on the ``icebreaker`` preset's RTL: one requantizer lane for four columns.

The preset's requantizer is time-multiplexed (``requant_lanes = 1``, ``requant_spacing = 4``):
the last K tile's rows enter the array four cycles apart and the requantizer's latency
grows to 11. The outputs must still equal onnxruntime bit for bit, and the cycles the RTL
counts must equal the compiler's cycle model (``compiler/cycles.py``).
"""

import pytest

from accel import zoo
from accel.config import preset

from .test_rtl_models import check, icebreaker_rtl  # noqa: F401 (a fixture)

CONFIG = preset("icebreaker")


def test_the_preset_shares_one_lane():
    assert (CONFIG.requant_lanes, CONFIG.requant_spacing) == (1, 4)


SEED = 2026


@pytest.mark.parametrize("variant", ["qdq_channel", "qop_tensor"])
def test_mlp_37_53_19(icebreaker_rtl, variant):
    print("seed", SEED)
    x = zoo.calibration_data("mlp_37_53_19", n=7, seed=SEED)
    check(icebreaker_rtl, zoo.build("mlp_37_53_19", variant), x, batch=3, config=CONFIG)


@pytest.mark.parametrize("variant", ["qdq_channel", "qop_channel"])
def test_digits_cnn(icebreaker_rtl, variant):
    images = zoo.digits_dataset()[2][:24]
    check(icebreaker_rtl, zoo.build("digits_cnn", variant), images, batch=1, config=CONFIG)
