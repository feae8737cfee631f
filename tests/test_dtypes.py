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


@pytest.fixture(scope="module")
def low():
    return saehelpers.load_model("mini", dtype="float32", low_memory=True)


def test_low_memory_keeps_the_embedding_in_bfloat16_and_computes_in_float32(mini, low):
    model, _ = low
    embed = model.get_input_embeddings().weight
    assert embed.dtype == torch.bfloat16 and model.lm_head.weight is embed  # still tied, not copied
    others = [(n, p.dtype) for n, p in model.named_parameters() if p is not embed]
    assert others and all(d == torch.float32 for _, d in others), others
    assert model.dtype == torch.float32  # what saehelpers and transformers cast activations to
    assert saehelpers.loading.weights_dtype(model) == "float32, embedding in bfloat16"
    assert saehelpers.loading.weights_dtype(mini[0]) == "float32"
    mb = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
    assert 650 < mb < 750  # 1,023 MB in float32, 511 in bfloat16
    # The body comes from the float32 copy (mapped), so it is the float32 model's, exactly.
    for name, p in mini[0].named_parameters():
        if "embed_tokens" not in name:
            assert torch.equal(model.get_parameter(name), p), name


def test_float32_body_without_a_float32_file_casts():
    model, tok = saehelpers.load_model("mini", dtype="bfloat16")  # a model of its own: this one is changed
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    saehelpers.loading.float32_body(model)
    embed = model.get_input_embeddings().weight
    for name, p in model.named_parameters():
        want = torch.bfloat16 if p is embed else torch.float32
        assert p.dtype == want and torch.equal(p, before[name].to(want)), name
    with torch.no_grad():
        logits = model(tok("Hello", return_tensors="pt").input_ids).logits
    assert logits.dtype == torch.float32 and torch.isfinite(logits).all()


def test_float32_body_refuses_an_untied_model():
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    cfg = Gemma3TextConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                           num_attention_heads=2, num_key_value_heads=1, head_dim=8, tie_word_embeddings=False)  # fmt: skip
    with pytest.raises(ValueError, match="tied"):
        saehelpers.loading.float32_body(Gemma3ForCausalLM(cfg).bfloat16())


def test_low_memory_logits_are_closer_to_float32_than_bfloat16(mini, low, bf16):
    ids = mini[1](
        "The capital of France is Paris, and the capital of Italy is", return_tensors="pt"
    ).input_ids
    with torch.no_grad():
        ref, got, half = (m(ids).logits.float().log_softmax(-1) for m in (mini[0], low[0], bf16[0]))
    assert got.dtype == torch.float32
    kl_low = (ref.exp() * (ref - got)).sum(-1).mean().item()
    kl_half = (ref.exp() * (ref - half)).sum(-1).mean().item()
    assert kl_low < 1e-3 and kl_low < kl_half / 3, (kl_low, kl_half)
    assert ref[0, -1].argmax() == got[0, -1].argmax()


def test_low_memory_unembedding_matches_a_float32_matmul_with_and_without_grad(low):
    model, _ = low
    head = model.get_output_embeddings()
    h = torch.randn(3, 5, model.config.hidden_size)
    want = h @ head.weight.float().T
    with torch.no_grad():
        got = head(h)
    assert got.shape == (3, 5, model.config.vocab_size) and got.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)
    h.requires_grad_(True)
    out = head(h)  # autograd path (attribution): the same numbers, and a gradient reaches h
    torch.testing.assert_close(out.detach(), want, rtol=1e-5, atol=1e-4)
    out[0, 0, 7].backward()
    torch.testing.assert_close(h.grad[0, 0], head.weight[7].float())
    assert h.grad[1:].abs().sum() == 0


def test_low_memory_keeps_the_sae_metrics(mini, low):
    model32, tok = mini
    layer = get_release("mini").layers[-1]
    batches = list(token_batches(tok, "mini", batch_size=4, seq_len=64, n_batches=1))
    sae = saehelpers.load_sae(layer, "mini", dtype="float32")
    s32 = sae_stats(model32, sae, batches, progress=False)
    slow = sae_stats(low[0], sae, batches, progress=False)
    # Tighter than bfloat16's tolerances above: only the embedding is rounded.
    assert abs(slow.explained_variance - s32.explained_variance) < 0.002
    assert abs(slow.ce_clean - s32.ce_clean) < 0.01
    assert abs(slow.delta_loss - s32.delta_loss) < 0.02
