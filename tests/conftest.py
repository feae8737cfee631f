import os

import pytest
import torch

# Tests never touch the network; the fake real-release cache is used only in subprocesses.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# The automatic choices are tested: no setting from the shell may pick them.
for name in ("SAEHELPERS_PRESET", "SAEHELPERS_DTYPE", "SAEHELPERS_LOW_MEMORY", "SAEHELPERS_WIDGETS"):
    os.environ.pop(name, None)
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


# A test that runs whole notebooks, a lesson's computations, the mini build's metrics or the real-shape
# loaders carries the `heavy` mark (`pytestmark = pytest.mark.heavy` for a whole module): the fast lane,
# `pytest -m "not heavy and not slow" tests`, leaves it out. The nbmake items get it in ../conftest.py.


@pytest.fixture(scope="session")
def mini():
    """The stand-in model and tokenizer in float32, loaded once per test session.

    float32 so that exact identities (a splice with the error term gives the clean logits,
    attribution matches finite differences, hooks add exactly c * d) are checked to ~1e-5. The
    bfloat16 model learners get by default on this CPU runs in every notebook
    (test_notebooks_run.py), and test_dtypes.py bounds what bfloat16 changes.
    """
    import saehelpers

    return saehelpers.load_model("mini", dtype="float32")


@pytest.fixture(scope="session")
def prompt_ids(mini):
    _, tok = mini
    enc = tok(["The capital of France is Paris. The capital of Italy is"], return_tensors="pt")
    return enc.input_ids, enc.attention_mask


@pytest.fixture(scope="session")
def toy_saes():
    """Notebook 06's toy world and its plain and Matryoshka SAEs (make_toy(seed=0), train(seed=1)), trained once."""
    from saehelpers import toy

    world = toy.make_toy(seed=0)
    feats, x = world.sample(20000, seed=123)
    saes = {m: toy.train(world, m, seed=1, progress=False) for m in (False, True)}
    return world, feats, x, saes


# ---------------------------------------------------------------- a random SAE on the mini model
# (test_features, test_cards, test_widgets)

RANDOM_SAE_LAYER = 6


@pytest.fixture(scope="session")
def random_sae(mini):
    """A random JumpReLU SAE of the mini release's shape, with thresholds set so ~2% of latents fire."""
    from sae_lens import JumpReLUSAE, JumpReLUSAEConfig

    from saehelpers import get_release, hooks

    model, tok = mini
    rel = get_release("mini")
    torch.manual_seed(0)
    cfg = JumpReLUSAEConfig(d_in=rel.d_model, d_sae=rel.d_sae, dtype="float32", device="cpu")
    cfg.metadata.hook_name = rel.hook_name(RANDOM_SAE_LAYER)
    sae = JumpReLUSAE(cfg)
    sae.requires_grad_(False)
    sae.W_enc.normal_(0, rel.d_model**-0.5)
    sae.W_dec.copy_(sae.W_enc.T / sae.W_enc.T.norm(dim=1, keepdim=True))
    ids = tok(
        "The quick brown fox jumps over the lazy dog. def f(x): return x + 1", return_tensors="pt"
    ).input_ids
    x = hooks.resid_post(model, ids, [RANDOM_SAE_LAYER])[RANDOM_SAE_LAYER][0, 1:].float()
    sae.threshold.copy_((x @ sae.W_enc + sae.b_enc).quantile(0.98, dim=0).clamp_min(1e-3))
    return sae


@pytest.fixture(scope="session")
def small_batches(mini):
    from saehelpers.text import token_batches

    _, tok = mini
    return list(token_batches(tok, "mini", batch_size=2, seq_len=24, n_batches=2))
