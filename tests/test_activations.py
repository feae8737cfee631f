"""saehelpers.activations on the mini model with a few short batches, against brute-force computations."""

import pytest
import torch

from saehelpers import activations as A
from saehelpers import hooks
from saehelpers import metrics as M
from saehelpers.release import hook_name
from saehelpers.text import token_batches

LAYER = 6
TEXTS = [
    "The capital of France is Paris, and the capital of Italy is Rome.",
    "def add(a, b):\n    return a + b",
    "Hi",
    "Total: 3 apples at $0.50 each = $1.50",
]


@pytest.fixture(scope="module")
def batches(mini):
    """Two batches from token_batches (right padding) and one from the tokenizer (left padding)."""
    _, tok = mini
    # "Hi" gives a short, right-padded row; longer texts give full rows (split at 9 tokens + BOS).
    right = list(token_batches(tok, batch_size=2, seq_len=10, texts=TEXTS[2::-1], min_tokens=1, n_batches=2))
    assert len(right) == 2
    assert tok.padding_side == "left"  # Gemma's tokenizer pads on the left; token_batches on the right
    left = dict(tok([TEXTS[3], TEXTS[2]], return_tensors="pt", padding=True))
    batches = [*right, left]
    assert any((b["attention_mask"][:, -1] == 0).any() for b in right)  # there is right padding
    assert (left["attention_mask"][:, 0] == 0).any()  # and left padding
    return batches


@pytest.fixture(scope="module")
def hidden(mini, batches):
    """Per batch: (keep mask, logits, hidden_states) of a plain full forward pass."""
    model, _ = mini
    out = []
    for b in batches:
        with torch.no_grad():
            o = model(**b, output_hidden_states=True)
        keep = M.token_mask(b["input_ids"], b["attention_mask"], model.config.bos_token_id)
        out.append((keep, o.logits, o.hidden_states))
    return out


def test_collect_resid_equals_hidden_states_without_bos_and_padding(mini, batches, hidden):
    model, tok = mini
    got = A.collect_resid(model, batches, [2, LAYER], progress=False)
    for layer in (2, LAYER):
        want = torch.cat([hs[layer + 1][keep] for keep, _, hs in hidden])
        assert got.acts[layer].dtype == torch.float32 and got.acts[layer].shape == want.shape
        assert torch.equal(got.acts[layer], want)
    ids = torch.cat([b["input_ids"][keep] for b, (keep, _, _) in zip(batches, hidden)])
    assert torch.equal(got.token_ids, ids)
    assert tok.bos_token_id not in got.token_ids.tolist() and tok.pad_token_id not in got.token_ids.tolist()
    # Index back into the texts: every token sits after BOS in its row, padding removed.
    assert len(got.rows) == sum(len(b["input_ids"]) for b in batches)
    for i in range(got.n_tokens):
        ctx = got.context(i)
        assert ctx[0] == tok.bos_token_id and ctx[-1] == got.token_ids[i] and len(ctx) == got.position[i] + 1
    assert got.context(5, before=2).tolist() == got.context(5).tolist()[-3:]
    assert got.position.min() == 1 and tok.decode(got.rows[-1][1:]) == TEXTS[2]
    assert "tokens x d_model 640" in repr(got)


def test_collect_resid_max_tokens_stops_early(mini, batches):
    model, _ = mini
    full = A.collect_resid(model, batches, LAYER, progress=False)
    calls = []
    handle = hooks.decoder_layers(model)[0].register_forward_hook(lambda *a: calls.append(1))
    try:
        part = A.collect_resid(model, batches, LAYER, max_tokens=7, progress=False)
    finally:
        handle.remove()
    assert calls == [1]  # the first batch has more than 7 tokens: one forward pass, no more
    assert part.n_tokens == 7 and torch.equal(part.acts[LAYER], full.acts[LAYER][:7])
    assert torch.equal(part.token_ids, full.token_ids[:7])
    # Across batches, and more asked for than there is: the rows written are exactly the full run's.
    n = full.n_tokens
    more = A.collect_resid(model, batches, [2, LAYER], max_tokens=n + 50, progress=False)
    assert more.n_tokens == n and more.acts[LAYER].shape == full.acts[LAYER].shape
    assert torch.equal(more.acts[LAYER], full.acts[LAYER])
    some = A.collect_resid(model, batches, [2, LAYER], max_tokens=n - 3, progress=False)
    assert torch.equal(some.acts[LAYER], full.acts[LAYER][: n - 3]) and some.acts[2].shape[0] == n - 3
    huge = A.collect_resid(
        model, batches, LAYER, max_tokens=10**12, progress=False
    )  # "all": no 10^12-row tensor
    assert torch.equal(huge.acts[LAYER], full.acts[LAYER])


def test_collect_resid_bad_input(mini, batches):
    model, _ = mini
    with pytest.raises(ValueError, match="No tokens collected"):
        A.collect_resid(model, [], LAYER, progress=False)
    with pytest.raises(ValueError, match=r"0\.\.17"):
        A.collect_resid(model, batches, [LAYER, 18], progress=False)
    with pytest.raises(ValueError, match="max_tokens"):
        A.collect_resid(model, batches, LAYER, max_tokens=0, progress=False)
    with pytest.raises(ValueError, match="dict with 'input_ids'"):
        A.collect_resid(model, ["some text"], LAYER, progress=False)


@pytest.fixture(scope="module")
def sae(mini, hidden):
    """A random 640 x 256 JumpReLU SAE whose thresholds make latents dead, dense (~50%) or sparse (~5%)."""
    from sae_lens import JumpReLUSAE, JumpReLUSAEConfig

    torch.manual_seed(0)
    sae = JumpReLUSAE(JumpReLUSAEConfig(d_in=640, d_sae=256))
    sae.cfg.metadata.hook_name = hook_name(LAYER)
    x = torch.cat([hs[LAYER + 1][keep] for keep, _, hs in hidden])
    with torch.no_grad():
        sae.b_dec.copy_(x.mean(0))
        sae.W_dec.copy_(sae.W_enc.T)
        pre = (x - sae.b_dec) @ sae.W_enc
        threshold = torch.quantile(pre, 0.95, dim=0)
        threshold[16:32] = torch.quantile(pre[:, 16:32], 0.5, dim=0)
        sae.threshold.copy_(threshold.clamp(min=0) + 1e-3)  # no pre-activation sits on a threshold
        sae.threshold[:16] = 1e9  # never fires
    return sae.eval()


def brute_force(model, sae, batches, hidden, layer):
    """The same numbers the long way: concatenated tensors, a per-position loop, float64 formulas."""
    x = torch.cat([hs[layer + 1][keep] for keep, _, hs in hidden])
    feats = sae.encode(x)
    x_hat = sae.decode(feats)
    _, per_token = M.l0(feats)
    counts = M.firing_counts(feats)
    ce = {"clean": [], "spliced": [], "zero_ablated": []}
    kl = {"spliced": [], "zero_ablated": []}

    def edit(keep, new):
        def fn(h):
            h = h.clone()
            for r, s in keep.nonzero().tolist():
                h[r, s] = new(h[r, s])
            return h

        return fn

    for b, (keep, clean, _) in zip(batches, hidden):
        logits = {"clean": clean}
        with torch.no_grad():
            with hooks.replace(model, layer, edit(keep, lambda v: sae.decode(sae.encode(v)))):
                logits["spliced"] = model(**b).logits
            with hooks.replace(model, layer, edit(keep, torch.zeros_like)):
                logits["zero_ablated"] = model(**b).logits
        ids = b["input_ids"]
        for r, s in keep.nonzero().tolist():
            logp = {k: v[r, s].double().log_softmax(-1) for k, v in logits.items()}
            if s + 1 < ids.shape[1] and keep[r, s + 1]:
                for k in ce:
                    ce[k].append(-logp[k][ids[r, s + 1]].item())
            for k in kl:
                kl[k].append((logp["clean"].exp() * (logp["clean"] - logp[k])).sum().item())
    mean = {k: sum(v) / len(v) for k, v in ce.items()}
    return dict(
        n_tokens=len(x),
        n_predictions=len(ce["clean"]),
        explained_variance=M.explained_variance(x, x_hat),
        explained_variance_zero=M.explained_variance(x, x_hat, "zero"),
        l0=per_token.double().mean().item(),
        l0_hist=torch.bincount(per_token, minlength=257),
        firing_counts=counts,
        dead_fraction=(counts == 0).double().mean().item(),
        dense_fraction=(counts / len(x) > 0.1).double().mean().item(),
        ce_clean=mean["clean"],
        ce_spliced=mean["spliced"],
        ce_zero_ablated=mean["zero_ablated"],
        delta_loss=mean["spliced"] - mean["clean"],
        ce_recovered=(mean["zero_ablated"] - mean["spliced"]) / (mean["zero_ablated"] - mean["clean"]),
        kl_spliced=sum(kl["spliced"]) / len(kl["spliced"]),
        kl_zero_ablated=sum(kl["zero_ablated"]) / len(kl["zero_ablated"]),
    )


def test_sae_stats_equals_brute_force(mini, sae, batches, hidden):
    model, _ = mini
    got = A.sae_stats(model, sae, batches, progress=False)
    with torch.no_grad():
        want = brute_force(model, sae, batches, hidden, LAYER)
    for name, value in want.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(getattr(got, name), value), name
        elif isinstance(value, int):
            assert getattr(got, name) == value, name
        else:
            assert getattr(got, name) == pytest.approx(value, rel=1e-6, abs=1e-9), name
    # The test SAE covers every case: dead, dense and sparse latents, a real loss increase.
    assert 0 < got.dead_fraction < 1 and 0 < got.dense_fraction < 1 and 0 < got.l0 < 256
    assert got.ce_clean < got.ce_spliced and got.ce_clean < got.ce_zero_ablated and got.kl_spliced > 0
    assert got.l0_hist.sum() == got.n_tokens and got.layer == LAYER
    assert set(got.row()) == set(want) - {"l0_hist", "firing_counts"} | {"layer", "dense_threshold"}


def test_sae_stats_bad_input(mini, sae):
    from sae_lens import JumpReLUSAE, JumpReLUSAEConfig

    model, _ = mini
    only_bos = [{"input_ids": torch.tensor([[2, 0, 0]]), "attention_mask": torch.tensor([[1, 0, 0]])}]
    with pytest.raises(ValueError, match="No tokens to measure"):
        A.sae_stats(model, sae, only_bos, progress=False)
    small = JumpReLUSAE(JumpReLUSAEConfig(d_in=64, d_sae=8))
    with pytest.raises(ValueError, match="does not say which layer it reads"):
        A.sae_stats(model, small, only_bos, progress=False)
    small.cfg.metadata.hook_name = hook_name(LAYER)
    with pytest.raises(ValueError, match="d_in is 64"):
        A.sae_stats(model, small, only_bos, progress=False)


def test_sae_stats_of_a_lossless_sae(mini, batches):
    """An SAE with latents +x_d and -x_d reconstructs x exactly: EV 1, no loss change, CE recovered 1."""
    from sae_lens import JumpReLUSAE, JumpReLUSAEConfig

    model, _ = mini
    sae = JumpReLUSAE(JumpReLUSAEConfig(d_in=640, d_sae=1280))
    sae.cfg.metadata.hook_name = hook_name(LAYER)
    eye = torch.eye(640)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye], 1))
        sae.W_dec.copy_(torch.cat([eye, -eye], 0))
    got = A.sae_stats(model, sae, batches[2:], progress=False)  # the left-padded batch
    assert got.explained_variance == 1.0 and got.explained_variance_zero == 1.0
    assert got.delta_loss == 0.0 and got.kl_spliced == 0.0 and got.ce_recovered == 1.0
    assert got.ce_zero_ablated > got.ce_clean + 0.1 and got.kl_zero_ablated > 0.1


def test_memory_report(mini, sae, batches):
    model, _ = mini
    acts = A.collect_resid(model, batches, [2, LAYER], progress=False)
    rep = A.memory_report(model, sae, {"activations": acts, "one tensor": torch.zeros(1024, 256)})
    mb = 2**20
    # Gemma-3-270m: 268,098,176 parameters in float32 (the tied embedding counted once) + tiny buffers.
    assert rep["model weights"] == pytest.approx(268_098_176 * 4 / mb, rel=1e-3)
    assert rep["SAE weights"] == (2 * 640 * 256 + 2 * 256 + 640) * 4 / mb
    assert rep["activations"] == pytest.approx(2 * acts.n_tokens * 640 * 4 / mb, rel=0.05)
    assert rep["one tensor"] == 1.0
    assert rep["process RSS"] > rep["model weights"]
    assert "model weights" in str(rep) and "MB" in str(rep)
    gone = A.memory_report(sae=torch.nn.Linear(4, 4).to("meta"))
    assert gone["SAE weights"] == 0
