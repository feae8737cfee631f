"""saehelpers.text: the preset's texts and fixed-shape token batches (BOS + text tokens, right-padded)."""

import pytest
import torch

from saehelpers import get_release, text


@pytest.fixture(scope="module")
def tok(mini):
    return mini[1]


def test_token_batches_rows_are_bos_then_text_then_padding(tok):
    batch = next(text.token_batches(tok, "mini", batch_size=3, seq_len=16))
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert ids.shape == mask.shape == (3, 16) and ids.dtype == mask.dtype == torch.long
    assert (ids[:, 0] == tok.bos_token_id).all() and (ids[:, 1:] != tok.bos_token_id).all()  # BOS by id, once
    for row, m in zip(ids, mask):
        n = int(m.sum())
        assert m[:n].all() and not m[n:].any()  # right padding
        assert (row[n:] == tok.pad_token_id).all()


def test_a_release_and_its_preset_name_read_the_same_text(tok):
    """text.token_batches(tokenizer, Release) failed with "Unknown preset Release(...)" (issue 34)."""
    rel = get_release("mini")
    assert list(text.iter_texts(rel, limit=3)) == list(text.iter_texts("mini", limit=3))
    a = next(text.token_batches(tok, rel, batch_size=2, seq_len=16))
    b = next(text.token_batches(tok, "mini", batch_size=2, seq_len=16))
    assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(
        a["attention_mask"], b["attention_mask"]
    )


def test_skip_batches_continues_where_n_batches_stopped(tok):
    first_two = list(text.token_batches(tok, "mini", batch_size=2, seq_len=16, n_batches=2))
    second = next(text.token_batches(tok, "mini", batch_size=2, seq_len=16, skip_batches=1))
    assert torch.equal(first_two[1]["input_ids"], second["input_ids"])
