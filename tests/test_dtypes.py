"""What bfloat16, the CPU default where the CPU computes it natively, changes in the lessons' numbers.

Measured once on the mini preset's held-out text (3 batches of 8 x 128, every layer): EV moved by
<= 0.0003 and the loss increase by <= 0.01 nats. On the smaller sample here the tolerances are a few
times those, far below the differences the lessons discuss (between layers, prefixes, features).
"""

import pytest
import torch

import saehelpers
from saehelpers import get_release
from saehelpers.activations import sae_stats
from saehelpers.text import token_batches

pytestmark = pytest.mark.heavy  # the fast lane leaves this module out


@pytest.fixture(scope="module")
def bf16():
    return saehelpers.load_model("mini", dtype="bfloat16")


def test_bfloat16_keeps_the_sae_metrics(mini, bf16):
    model32, tok = mini
    model16, _ = bf16
    assert model16.dtype == torch.bfloat16 and model32.dtype == torch.float32
    layer = get_release("mini").layers[-1]
    batches = list(token_batches(tok, "mini", batch_size=4, seq_len=64, n_batches=1))
    s32 = sae_stats(model32, saehelpers.load_sae(layer, "mini", dtype="float32"), batches, progress=False)
    s16 = sae_stats(model16, saehelpers.load_sae(layer, "mini", dtype="bfloat16"), batches, progress=False)
    assert abs(s16.explained_variance - s32.explained_variance) < 0.005
    assert abs(s16.l0 - s32.l0) < 1.0
    assert abs(s16.ce_clean - s32.ce_clean) < 0.03
    assert abs(s16.delta_loss - s32.delta_loss) < 0.05
