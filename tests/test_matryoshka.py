from dataclasses import replace

import pandas as pd
import pytest
import torch
from sae_lens import JumpReLUSAE, JumpReLUSAEConfig
from sae_lens.evals import ExplainedVarianceCalculator

from saehelpers import display, get_release
from saehelpers import matryoshka as mt

# Incremental prefix decodes vs sae.decode on masked activations (float32): the only difference is
# the order of the float additions, so the max abs error must stay below REL_TOL * max |reference|.
REL_TOL = 1e-5


def make_sae(d_in, d_sae, seed=0, norm="none", dtype="float32", layer=6):
    torch.manual_seed(seed)
    cfg = JumpReLUSAEConfig(d_in=d_in, d_sae=d_sae, dtype=dtype, device="cpu", normalize_activations=norm)
    cfg.metadata.hook_name = f"blocks.{layer}.hook_resid_post"
    sae = JumpReLUSAE(cfg)
    sae.requires_grad_(False)
    sae.b_dec.normal_(0, 0.1)
    sae.b_enc.normal_(0, 0.01)
    return sae


def random_acts_input(sae, shape, per_token=40, seed=1):
    """Random inputs, and a threshold set so that about `per_token` latents fire per token."""
    torch.manual_seed(seed)
    x = torch.randn(*shape, sae.cfg.d_in) * 2 + 0.5
    pre = (sae.process_sae_in(x) @ sae.W_enc + sae.b_enc).float().flatten()
    sae.threshold.fill_(pre.kthvalue(pre.numel() - per_token * x[..., 0].numel()).values.item())
    return x


def max_rel_err(sae, rel, x):
    """Largest error of the incremental prefixes against masked sae.decode, over all widths."""
    ours = mt.prefix_decode(sae, rel, sae.encode(x))
    assert list(ours) == list(rel.matryoshka_widths)
    worst = 0.0
    for w, recon in ours.items():
        acts = sae.encode(x)  # a fresh encode each time: normalising SAEs use up their norm state in decode
        acts[..., w:] = 0
        ref = sae.decode(acts)
        assert recon.shape == ref.shape == x.shape and recon.dtype == ref.dtype
        worst = max(worst, ((recon.float() - ref.float()).abs().max() / ref.float().abs().max()).item())
    return worst


@pytest.fixture(scope="module")
def real_sae():
    rel = get_release("gemma-3-1b")
    return rel, make_sae(rel.d_model, rel.d_sae)  # the real shape, random weights (~300 MB)


def test_prefix_decode_real_layout_equals_masked_decode(real_sae):
    rel, sae = real_sae
    x = random_acts_input(sae, (64,), per_token=40)
    l0 = (sae.encode(x) != 0).sum(-1).float().mean().item()
    assert 20 < l0 < 80  # a realistic sparsity pattern
    err = max_rel_err(sae, rel, x)
    print(f"real layout: max rel err {err:.2e}")
    assert err < REL_TOL


@pytest.mark.parametrize("norm", ["none", "layer_norm", "constant_norm_rescale"])
def test_prefix_decode_mini_layout_equals_masked_decode(norm):
    rel = get_release("mini")
    sae = make_sae(rel.d_model, rel.d_sae, seed=2, norm=norm)
    x = random_acts_input(sae, (4, 16), per_token=rel.k)  # (batch, seq, d_in) works too
    err = max_rel_err(sae, rel, x)
    print(f"mini layout, {norm}: max rel err {err:.2e}")
    assert err < REL_TOL


def test_prefix_decode_keeps_dtype_and_subset_of_widths():
    rel = get_release("mini")
    sae = make_sae(rel.d_model, rel.d_sae, seed=3, dtype="bfloat16")
    x = random_acts_input(sae, (32,), per_token=rel.k)
    w = rel.matryoshka_widths[1]
    out = mt.prefix_decode(sae, rel, sae.encode(x), widths=[rel.d_sae, w])
    assert list(out) == [w, rel.d_sae] and out[w].dtype == torch.bfloat16
    acts = sae.encode(x)
    acts[:, w:] = 0
    torch.testing.assert_close(out[w], sae.decode(acts), rtol=2e-2, atol=2e-2)  # bfloat16 rounding


def orthonormal_sae(rel, seed=0):
    """An SAE whose encode recovers exact sparse codes: orthonormal decoder rows, W_enc = W_dec.T."""
    g = torch.Generator().manual_seed(seed)
    sae = make_sae(rel.d_model, rel.d_sae)
    q = torch.linalg.qr(torch.randn(rel.d_model, rel.d_model, generator=g))[0]
    sae.W_dec.copy_(q[: rel.d_sae])
    sae.W_enc.copy_(sae.W_dec.T)
    sae.b_enc.zero_()
    sae.threshold.fill_(0.1)  # codes are >= 0.5; float noise on the zeros stays below it
    n = 3000
    on = torch.rand(n, rel.d_sae, generator=g) < 0.1
    codes = on * (0.5 + 1.5 * torch.rand(n, rel.d_sae, generator=g))
    x = codes @ sae.W_dec + sae.b_dec
    torch.testing.assert_close(sae.encode(x), codes, atol=1e-5, rtol=0)
    return sae, codes, x


def test_prefix_metrics_monotone_and_exact_on_synthetic_codes():
    rel = replace(get_release("gemma-3-1b"), d_model=64, d_sae=64, matryoshka_widths=(4, 16, 64))
    sae, codes, x = orthonormal_sae(rel)
    table = mt.prefix_metrics(sae, rel, x, batch_size=1000)
    assert table.width.tolist() == [4, 16, 64] and table.group.tolist() == [0, 1, 2]
    for col in ("ev_zero", "ev_mean", "l0"):
        assert table[col].is_monotonic_increasing, col
    assert table.mse.is_monotonic_decreasing
    assert table.ev_zero.iloc[-1] == pytest.approx(1, abs=1e-5)
    # Values against a direct computation from the known codes.
    for _, row in table.iterrows():
        w = int(row.width)
        err = (codes[:, w:] @ sae.W_dec[w:]).double()
        sse = err.pow(2).sum().item()
        x64 = x.double()
        assert row.ev_zero == pytest.approx(1 - sse / x64.pow(2).sum().item(), abs=1e-5)
        assert row.ev_mean == pytest.approx(1 - sse / (x64 - x64.mean(0)).pow(2).sum().item(), abs=1e-5)
        assert row.mse == pytest.approx(sse / len(x), rel=1e-4, abs=1e-6)
        assert row.l0 == pytest.approx((codes[:, :w] != 0).sum(-1).float().mean().item())
    # ev_mean is SAELens's current formula; streaming batches gives the same table.
    calc = ExplainedVarianceCalculator()
    calc.add_batch(sae_output=sae.decode(sae.encode(x)), hidden_acts=x)
    assert table.ev_mean.iloc[-1] == pytest.approx(calc.compute(), abs=1e-6)
    streamed = mt.prefix_metrics(sae, rel, iter(x.split(700)), widths=[16, 4])
    assert streamed.width.tolist() == [4, 16]
    assert streamed.ev_mean.tolist() == pytest.approx(table.ev_mean[:2].tolist(), abs=1e-6)


def planted_hierarchy(seed=0, n=6000):
    """d_in 64, widths 4/16/64: 4 parents, each with 5 planted children (3 in group 1, 2 in group 2),
    children's decoder rows = parent row + a small orthogonal part, firing only when the parent fires.
    Decoys: high cosine but independent firing (24-27), firing only with a parent but pointing
    elsewhere (28-31), and random latents (32-63)."""
    g = torch.Generator().manual_seed(seed)
    rel = replace(get_release("gemma-3-1b"), d_model=64, d_sae=64, matryoshka_widths=(4, 16, 64))
    basis = torch.linalg.qr(torch.randn(64, 64, generator=g))[0]
    W = torch.randn(64, 64, generator=g)
    rand = torch.rand(n, 64, generator=g)
    on = rand < 0.05
    planted = {p: [4 + 3 * p, 5 + 3 * p, 6 + 3 * p, 16 + 2 * p, 17 + 2 * p] for p in range(4)}
    for p, kids in planted.items():
        W[p] = basis[p]
        on[:, p] = rand[:, p] < 0.25
        for j, c in enumerate(kids):
            W[c] = basis[p] + 0.3 * basis[8 + 5 * p + j]
            on[:, c] = on[:, p] & (rand[:, c] < 0.3)
        W[24 + p] = basis[p] + 0.3 * basis[40 + p]  # close direction, unrelated firing
        on[:, 28 + p] = on[:, p] & (rand[:, 28 + p] < 0.3)
        W[28 + p] = basis[50 + p]  # fires inside the parent, unrelated direction
    sae = make_sae(64, 64)
    sae.W_dec.copy_(W)
    acts = on * (0.5 + torch.rand(n, 64, generator=g))
    return sae, rel, acts, planted


def test_hierarchy_recovers_planted_children():
    sae, rel, acts, planted = planted_hierarchy()
    table = mt.hierarchy(sae, rel, acts, top_k=5)  # parents=None: the whole first group
    assert sorted(table.parent.unique().tolist()) == [0, 1, 2, 3]
    for p, kids in planted.items():
        assert sorted(table[table.parent == p].child.tolist()) == kids
    assert (table.p_parent_given_child == 1).all()
    assert table.child_group.tolist() == [rel.group_of(c) for c in table.child]
    assert table.cosine.min() > 0.9

    one = mt.parent_children(sae, rel, acts, 2)
    assert list(one.columns) == mt.HIERARCHY_COLUMNS[2:]
    assert sorted(one.child.tolist()) == planted[2] and one.score.is_monotonic_decreasing
    c = planted[2][0]
    on = acts != 0
    row = one.set_index("child").loc[c]
    assert row.child_freq == pytest.approx(on[:, c].float().mean().item())
    assert row.p_child_given_parent == pytest.approx(
        (on[:, c] & on[:, 2]).sum().item() / on[:, 2].sum().item()
    )
    # Streaming batches counts the same.
    streamed = mt.parent_children(sae, rel, iter(acts.split(1000)), 2)
    assert streamed.equals(one)


def test_encode_batches_gives_the_same_hierarchy_a_batch_at_a_time():
    sae, rel, acts, _ = planted_hierarchy()
    sae.threshold.fill_(0.5)
    x = torch.randn(700, 64, generator=torch.Generator().manual_seed(3))
    whole = mt.hierarchy(sae, rel, sae.encode(x), top_k=5, min_cosine=-1, min_p_parent=0)
    assert len(whole) > 0
    batches = mt.encode_batches(sae, x, batch_size=128)
    assert torch.is_grad_enabled()  # the batches run without autograd, and leave it as it was
    first = next(batches)
    assert first.shape == (128, 64) and not first.requires_grad and torch.is_grad_enabled()
    whole_again = mt.hierarchy(sae, rel, mt.encode_batches(sae, x.reshape(7, 100, 64), batch_size=128), top_k=5,
                               min_cosine=-1, min_p_parent=0)  # fmt: skip
    pd.testing.assert_frame_equal(whole_again, whole)
    with pytest.raises(ValueError, match=r"x must be SAE inputs of shape \(\.\.\., 64\).*got \(700, 32\)"):
        mt.encode_batches(sae, x[:, :32])
    with pytest.raises(ValueError, match="batch_size must be an int >= 1"):
        mt.encode_batches(sae, x, batch_size=0)


def test_hierarchy_thresholds_are_what_filter_the_decoys():
    sae, rel, acts, planted = planted_hierarchy()
    # Without the firing criterion the close-but-unrelated decoy (24) comes in ...
    loose = mt.parent_children(sae, rel, acts, 0, min_p_parent=0, top_k=64)
    assert 24 in loose.child.tolist()
    assert loose.set_index("child").loc[24].p_parent_given_child < 0.5
    # ... and without the cosine criterion, the latent that only co-fires (28) does.
    by_firing = mt.parent_children(sae, rel, acts, 0, min_cosine=-1, sort_by="p_parent_given_child", top_k=6)
    assert sorted(by_firing.child.tolist()) == sorted(planted[0] + [28])


def test_layout_helpers():
    for preset in ("gemma-3-1b", "mini"):
        rel = get_release(preset)
        assert mt.groups(rel) == rel.groups
        gid = mt.latent_groups(rel)
        assert gid.shape == (rel.d_sae,)
        for i, (start, end) in enumerate(rel.groups):
            assert mt.group_of(rel, start) == mt.group_of(rel, end - 1) == i
            assert (gid[start:end] == i).all()
    rel = get_release("gemma-3-1b")
    assert mt.check_widths(rel) == (128, 512, 2048, 8192, 32768)
    assert mt.check_widths(rel, [2048, 128, 128]) == (128, 2048)
    assert mt.check_width(rel, 100, strict=False) == 100


VALID = r"Valid widths: \[128, 512, 2048, 8192, 32768\]"


@pytest.mark.parametrize("bad", [100, 0, -128, 65536, 128.0, "128", True])
def test_bad_width_lists_valid_widths(bad):
    rel = get_release("gemma-3-1b")
    with pytest.raises(ValueError, match=VALID):
        mt.check_width(rel, bad)


def test_bad_input_errors(real_sae):
    rel, sae = real_sae
    acts = torch.zeros(2, rel.d_sae)
    with pytest.raises(ValueError, match="not a Matryoshka group boundary.*" + VALID):
        mt.prefix_decode(sae, rel, acts, widths=[128, 1000])
    with pytest.raises(ValueError, match="No prefix widths given.*" + VALID):
        mt.prefix_decode(sae, rel, acts, widths=[])
    with pytest.raises(ValueError, match="out of range.*" + VALID):
        mt.prefix_metrics(sae, rel, torch.zeros(2, rel.d_model), widths=[0])
    with pytest.raises(ValueError, match="No activations given"):
        mt.prefix_metrics(sae, rel, torch.zeros(0, rel.d_model))
    mini = get_release("mini")
    with pytest.raises(ValueError, match="get_release\\('mini'\\)"):
        mt.prefix_decode(sae, mini, acts)  # a real-shaped SAE with the mini layout
    with pytest.raises(ValueError, match="last dimension 512"):
        mt.prefix_decode(sae, rel, acts[:, :512])
    with pytest.raises(ValueError, match=r"last group .* Parents must be in 0\.\.8191"):
        mt.parent_children(sae, rel, acts, 9000)
    with pytest.raises(ValueError, match="out of range"):
        mt.group_of(rel, rel.d_sae)
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 32768\)"):
        mt.hierarchy(sae, rel, torch.zeros(4, 2048), [0])
    with pytest.raises(ValueError, match="sort_by"):
        mt.hierarchy(sae, rel, acts, [0], sort_by="freq")


# ---------------------------------------------------------------- trees, prefix loss, mini layers


def test_tree_text_and_drawing():
    import matplotlib

    matplotlib.use("Agg")
    sae, rel, acts, planted = planted_hierarchy()
    table = mt.hierarchy(sae, rel, acts, top_k=5)
    text = display.tree_text(table, 0, {0: "parent zero\nline two"})
    assert text.splitlines()[0] == "parent zero | line two"
    assert [int(line.split("└─ ")[1].split()[0]) for line in text.splitlines()[1:]] == table[
        table.parent == 0
    ].child.tolist()
    assert "P(parent|child) 1.00" in text
    ax = display.draw_tree(table, 0)
    assert len(ax.lines) == len(planted[0])  # one edge per child
    assert "no children" in display.tree_text(table.iloc[:0], 0)


@pytest.fixture(scope="module")
def mini_model():
    import saehelpers

    return saehelpers.load_model("mini", dtype="float32")


def test_ev_monotone_over_prefixes_on_every_mini_layer(mini_model):
    import saehelpers
    from saehelpers.activations import collect_resid
    from saehelpers.text import token_batches

    model, tok = mini_model
    rel = get_release("mini")
    acts = collect_resid(model, token_batches(tok, "mini", 4, 64, n_batches=2), rel.layers, progress=False)
    for layer in rel.layers:
        table = mt.prefix_metrics(saehelpers.load_sae(layer, "mini", dtype="float32"), rel, acts.acts[layer])
        assert table.width.tolist() == list(rel.matryoshka_widths)
        for col in ("ev_mean", "ev_zero", "l0"):
            assert table[col].is_monotonic_increasing, (layer, col, table[col].tolist())
        assert table.ev_mean.iloc[-1] > 0.5, layer


def test_prefix_loss_full_width_matches_a_plain_splice(mini_model):
    import saehelpers
    from saehelpers import hooks, metrics
    from saehelpers.text import token_batches

    model, tok = mini_model
    rel = get_release("mini")
    layer = rel.layers[0]
    sae = saehelpers.load_sae(layer, "mini", dtype="float32")
    batch = next(token_batches(tok, "mini", 2, 32, n_batches=1))
    table = mt.prefix_loss(model, sae, rel, [batch], progress=False)
    assert table.width.tolist() == list(rel.matryoshka_widths)
    # The widest prefix is the whole SAE: the same loss as splicing encode/decode at all tokens but BOS.
    ids, mask = batch["input_ids"], batch["attention_mask"]
    keep = metrics.token_mask(ids, mask, model.config.bos_token_id)
    recon = lambda h: torch.where(keep[..., None], sae.decode(sae.encode(h)), h)  # noqa: E731
    with hooks.replace(model, layer, recon):
        logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
    assert table.ce.iloc[-1] == pytest.approx(metrics.ce_loss(logits, ids, keep), abs=1e-4)
    assert table.delta_loss.tolist() == pytest.approx((table.ce - table.ce_clean).tolist(), abs=1e-9)
    assert table.kl.iloc[0] > table.kl.iloc[-1] >= 0  # the smallest prefix distorts the predictions most
    with pytest.raises(ValueError, match="No prefix widths given"):
        mt.prefix_loss(model, sae, rel, [batch], widths=[])


def test_prefix_loss_passes_strict_on(mini_model):
    import saehelpers
    from saehelpers.text import token_batches

    model, tok = mini_model
    rel = get_release("mini")
    sae = saehelpers.load_sae(rel.layers[0], "mini", dtype="float32")
    batch = next(token_batches(tok, "mini", 2, 32, n_batches=1))
    odd = rel.matryoshka_widths[0] + 1  # not a group boundary
    with pytest.raises(ValueError, match="not a Matryoshka group boundary"):
        mt.prefix_loss(model, sae, rel, [batch], widths=[odd], progress=False)
    table = mt.prefix_loss(model, sae, rel, [batch], widths=[odd, rel.d_sae], strict=False, progress=False)
    assert table.width.tolist() == [odd, rel.d_sae]
    assert (table.kl >= 0).all() and table.ce.notna().all()


def test_prefix_loss_refuses_an_sae_from_another_layer(mini):
    import saehelpers
    from saehelpers.text import token_batches

    model, tok = mini
    rel = get_release("mini")
    sae = saehelpers.load_sae(rel.layers[0], "mini")
    batches = token_batches(tok, "mini", batch_size=1, seq_len=8, n_batches=1)
    with pytest.raises(ValueError, match=str(rel.layers[0])):
        mt.prefix_loss(model, sae, rel, rel.layers[1], batches, progress=False)
