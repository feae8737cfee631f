import os

import pytest
import torch

# Tests never touch the network; the fake real-release cache is used only in subprocesses.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.pop("SAEHELPERS_PRESET", None)
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def mini():
    """The stand-in model and tokenizer, loaded once per test session."""
    import saehelpers

    return saehelpers.load_model("mini")


@pytest.fixture(scope="session")
def prompt_ids(mini):
    _, tok = mini
    enc = tok(["The capital of France is Paris. The capital of Italy is"], return_tensors="pt")
    return enc.input_ids, enc.attention_mask
