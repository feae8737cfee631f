"""saehelpers.ablation on the mini model and its trained SAEs: exact edits, attribution vs finite differences, bad input.

Tolerances: residuals are compared with atol 1e-4 x their largest entry (float32 rounding of x + delta);
logits with atol 1e-3 (logits here are of order 10).
"""

import dataclasses

import pytest
import torch
from sae_lens import JumpReLUSAE, JumpReLUSAEConfig

import saehelpers
from saehelpers import ablation, hooks

LAYER = 6
ITEMS = [("The capital of Japan is", " Tokyo", " Beijing"), ("x = (a + b", ")", "]")]


@pytest.fixture(scope="module")
def rel():
    return saehelpers.get_release("mini")


@pytest.fixture(scope="module")
def sae():
    return saehelpers.load_sae(LAYER, "mini", dtype="float32")


@pytest.fixture(scope="module")
def task(mini):
    return ablation.make_task(mini[1], ITEMS)


@pytest.fixture(scope="module")
def clean(mini, prompt_ids):
    model, _ = mini
    ids, mask = prompt_ids
    with torch.no_grad(), hooks.capture(model, [LAYER]) as acts:
        logits = model(input_ids=ids, attention_mask=mask).logits
    return acts[LAYER], logits


def resid(model, ids, edit):
    """resid_post at LAYER under `edit` (the capture hook runs after the edit's, so it sees the edited value)."""
    with torch.no_grad(), edit, hooks.capture(model, [LAYER], stop=True) as acts:
        model(input_ids=ids)
    assert hooks.active_hooks(model) == 0
    return acts[LAYER]


def close(a, b, scale):
    torch.testing.assert_close(a, b, atol=1e-4 * scale, rtol=0)


# ---------------------------------------------------------------- the error term


def test_splice_with_error_term_gives_the_clean_logits(mini, prompt_ids, sae, clean):
    model, _ = mini
    ids, mask = prompt_ids
    with torch.no_grad(), ablation.splice(model, sae):
        kept = model(input_ids=ids, attention_mask=mask).logits
    with torch.no_grad(), ablation.splice(model, sae, keep_error=False):
        lost = model(input_ids=ids, attention_mask=mask).logits
    assert hooks.active_hooks(model) == 0
    torch.testing.assert_close(kept, clean[1], atol=1e-3, rtol=0)
    assert (lost - clean[1]).abs().max() > 0.1  # without it the SAE's error reaches the logits


def test_task_run_is_the_models_last_token_logits(mini, task):
    model, _ = mini
    with torch.no_grad():
        full = model(input_ids=task.input_ids, attention_mask=task.attention_mask).logits
        mine = task.run(model)
    torch.testing.assert_close(mine, full[torch.arange(len(ITEMS)), task.last], atol=1e-3, rtol=0)
    want = full[0, task.last[0], task.correct[0]] - full[0, task.last[0], task.wrong[0]]
    assert task.metric(mine, per_prompt=True)[0].item() == pytest.approx(want.item(), abs=1e-3)
    assert task.metric(mine).item() > 0  # the model gets both right


# ---------------------------------------------------------------- the edits are exact


def test_ablate_one_feature_removes_exactly_a_f_d_f_at_chosen_positions(mini, prompt_ids, sae, clean):
    model, _ = mini
    ids = prompt_ids[0]
    x = clean[0]
    a = sae.encode(x).detach()
    chosen = [3, 5]
    both = (a[0, chosen] > 0).all(0)  # features that fire at every chosen position
    assert both.any()
    f = int(torch.where(both, a[0, chosen].sum(0), -1.0).argmax())  # the strongest of them
    assert (a[0, chosen, f] > 0).all()
    new = resid(model, ids, ablation.ablate(model, sae, f, positions=chosen))
    want = x.clone()
    want[0, chosen] -= a[0, chosen, f, None] * sae.W_dec[f].detach()
    scale = x.abs().max().item()
    close(new, want, scale)
    others = [p for p in range(ids.shape[1]) if p not in chosen]
    assert torch.equal(new[0, others], x[0, others])  # untouched elsewhere, bit for bit


def test_ablate_set_zero_and_mean_and_without_error(mini, prompt_ids, sae, clean):
    model, _ = mini
    ids = prompt_ids[0]
    x = clean[0]
    a = sae.encode(x).detach()
    W = sae.W_dec.detach()
    feats = a[0, 1:].sum(0).topk(4).indices.tolist()
    means = torch.rand(sae.cfg.d_sae, generator=torch.Generator().manual_seed(0))
    scale = x.abs().max().item()

    zero = resid(model, ids, ablation.ablate(model, sae, feats))
    want = x - a[..., feats] @ W[feats]
    want[:, 0] = x[:, 0]  # BOS left alone by default
    close(zero, want, scale)

    mean = resid(model, ids, ablation.ablate(model, sae, feats, means=means))
    want = x + (means[feats] - a[..., feats]) @ W[feats]
    want[:, 0] = x[:, 0]
    close(mean, want, scale)

    lost = resid(model, ids, ablation.ablate(model, sae, feats, keep_error=False, include_bos=True))
    a0 = a.clone()
    a0[..., feats] = 0
    close(lost, sae.decode(a0).detach(), scale)


def test_ablate_group_and_outside_a_prefix(mini, prompt_ids, sae, clean, rel):
    model, _ = mini
    ids = prompt_ids[0]
    x = clean[0]
    a = sae.encode(x).detach()
    W = sae.W_dec.detach()
    scale = x.abs().max().item()
    start, end = rel.groups[1]
    got = resid(model, ids, ablation.ablate_group(model, sae, rel, 1, include_bos=True))
    close(got, x - a[..., start:end] @ W[start:end], scale)

    w = rel.matryoshka_widths[2]
    got = resid(model, ids, ablation.ablate_outside(model, sae, rel, w, include_bos=True))
    close(got, x - a[..., w:] @ W[w:], scale)
    # Nothing outside the full width: the error term kept gives x, dropping it the SAE's reconstruction.
    full = rel.d_sae
    assert torch.equal(resid(model, ids, ablation.ablate_outside(model, sae, rel, full, include_bos=True)), x)
    lost = resid(
        model, ids, ablation.ablate_outside(model, sae, rel, full, keep_error=False, include_bos=True)
    )
    close(lost, sae(x).detach(), scale)


# ---------------------------------------------------------------- attribution


def scaled_metric(model, task, b, t, delta, eps):
    """The metric with eps * delta added to resid_post at prompt b, token t (t=None: every non-BOS token)."""

    def push(x):
        x = x.clone()
        if t is None:
            x[:, 1:] += eps * delta[:, 1:]
        else:
            x[b, t] += eps * delta
        return x

    with torch.no_grad(), hooks.replace(model, LAYER, push):
        return task.metric(task.run(model)).item()


def test_attribution_matches_finite_differences(mini, sae, task):
    """d metric / d eps of x + eps (0 - a_f) d_f, by central differences, equals the attribution estimate."""
    model, tok = mini
    table = ablation.attribute(model, sae, task, tokenizer=tok)
    assert hooks.active_hooks(model) == 0
    with torch.no_grad(), hooks.capture(model, [LAYER]) as acts:
        task.run(model)
    x = acts[LAYER]
    a = sae.encode(x).detach()
    W = sae.W_dec.detach()
    eps = 0.05
    for _, r in table.head(4).iterrows():  # the four largest single-token estimates
        b, t, f = int(r.row), int(r.position), int(r.feature)
        assert r.activation == pytest.approx(a[b, t, f].item(), rel=1e-5)
        assert r.token == tok.decode([int(task.input_ids[b, t])])
        delta = -a[b, t, f] * W[f]
        fd = (
            scaled_metric(model, task, b, t, delta, eps) - scaled_metric(model, task, b, t, delta, -eps)
        ) / (2 * eps)
        assert r.estimate == pytest.approx(fd, rel=0.03, abs=2e-3)

    # Summed over tokens: ablating feature f everywhere (but BOS and padding), to first order.
    f = int(table.groupby("feature")["estimate"].sum().abs().idxmax())
    delta = -a[..., f, None] * W[f] * task.attention_mask[..., None]
    fd = (
        scaled_metric(model, task, 0, None, delta, eps) - scaled_metric(model, task, 0, None, delta, -eps)
    ) / (2 * eps)
    assert table[table.feature == f].estimate.sum() == pytest.approx(fd, rel=0.03, abs=2e-3)
    assert table.attrs["metric"] == pytest.approx(task.metric(task.run(model)).item(), abs=1e-4)


def test_attribution_ranks_true_ablations_at_a_late_layer(mini, rel, task):
    """At the last SAE layer, the estimate ranks the top features' true (full) ablation effects well."""
    model, _ = mini
    layer = rel.layers[-1]
    sae = saehelpers.load_sae(layer, "mini", dtype="float32")
    per = ablation.attribute(model, sae, task).groupby("feature")["estimate"].sum()
    top = per.abs().sort_values(ascending=False).index[:8].tolist()
    true = ablation.true_effects(model, sae, task, top, progress=False)
    assert list(true.index) == top
    rho = per[top].rank().corr(true["effect"].rank())  # Spearman's rank correlation
    assert rho > 0.6, rho
    # true_effects is the metric under `ablate`, minus the clean metric
    with torch.no_grad(), ablation.ablate(model, sae, top[0]):
        ablated = task.metric(task.run(model)).item()
    assert true["effect"].iloc[0] == pytest.approx(ablated - true.attrs["metric"], abs=1e-4)


def test_mean_attribution_counts_inactive_features(mini, sae, task):
    model, _ = mini
    means = torch.full((sae.cfg.d_sae,), 0.5)
    table = ablation.attribute(model, sae, task, means=means, positions=[1])
    n_real = int((task.attention_mask[:, 1] == 1).sum())
    assert len(table) == n_real * sae.cfg.d_sae  # every feature differs from its mean somewhere
    assert set(table.position) == {1}


def test_token_changes(mini):
    _, tok = mini
    clean = torch.zeros(1000)
    clean[7] = 8.0  # the likely token
    new = clean.clone()
    new[7], new[100], new[200] = 6.0, 5.0, -5.0
    p0, p1 = torch.softmax(clean.double(), -1), torch.softmax(new.double(), -1)
    by_prob = ablation.token_changes(tok, clean, new, n=2)
    assert tok.decode([100]) == by_prob.token.iloc[0] and tok.decode([7]) == by_prob.token.iloc[-1]
    assert by_prob.change.iloc[-1] == pytest.approx((p1[7] - p0[7]).item())
    assert by_prob.new_prob.iloc[0] == pytest.approx(p1[100].item())
    by_lp = ablation.token_changes(tok, clean, new, n=2, by="logprob")
    lp = p1.log() - p0.log()
    assert by_lp.token.iloc[-1] == tok.decode([200]) and by_lp.change.iloc[-1] == pytest.approx(
        lp[200].item()
    )
    assert by_lp.change.iloc[0] == pytest.approx(lp[100].item())


# ---------------------------------------------------------------- bad input, clean-up


def test_bad_input_gives_clear_errors_and_leaves_the_model_clean(mini, prompt_ids, sae, rel, task):
    model, tok = mini
    ids = prompt_ids[0]
    other = dataclasses.replace(rel, d_sae=64, matryoshka_widths=(4, 16, 64))  # a layout of another SAE
    far = JumpReLUSAE(JumpReLUSAEConfig(d_in=640, d_sae=8))  # an SAE for a layer this model does not have
    far.cfg.metadata.hook_name = "blocks.30.hook_resid_post"
    cases = [
        (lambda: ablation.ablate(model, sae, []), "No features given"),
        (lambda: ablation.ablate(model, sae, [3, 2048]), r"0\.\.2047"),
        (lambda: ablation.ablate(model, sae, -1), "out of range"),
        (lambda: ablation.ablate(model, sae, 1.5), "must be an int"),
        (
            lambda: ablation.ablate(model, far, 3),
            r"reads 'blocks\.30\.hook_resid_post', but the model has only 18",
        ),
        (lambda: ablation.ablate(model, sae, 3, means=torch.zeros(5)), "shape \\(2048,\\)"),
        (lambda: ablation.ablate(model, sae, 3, positions=[-1]), "positions must be"),
        (
            lambda: ablation.ablate_outside(model, sae, rel, 100),
            r"Valid widths: \[8, 32, 128, 512, 2048\]",
        ),
        (lambda: ablation.ablate_group(model, sae, rel, 5), r"group must be an int in 0\.\.4"),
        (lambda: ablation.ablate_group(model, sae, other, 0), "The SAE has 2048 latents but"),
        (lambda: ablation.make_task(tok, [("a", " Tokyo Tower", " b")]), "must be one token"),
        (lambda: ablation.make_task(tok, []), "at least one"),
        (lambda: ablation.attribute(model, sae, task, positions=[99]), "beyond the sequence"),
        (lambda: ablation.true_effects(model, sae, task, [], progress=False), "No features given"),
        (lambda: ablation.attribute(model, sae, task, metric=lambda lg: lg.sum(-1)), "scalar tensor"),
        (
            lambda: ablation.token_changes(tok, torch.zeros(5), torch.zeros(5), by="nats"),
            "'prob' or 'logprob'",
        ),
    ]
    for make, message in cases:
        with pytest.raises(ValueError, match=message):
            with make():  # a context manager, or a call that fails first
                pass
        assert hooks.active_hooks(model) == 0

    # A position beyond the input is found in the forward pass, inside the block: still clean after.
    with pytest.raises(ValueError, match=r"beyond the sequence: this input has positions 0\.\.\d+"):
        with ablation.ablate(model, sae, 3, positions=[ids.shape[1] + 4]):
            model(input_ids=ids)
    assert hooks.active_hooks(model) == 0
    # Any exception in the block removes the hook.
    with pytest.raises(RuntimeError):
        with ablation.ablate(model, sae, 3), ablation.splice(model, sae):
            assert hooks.active_hooks(model) == 4  # per edit: its layer's hook and the BOS-id reader
            raise RuntimeError("boom")
    assert hooks.active_hooks(model) == 0
