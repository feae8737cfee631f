"""The notebooks' sentences about numbers, checked on the mini preset with the same helpers the cells use.

Each test computes the figure a sentence talks about and asserts its direction, so a rebuild of the
mini SAEs that breaks a lesson's claim fails here.
"""

import pytest
import torch

import saehelpers
from saehelpers import cards, get_release, hooks, lm, matryoshka
from saehelpers.metrics import explained_variance

SENTENCE = "The Eiffel Tower is in Paris, and the Colosseum is in Rome."  # notebook 00's


def test_00_prefix_ev_rises_with_every_group_and_about_zero_stays_positive(mini):
    """00: "Explained variance rises with every group"; "about="zero" ... stays positive"."""
    model, tok = mini
    rel = get_release("mini")
    layer = rel.layers[len(rel.layers) // 2]
    sae = saehelpers.load_sae(layer, "mini")
    ids = tok(SENTENCE, return_tensors="pt").input_ids
    x = hooks.resid_post(model, ids, [layer])[layer][0, 1:]
    table = matryoshka.prefix_metrics(sae, rel, x.to(sae.dtype))
    assert table.ev_mean.is_monotonic_increasing and table.ev_mean.diff().iloc[1:].gt(0).all()
    assert (table.ev_zero > 0).all()
    # The cell's own way (mask latents >= w, sae.decode) gives the same numbers.
    with torch.no_grad():
        f = sae.encode(x.to(sae.dtype))
        for w, want in zip(rel.matryoshka_widths, table.ev_mean):
            f_w = f.clone()
            f_w[:, w:] = 0
            assert abs(explained_variance(x, sae.decode(f_w), about="mean") - want) < 0.02


# ---------------------------------------------------------------- 01: loading every layer


def _heldout(tok, n_batches=1, batch_size=2, seq_len=48):
    from saehelpers.text import token_batches

    return list(
        token_batches(
            tok, "mini", batch_size=batch_size, seq_len=seq_len, n_batches=n_batches, split="heldout"
        )
    )


def _kept_resid(model, tok, batch, layers):
    ids, mask = batch["input_ids"], batch["attention_mask"]
    keep = saehelpers.metrics.token_mask(ids, mask, tok.bos_token_id)
    acts = hooks.resid_post(model, ids, list(layers), mask)
    return {layer: acts[layer][keep] for layer in layers}


def test_01_one_shared_threshold_and_l0_counts_preacts_above_it(mini):
    """01: "one threshold θ, shared by every latent"; "L0 = pre-activations above θ"; "k is an average, not a cap"."""
    model, tok = mini
    rel = get_release("mini")
    ids = tok(SENTENCE, return_tensors="pt").input_ids
    acts = hooks.resid_post(model, ids, list(rel.layers))
    l0s = []
    for layer in rel.layers:
        sae = saehelpers.load_sae(layer, "mini")
        assert sae.threshold.unique().numel() == 1
        x = acts[layer][0, 1:].to(sae.dtype)
        with torch.no_grad():
            pre = (x - sae.b_dec) @ sae.W_enc + sae.b_enc
            l0 = (pre > sae.threshold[0]).sum(-1)
            assert torch.equal(l0, (sae.encode(x) != 0).sum(-1))
        l0s.append(l0)
    l0 = torch.cat(l0s)
    assert l0.min() < rel.k < l0.max()


def test_01_decoder_rows_are_not_unit_norm_and_grow_with_the_residual_scale(mini):
    """01: the mini SAEs' decoder rows "are far from norm 1"; they "carry the residual stream's scale"."""
    model, tok = mini
    rel = get_release("mini")
    ids = tok(SENTENCE, return_tensors="pt").input_ids
    acts = hooks.resid_post(model, ids, list(rel.layers))
    dec, resid = [], []
    for layer in rel.layers:
        norms = saehelpers.load_sae(layer, "mini").W_dec.float().norm(dim=-1)
        assert norms.min() > 2 and norms.max() > 2 * norms.min()  # far from 1, and not flat
        dec.append(norms.median().item())
        resid.append(acts[layer][0, 1:].float().norm(dim=-1).median().item())
    assert dec == sorted(dec) and resid == sorted(resid)


def test_01_ev_best_at_first_layer_and_delta_loss_does_not_follow_it(mini):
    """01: EV "highest at the first SAE layer, every later one keeps less"; delta loss need not mirror EV: the
    first layer, with the best EV, is "among the two costliest to splice in, at more than twice the cost of layer 6,
    the cheapest"; CE recovered high at every layer while delta loss is positive at every layer and large at some;
    about-zero EV above about-the-mean EV."""
    from saehelpers.metrics import EVAccumulator, ce_loss_recovered

    model, tok = mini
    rel = get_release("mini")
    (batch,) = _heldout(tok)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    keep = saehelpers.metrics.token_mask(ids, mask, tok.bos_token_id)
    k3 = keep.unsqueeze(-1)
    with hooks.capture(model, list(rel.layers)) as cap:
        clean = lm.final_hidden(model, ids, mask)
    ev, delta, recovered = {}, {}, {}
    for layer in rel.layers:
        sae = saehelpers.load_sae(layer, "mini")
        x = cap[layer][keep]
        acc = EVAccumulator()
        with torch.no_grad():
            acc.add(x, sae.decode(sae.encode(x.to(sae.dtype))))
        ev[layer] = acc.value("mean")
        assert acc.value("zero") > ev[layer]

        def recon(h, k=k3, sae=sae):
            return torch.where(k, sae.decode(sae.encode(h.to(sae.dtype))).to(h.dtype), h)

        others = {}
        for name, fn in {"spliced": recon, "zero": lambda h, k=k3: h.masked_fill(k, 0.0)}.items():
            with hooks.replace(model, layer, fn):
                others[name] = lm.final_hidden(model, ids, mask)
        ce_clean, ce, _ = lm.next_token_losses(model, ids, keep, clean, others)
        c, s, z = ce_clean.mean().item(), ce["spliced"].mean().item(), ce["zero"].mean().item()
        delta[layer], recovered[layer] = s - c, ce_loss_recovered(c, s, z)
    first = rel.layers[0]
    assert all(ev[first] > ev[layer] for layer in rel.layers[1:])
    cheapest = min(delta, key=delta.get)
    assert cheapest == rel.layers[1] and delta[first] > 2 * delta[cheapest], delta  # layer 6 on mini
    assert delta[first] >= sorted(delta.values())[-2]  # among the two costliest
    assert all(recovered[layer] > 0.9 and delta[layer] > 0 for layer in rel.layers), (recovered, delta)
    assert max(delta.values()) > 0.5


def test_01_card_ev_falls_at_every_step_from_the_middle_layers():
    """01: on the real release the card's EV "falls at every step from the middle layers to the last"."""
    from saehelpers.release import CARD_EXPLAINED_VARIANCE as card

    tail = card[len(card) // 2 :]
    assert all(a > b for a, b in zip(tail, tail[1:]))


def test_01_sweep_sample_ev_in_depth_order_l0_far_around_k_and_busy_tokens_not_costlier(mini):
    """01, on the sweep's sample: EV keeps less at every later layer, "in order of depth"; L0 on a token runs
    "from a handful up to about three times k"; the loss of the prediction made at a token does not rise with its L0
    (rank correlation at most about zero at every layer), "though at some layers the tokens that were themselves hard
    to predict do use more latents"."""
    import pandas as pd

    model, tok = mini
    rel = get_release("mini")
    batches = _heldout(tok, n_batches=2, batch_size=4, seq_len=64)  # the notebook's sample
    ev, l0s, rho_at, rho_of = {}, [], {}, {}
    for layer in rel.layers:
        sae = saehelpers.load_sae(layer, "mini")
        # at: (L0 at t, loss of the prediction made at t); of: (L0 at t, loss of predicting t)
        xs, at, of = [], [], []
        for batch in batches:
            ids, mask = batch["input_ids"], batch["attention_mask"]
            keep = saehelpers.metrics.token_mask(ids, mask, tok.bos_token_id)
            with torch.no_grad(), hooks.capture(model, [layer]) as cap:
                logits = model(input_ids=ids, attention_mask=mask).logits.float()
                l0 = (sae.encode(cap[layer]) != 0).sum(-1).float()
            nll = torch.nn.functional.cross_entropy(logits[:, :-1].mT, ids[:, 1:], reduction="none")
            pair = keep[:, :-1] & keep[:, 1:]
            at.append(torch.stack([l0[:, :-1][pair], nll[pair]], 1))
            of.append(torch.stack([l0[:, 1:][pair], nll[pair]], 1))
            xs.append(cap[layer][keep])
            l0s.append(l0[keep])
        x = torch.cat(xs)
        with torch.no_grad():
            ev[layer] = explained_variance(x, sae.decode(sae.encode(x)))
        for rho, pairs in ((rho_at, at), (rho_of, of)):
            v = pd.DataFrame(torch.cat(pairs).numpy())
            rho[layer] = v[0].corr(v[1], method="spearman")
    evs = [ev[layer] for layer in rel.layers]
    assert evs == sorted(evs, reverse=True) and len(set(evs)) == len(evs)
    l0 = torch.cat(l0s)
    assert l0.min() <= rel.k / 4 and 2.5 * rel.k < l0.max() < 3.5 * rel.k
    assert all(r < 0.05 for r in rho_at.values()), rho_at
    assert max(rho_of.values()) > 0.3, rho_of


def test_01_dead_fraction_falls_with_more_tokens_and_two_samples_disagree(mini):
    """01: "dead" means "did not fire on these tokens": it falls as the sample grows; two samples of the
    notebook's size "already disagree in the second decimal" of EV."""
    model, tok = mini
    rel = get_release("mini")
    layer = rel.layers[len(rel.layers) // 2]
    sae = saehelpers.load_sae(layer, "mini")
    fired, evs = [], []
    for batch in _heldout(tok, n_batches=2, batch_size=4, seq_len=64):  # the notebook's sample
        x = _kept_resid(model, tok, batch, [layer])[layer]
        with torch.no_grad():
            f = sae.encode(x.to(sae.dtype))
            evs.append(explained_variance(x, sae.decode(f)))
        fired.append((f != 0).any(0))
    dead_one, dead_both = 1 - fired[0].float().mean(), 1 - (fired[0] | fired[1]).float().mean()
    assert dead_one > dead_both > 0.2
    assert abs(evs[0] - evs[1]) > 0.005


def test_01_rss_jumps_at_the_first_forward_pass_not_at_loading():
    """01: the weights are memory-mapped: RSS after loading < libraries + weights; the first forward pass adds them."""
    import json
    import os
    import subprocess
    import sys

    code = """
import json, psutil, torch, saehelpers
from saehelpers.activations import memory_report
rss = lambda: psutil.Process().memory_info().rss / 2**20
before = rss()
model, tok = saehelpers.load_model("mini")
loaded, weights = rss(), memory_report(model=model)["model weights"]
with torch.no_grad():
    model(tok("Hello there, how are you today?", return_tensors="pt").input_ids)
print(json.dumps({"before": before, "loaded": loaded, "weights": weights, "after": rss()}))
"""
    env = {k: v for k, v in os.environ.items() if k != "SAEHELPERS_PRESET"} | {"HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["loaded"] < r["before"] + r["weights"]
    assert r["after"] - r["loaded"] > 0.5 * r["weights"]


def test_01_iter_saes_frees_each_sae_so_memory_stays_flat():
    """01: "after that the line stays flat": iter_saes frees each SAE when the loop moves on."""
    import psutil

    from saehelpers.activations import memory_report

    seen, rss = [], []
    for sae in saehelpers.iter_saes(preset="mini"):
        assert all(s.W_dec.device.type == "meta" for s in seen)
        seen.append(sae)
        rss.append(psutil.Process().memory_info().rss / 2**20)
        sae_mb = memory_report(sae=sae)["SAE weights"]
    assert all(s.W_dec.device.type == "meta" for s in seen)
    assert rss[-1] - rss[0] < (len(rss) - 1) * sae_mb


# ---------------------------------------------------------------- 06: the toy hierarchy


@pytest.fixture(scope="module")
def toy06(toy_saes):
    """Notebook 06's world and SAEs (conftest's `toy_saes`) with its absorption tables."""
    from saehelpers import toy

    world, feats, x, saes = toy_saes
    tables = {
        "plain": toy.absorption(saes[False], world, feats, x, toy.layout(world, matryoshka=False)),
        "Matryoshka": toy.absorption(saes[True], world, feats, x, toy.layout(world)),
    }
    return world, feats, x, saes, tables


def test_06_matryoshka_avoids_absorption_only_for_first_group_parents(toy06):
    """06: first-group parents: absorption ~0, cosine below 1 (hedging), purer children than the plain SAE where the
    plain SAE absorbed the parent; a later-group parent is absorbed, and for it the plain SAE's children are purer."""
    world, feats, x, saes, t = toy06
    plain, nested = t["plain"], t["Matryoshka"]
    assert nested.absorption.mean() < plain.absorption.mean()
    first, later = nested[nested.group == 0], nested[nested.group > 0]
    assert len(first) >= 1 and (first.absorption < 0.02).all() and (first.cosine < 0.98).all()
    assert len(later) >= 1  # the seeded run shows both cases
    assert (plain.absorption > 0.1).any()  # "some parent latents stay silent"
    for p in first.index:
        if plain.absorption[p] > 0.1:
            assert nested.child_cosine[p] > plain.child_cosine[p]
    for (
        p
    ) in later.index:  # "then absorbed as in the plain SAE"; the right plot turns around where plain kept it
        assert nested.absorption[p] > 0.1
        if plain.absorption[p] < 0.02:
            assert plain.child_cosine[p] > nested.child_cosine[p]


def test_06_hierarchy_misses_absorbed_families_and_mostly_finds_first_group_ones(toy06):
    """06: "does not recover every planted family"; a later-group parent gets no children; a first-group parent's
    found children are mostly its true children."""
    from saehelpers import toy

    world, feats, x, saes, _ = toy06
    sae, rel = saes[True], toy.layout(world)
    best = toy.match(sae, world)
    found = matryoshka.hierarchy(
        sae, rel, sae.encode(x), top_k=len(world.children[0]), min_cosine=-1, sort_by="p_parent_given_child"
    )
    recovered = 0
    for p in world.parents:
        latent = int(best.latent[p])
        truth = set(best.latent[world.children[p]].tolist())
        got = set(found[found.parent == latent].child.tolist())
        recovered += truth == got
        if rel.group_of(latent) > 0:
            assert not got
        else:
            assert len(truth & got) >= 2
            assert (found[found.parent == latent].p_parent_given_child > 0.5).all()  # "fires mostly together"
    assert recovered < len(world.parents)


# ---------------------------------------------------------------- 04: ablation

ITEMS_04 = [  # notebook 04's task
    ("The capital of France is the city of", " Paris", " London"),
    ("The capital of Japan is", " Tokyo", " Beijing"),
    ("x = (a + b", ")", "]"),
    ("if (x > 0", ")", "]"),
    ("1, 2, 3, 4, ", "5", "6"),
    ("2, 3, 4, 5, 6, ", "7", "8"),
]


@pytest.fixture(scope="module")
def task04(mini):
    from saehelpers import ablation

    model, tok = mini
    rel = get_release("mini")
    task = ablation.make_task(tok, ITEMS_04, device=model.device)
    layer = rel.layers[len(rel.layers) * 3 // 4]
    return model, tok, rel, task, layer, saehelpers.load_sae(layer, "mini")


def test_04_set_ablation_costs_less_than_the_sum_of_single_effects(task04):
    """04: "the measured line follows the dashed one for the first features and then stays above it": removed
    together, the candidates cost less than their single effects add up to."""
    from saehelpers import ablation

    model, tok, rel, task, layer, sae = task04
    with torch.no_grad(), hooks.capture(model, [layer]) as acts:
        clean = task.metric(task.run(model)).item()
    a = sae.encode(acts[layer].to(sae.dtype))
    at_last = a[torch.arange(len(ITEMS_04)), task.last]
    candidates = at_last.sum(0).topk(6).indices.tolist()
    zero = ablation.true_effects(model, sae, task, candidates, progress=False)["effect"]
    order = zero.sort_values().index.tolist()
    together = []
    for k in range(1, len(order) + 1):
        with torch.no_grad(), ablation.ablate(model, sae, order[:k]):
            together.append(task.metric(task.run(model)).item() - clean)
    singles = zero[order].cumsum().tolist()
    gaps = [t - s for t, s in zip(together, singles)]
    assert abs(gaps[0]) < 1e-3  # one feature: the same ablation
    assert gaps[-1] > 0.05 and all(
        g > -0.02 for g in gaps
    )  # together above the sum: costs less than it adds up to
    assert max(gaps) < max(abs(v) for v in together)  # a mild interaction, not a reversal


def test_04_attribution_ranks_worse_at_the_earliest_layer_and_size_does_not_predict_the_miss(task04):
    """04: the estimate ranks features worse at the earliest SAE layer than at the notebook's layer; on the mini
    preset the miss is only weakly related to the feature's total activation (so size alone is no warning sign)."""
    from saehelpers import ablation

    model, tok, rel, task, layer, sae = task04
    rhos = {}
    for at, s in ((layer, sae), (rel.layers[0], saehelpers.load_sae(rel.layers[0], "mini"))):
        table = ablation.attribute(model, s, task, release=rel)
        estimate = table.groupby("feature")["estimate"].sum()
        top = estimate.abs().sort_values(ascending=False).index[:15].tolist()
        true = ablation.true_effects(model, s, task, top, progress=False)["effect"]
        rhos[at] = estimate[top].rank().corr(true.rank())
        if at == rel.layers[0]:
            miss = (estimate[top] - true).abs()
            size = table.groupby("feature")["activation"].sum()[top]
            assert abs(miss.rank().corr(size.rank())) < 0.5
    assert rhos[rel.layers[0]] < rhos[layer]


def test_04_candidates_broad_and_narrow_and_the_first_groups_fire_more(task04):
    """04: among the candidates "some are active on several kinds of prompt, others on one kind only", and "every
    candidate of the first two groups fires on a larger share of held-out tokens than any of the later groups"."""
    from saehelpers import features

    model, tok, rel, task, layer, sae = task04
    # the notebook's statistics (budget.edit_tokens)
    stats = features.feature_stats(model, tok, sae, "mini", n_tokens=2048)
    with torch.no_grad(), hooks.capture(model, [layer]) as acts:
        task.run(model)
    a = sae.encode(acts[layer].to(sae.dtype))
    at_last = a[torch.arange(len(ITEMS_04)), task.last]
    candidates = at_last.sum(0).topk(6).indices.tolist()
    # active on each kind of prompt: cities, brackets, numbers (two prompts each)
    kinds = torch.stack([(at_last[i : i + 2, candidates] > 0).any(0) for i in (0, 2, 4)])
    n_kinds = kinds.sum(0)
    assert (n_kinds >= 2).any() and (n_kinds == 1).any()
    freq = {f: stats.frequency[f].item() for f in candidates}
    early = [freq[f] for f in candidates if rel.group_of(f) <= 1]
    later = [freq[f] for f in candidates if rel.group_of(f) > 1]
    assert early and later and min(early) > max(later)


def test_04_smaller_prefix_raises_the_loss_and_lowers_m_at_every_step(task04):
    """04: "as the prefix shrinks both loss lines rise, and m falls" (error term kept and dropped), on the notebook's
    held-out batch."""
    from saehelpers import ablation
    from saehelpers.text import token_batches

    model, tok, rel, task, layer, sae = task04
    held = next(iter(token_batches(tok, "mini", batch_size=2, seq_len=64, n_batches=1)))
    scored = saehelpers.metrics.token_mask(held["input_ids"], held["attention_mask"], tok.bos_token_id)
    for keep_error in (True, False):
        loss, m = [], []
        for w in rel.matryoshka_widths:
            with torch.no_grad(), ablation.ablate_outside(model, sae, rel, w, keep_error=keep_error):
                loss.append(lm.next_token_loss(model, held["input_ids"], held["attention_mask"], scored))
                m.append(task.metric(task.run(model)).item())
        assert all(a > b for a, b in zip(loss, loss[1:])), (keep_error, loss)
        assert all(a < b for a, b in zip(m, m[1:])), (keep_error, m)


# ---------------------------------------------------------------- 03: steering

FRENCH_03 = [  # notebook 03's contrast sets and prompts
    "Bonjour, je m'appelle Marie et j'habite à Paris avec ma famille.",
    "Il fait très beau aujourd'hui, allons nous promener dans le parc.",
    "Je voudrais un café et un croissant, s'il vous plaît.",
    "Nous avons visité le musée hier après-midi avec les enfants.",
    "Le chat dort sur le canapé depuis ce matin.",
    "Elle lit un livre très intéressant sur l'histoire de la ville.",
]
ENGLISH_03 = [
    "Hello, my name is Marie and I live in Paris with my family.",
    "The weather is very nice today, let's go for a walk in the park.",
    "I would like a coffee and a croissant, please.",
    "We visited the museum yesterday afternoon with the children.",
    "The cat has been sleeping on the sofa since this morning.",
    "She is reading a very interesting book about the history of the town.",
]
NUMBERS_03 = [
    "Total: 3 apples at $0.50 each = $1.50",
    "The meeting is on 12 March 2024 at 10:30.",
    "Room 204, floor 2, door code 7719.",
    "In 1998 the population was 45,000; by 2020 it was 61,250.",
    "2 + 3 = 5, and 7 x 8 = 56.",
    "Invoice no. 5521: 4 items, 129.99 EUR.",
]
PROMPTS_03 = ["My favourite thing to do on a weekend is", "The weather today is", "Yesterday I went to the"]
MULTIPLES_03, REPEAT_03, N_NEW_03 = [0, 0.5, 1, 1.25, 1.5, 2, 3, 4], 0.8, 12


@pytest.fixture(scope="module")
def steer03(mini):
    """Notebook 03's French feature at its layer, the coefficient sweep and the sweet spot, as its cells compute them."""
    import pandas as pd

    from saehelpers import features, steering

    model, tok = mini
    rel = get_release("mini")
    layer = rel.layers[len(rel.layers) * 3 // 4]
    sae = saehelpers.load_sae(layer, "mini")
    french = features.contrast(model, tok, sae, rel, FRENCH_03, ENGLISH_03)
    feature = int(french.index[0])
    a_max = steering.max_activation(model, tok, sae, FRENCH_03)
    max_act = a_max[feature].item()
    rows, texts = [], {}
    for m in MULTIPLES_03:
        with steering.steer(model, sae, feature, m * max_act):
            texts[m] = steering.generate(model, tok, PROMPTS_03, N_NEW_03)
        act, loss = steering.read_back(model, tok, sae, feature, PROMPTS_03, texts[m])
        rows.append(
            {"m": m, "act": act / max_act, "loss": loss, "distinct": steering.distinct_words(texts[m])}
        )
    sweep = pd.DataFrame(rows).set_index("m")
    varied = sweep.distinct >= REPEAT_03 * sweep.distinct.iloc[0]
    m_best = sweep[varied.cummin()].act.idxmax()
    ctx = dict(model=model, tok=tok, rel=rel, layer=layer, sae=sae, french=french, feature=feature)
    return ctx | dict(a_max=a_max, max_act=max_act, sweep=sweep, texts=texts, m_best=m_best)


def _repeats(texts, word, times=3):
    """Whether one of the texts holds `word` `times` times in a row."""
    return any(" ".join([word] * times) in t for t in texts)


def test_03_sweep_effect_starts_then_breaks_into_repetition_and_the_loss_misses_the_break(steer03):
    """03: "at m <= 0.5 nothing much happens"; "within one step the text turns French and the read-back rises, with
    the loss"; "one or two steps past the sweet spot" distinct words drop ("levo levo levo …", "by m = 4 bienvenue
    plus bienvenue plus …") and the read-back falls; the loss "at the first step past the sweet spot is lower than
    at the sweet spot"."""
    s, m_best, texts = steer03["sweep"], steer03["m_best"], steer03["texts"]
    i = MULTIPLES_03.index(m_best)
    m_next = MULTIPLES_03[i + 1]
    assert (s.act[s.index <= 0.5] < 0.05).all()
    assert 0.5 < m_best <= 2 and s.act[m_best] > 0.3  # a real effect one or two steps up
    assert s.loss[m_best] > s.loss[0] + 1  # the language switch surprises the unsteered model
    assert s.distinct[MULTIPLES_03[i + 2]] < REPEAT_03 * s.distinct[0]  # repetitive within two steps
    assert _repeats(texts[m_next], "levo") and _repeats(texts[4], "bienvenue plus")
    assert s.distinct[4] < s.distinct[m_best] / 3
    assert s.act[s.index > m_best].max() < s.act[m_best]  # the read-back falls past the sweet spot
    assert s.loss[m_next] < s.loss[m_best]  # the loss cannot find the break
    sweet = " ".join(steer03["texts"][m_best])
    assert sum(w in sweet.split() for w in ("la", "de", "très", "un", "les", "à")) >= 3  # French words


def test_03_push_of_half_a_spread_changes_the_text_and_past_one_it_breaks(steer03):
    """03: "the text starts to change at about half a spread and breaks into repetition past one"."""
    from saehelpers import steering
    from saehelpers.text import token_batches

    model, tok, layer, sae, feature = (steer03[k] for k in ("model", "tok", "layer", "sae", "feature"))
    held = list(token_batches(tok, "mini", batch_size=4, seq_len=64, n_batches=2))
    _, spread = steering.resid_norms(model, layer, held)
    per_m = steer03["max_act"] * sae.W_dec[feature].norm().item() / spread  # push / spread at m = 1
    s, m_best = steer03["sweep"], steer03["m_best"]
    starts = s.index[s.act > 0.1].min()  # the first multiple with a real effect
    assert 0.3 < starts * per_m < 1.0
    assert m_best * per_m < 1.5 and MULTIPLES_03[MULTIPLES_03.index(m_best) + 1] * per_m > 1.0


def test_03_clamp_matches_add_at_the_sweet_spot_and_breaks_later(steer03):
    """03: at the sweet spot the added and clamped texts "start alike and part after a few words", and "clamping costs
    less loss"; "one step further both break into the same repetition on one prompt ("levo levo levo …"), and
    clamping is at most a little more varied"."""
    from saehelpers import steering

    model, tok, layer, sae, feature = (steer03[k] for k in ("model", "tok", "layer", "sae", "feature"))
    m_best, max_act = steer03["m_best"], steer03["max_act"]
    m_next = MULTIPLES_03[MULTIPLES_03.index(m_best) + 1]
    got, clamped = {}, {}
    for m in (m_best, m_next):
        with steering.clamp(model, sae, feature, m * max_act):
            texts = clamped[m] = steering.generate(model, tok, PROMPTS_03, N_NEW_03)
        got[m] = (
            steering.read_back(model, tok, sae, feature, PROMPTS_03, texts)[1],
            steering.distinct_words(texts),
        )
    added = steer03["texts"][m_best]
    assert all(a.split()[0] == c.split()[0] for a, c in zip(added, clamped[m_best]))  # start alike
    assert added != clamped[m_best]  # and part
    s = steer03["sweep"]
    assert got[m_best][0] < s.loss[m_best]
    assert _repeats(clamped[m_next], "levo") and _repeats(steer03["texts"][m_next], "levo")
    assert 0 <= got[m_next][1] - s.distinct[m_next] < 0.1


def test_03_clamp_holds_the_feature_at_c_where_adding_lifts_it(steer03):
    """03: on a French + English sentence, adding lifts the feature to about its own value + c, clamping holds it
    at c, clamp to 0 sets it to 0."""
    import contextlib

    from saehelpers import steering

    model, tok, layer, sae, feature = (steer03[k] for k in ("model", "tok", "layer", "sae", "feature"))
    c = steer03["max_act"]
    ids = tok(FRENCH_03[0] + " " + ENGLISH_03[2], return_tensors="pt").input_ids
    got = {}
    for name, edit in {
        "clean": contextlib.nullcontext(),
        "add": steering.steer(model, sae, feature, c),
        "clamp": steering.clamp(model, sae, feature, c),
        "zero": steering.clamp(model, sae, feature, 0.0),
    }.items():
        with edit, torch.no_grad():
            x = hooks.resid_post(model, ids, [layer])[layer][0, 1:]
            got[name] = sae.encode(x.to(sae.dtype))[:, feature].float()
    on = got["clean"] > 1  # where it fires by itself
    assert on.sum() >= 5
    assert ((got["add"] - got["clean"] - c)[on].abs() < 0.2 * c).all()
    assert ((got["clamp"] - c).abs() < 0.15 * c).all()
    assert (got["zero"] == 0).all()


def test_03_04_the_edited_layer_is_the_topmost_on_mini_and_three_quarters_up_on_the_real_release():
    """03, 04: the SAE at index len(layers) * 3 // 4 is "the topmost one" on the mini preset and "about three quarters
    of the way up the model" on the real release."""
    mini, real = get_release("mini"), get_release("gemma-3-1b")
    assert mini.layers[len(mini.layers) * 3 // 4] == mini.layers[-1]
    layer = real.layers[len(real.layers) * 3 // 4]
    assert 0.65 < layer / real.n_model_layers < 0.8


def test_03_residual_norm_is_mostly_the_shared_mean_and_bos_is_far_out(mini):
    """03: on the mini preset "a few huge dimensions that are nearly the same for every token" make up most of ||x||:
    the median ||x|| is well above the median spread, and BOS "sits far to the right of every other token"."""
    from saehelpers.activations import collect_resid
    from saehelpers.text import token_batches

    model, tok = mini
    rel = get_release("mini")
    layer = rel.layers[len(rel.layers) * 3 // 4]
    held = list(token_batches(tok, "mini", batch_size=4, seq_len=64, n_batches=2))  # the notebook's
    x = collect_resid(model, held, [layer], progress=False).acts[layer].float()
    mean = x.mean(0)
    norm, spread = x.norm(dim=-1), (x - mean).norm(dim=-1)
    assert norm.median() > 2 * spread.median()
    sq = mean.pow(2)
    assert sq.topk(4).values.sum() > 0.9 * sq.sum()  # a few dimensions carry the shared part
    assert sq.sum() > 0.5 * x.pow(2).sum(-1).mean()  # and it is most of ||x||^2
    bos = hooks.resid_post(model, held[0]["input_ids"][:1, :1], [layer])[layer].norm()
    assert bos > 2 * norm.max()


def test_03_lower_layers_french_features_write_other_text_than_the_top_layers(steer03):
    """03: only the topmost SAE layer writes French; the lower layers' "French" features read back at their own
    layer, "a quarter to a half" of the topmost one's read-back, yet the one ruler reads almost nothing (Spanish or
    fragments)."""
    from saehelpers import features, steering

    model, tok, rel, layer, sae, feature = (
        steer03[k] for k in ("model", "tok", "rel", "layer", "sae", "feature")
    )
    m_best, max_act = steer03["m_best"], steer03["max_act"]
    rows = {}
    for L in rel.layers:
        if L == layer:
            continue
        sae_L = saehelpers.load_sae(L, "mini")
        f_L = int(features.contrast(model, tok, sae_L, rel, FRENCH_03, ENGLISH_03).index[0])
        max_L = steering.max_activation(model, tok, sae_L, FRENCH_03)[f_L].item()
        with steering.steer(model, sae_L, f_L, m_best * max_L):
            texts = steering.generate(model, tok, PROMPTS_03, N_NEW_03)
        own, _ = steering.read_back(model, tok, sae_L, f_L, PROMPTS_03, texts)
        ruler, loss = steering.read_back(model, tok, sae, feature, PROMPTS_03, texts)
        rows[L] = own / max_L, ruler / max_act, loss, " ".join(texts).split()
    top = steer03["sweep"].act[m_best]
    for own, ruler, _, _ in rows.values():
        assert 0.2 * top < own < 0.55 * top and ruler < 0.05 and ruler < top / 5
    first, second, third = rel.layers[:3]  # 2, 6, 10 on mini
    assert not set(rows[second][3]) & {"la", "le", "de", "un", "el", "es"}  # fragments
    for L in (first, third):  # Spanish
        words = rows[L][3]
        assert sum(w in words for w in ("la", "de", "un", "te", "lo", "ciudad", "visita")) >= 2, words


def test_03_coarse_feature_changes_english_text_broadly_and_the_fine_one_writes_no_french(steer03):
    """03: the first group's French feature fires on "nearly half of all held-out tokens", on English too; its lens is
    English; it changes the English text but keeps it English, reads back, and the French feature does not; the last
    group's fires on a tiny share and reads back ~0: it changes the English text but writes no French."""
    from saehelpers import features, steering

    model, tok, rel, layer, sae, feature = (
        steer03[k] for k in ("model", "tok", "rel", "layer", "sae", "feature")
    )
    french, a_max, m_best = steer03["french"], steer03["a_max"], steer03["m_best"]
    stats = features.feature_stats(model, tok, sae, "mini", n_tokens=2048)
    coarse = int(french.index[french.group == 0][0])
    fine = int(french.index[french.group == len(rel.groups) - 1][0])
    assert 0.4 < stats.frequency[coarse] < 0.5 and stats.frequency[fine] < 0.005
    assert french.freq_b[coarse] > 0.5  # it fires on most English tokens too
    lens = [tok.decode(t) for t in lm.logit_lens(model, sae.W_dec[coarse], k=5)[0]]
    assert {" an", " particular", " actual"} <= set(lens)  # English
    got = {}
    for f in (coarse, fine):
        with steering.steer(model, sae, f, m_best * a_max[f].item()):
            texts = steering.generate(model, tok, PROMPTS_03, N_NEW_03)
        (own, fr), _ = steering.read_back(model, tok, sae, [f, feature], PROMPTS_03, texts)
        got[f] = own / a_max[f].item(), fr / steer03["max_act"], " ".join(texts)
    assert got[coarse][0] > 0.2 and got[coarse][1] < 0.05
    plain = " ".join(steer03["texts"][0])
    assert got[coarse][2] != plain and got[coarse][2].isascii()  # changed, and still English
    assert not set(got[coarse][2].split()) & {"la", "le", "de", "un", "une", "est", "et", "el", "es"}
    assert got[fine][0] < 0.05 and got[fine][1] < 0.05
    assert got[fine][2] != " ".join(steer03["texts"][0])  # not the unsteered text


def test_03_numbers_win_over_french_when_both_are_added(steer03):
    """03: "the numbers feature wins": the combined texts read back the numbers feature more and French less than
    the French texts do."""
    from saehelpers import features, steering

    model, tok, rel, layer, sae, feature = (
        steer03[k] for k in ("model", "tok", "rel", "layer", "sae", "feature")
    )
    m_best, max_act = steer03["m_best"], steer03["max_act"]
    reads = features.contrast(model, tok, sae, rel, NUMBERS_03, ENGLISH_03).index[:10].tolist()
    digits = [tok.encode(str(i), add_special_tokens=False)[0] for i in range(10)]
    top_lens, _ = lm.logit_lens(model, sae.W_dec[reads], k=10)
    writes = [len(set(t.tolist()) & set(digits)) for t in top_lens]
    feature_b = reads[writes.index(max(writes))]
    max_b = steering.max_activation(model, tok, sae, NUMBERS_03)[feature_b].item()
    v = m_best * max_act * sae.W_dec[feature] + m_best * max_b * sae.W_dec[feature_b]
    with steering.steer(model, layer, v.float()):
        both = steering.generate(model, tok, PROMPTS_03, N_NEW_03)
    (fr, num), _ = steering.read_back(model, tok, sae, [feature, feature_b], PROMPTS_03, both)
    (fr0, num0), _ = steering.read_back(
        model, tok, sae, [feature, feature_b], PROMPTS_03, steer03["texts"][m_best]
    )
    assert fr < fr0 / 2 and num > num0
    assert sum(ch.isdigit() for ch in "".join(both)) > len("".join(both)) / 3  # runs of digits


# ---------------------------------------------------------------- 00 and 02: one sentence, feature cards


def test_00_repeating_top_features_are_early_group_and_bos_outweighs_the_rest(mini):
    """00: the two features that lead at four tokens or more sit in g0, some lead at one token only; BOS's squared norm
    outweighs all other tokens' together; every token's error is about a tenth of its norm."""
    model, tok = mini
    rel = get_release("mini")
    layer = rel.layers[len(rel.layers) // 2]
    sae = saehelpers.load_sae(layer, "mini")
    ids = tok(SENTENCE, return_tensors="pt").input_ids
    x = hooks.resid_post(model, ids, [layer])[layer][0]
    with torch.no_grad():
        f = sae.encode(x.to(sae.dtype))
        x_hat = sae.decode(f)
    top = f[1:].topk(3, dim=-1).indices.flatten().tolist()
    counts = {i: top.count(i) for i in set(top)}
    repeated = [i for i, c in counts.items() if c >= 4]
    assert len(repeated) == 2 and all(rel.group_of(i) == 0 for i in repeated)
    assert sum(c == 1 for c in counts.values()) >= 5
    sq = x.float().norm(dim=-1) ** 2
    assert sq[0] > sq[1:].sum()
    err = ((x - x_hat).norm(dim=-1) / x.norm(dim=-1))[1:]
    assert (
        0.05 < err.min() and err.max() < 0.2 and err.max() < 2 * err.median()
    )  # "much the same, about a tenth"


@pytest.fixture(scope="module")
def cards02(mini):
    """Notebook 02's layer, statistics and French/English contrast."""
    from saehelpers import features

    model, tok = mini
    rel = get_release("mini")
    layer = rel.layers[len(rel.layers) // 2]
    sae = saehelpers.load_sae(layer, "mini")
    stats = features.feature_stats(model, tok, sae, "mini", n_tokens=4096)
    french = [
        "Le chat dort sur le canapé.",
        "Nous allons au marché demain matin.",
        "Il fait très beau aujourd'hui.",
        "Je voudrais un café, s'il vous plaît.",
        "La réunion commence à dix heures.",
        "Elle lit un livre dans le jardin.",
        "Les enfants jouent dans le parc.",
        "Où se trouve la gare ?",
    ]
    english = [
        "The cat is sleeping on the sofa.",
        "We are going to the market tomorrow morning.",
        "The weather is very nice today.",
        "I would like a coffee, please.",
        "The meeting starts at ten o'clock.",
        "She is reading a book in the garden.",
        "The children are playing in the park.",
        "Where is the train station?",
    ]
    table = features.contrast(model, tok, sae, rel, french, english)
    return model, tok, rel, layer, sae, stats, table


def test_02_rows_broad_and_narrow_and_group_medians_fall(cards02):
    """02: among the sentence's top features some fire on most tokens and some on one or two; the median firing
    frequency falls from group to group; most features' firings are mostly weak (below half their max)."""
    from saehelpers import features
    from saehelpers.features import HIST_EDGES

    model, tok, rel, layer, sae, stats, _ = cards02
    text = "The Eiffel Tower is in Paris. It was finished in 1889 and is 330 metres tall."
    _, feats = features.encode_text(model, tok, sae, text)
    shown = feats.max(0).values.topk(6).indices  # display.text_features(n=6): the largest anywhere
    on = (feats[:, shown] > 0).float().mean(0)
    assert on.max() > 0.6 and ((feats[:, shown] > 0).sum(0) <= 2).any()
    medians = [stats.frequency[a:b].median().item() for a, b in rel.groups]
    assert all(m1 > m2 for m1, m2 in zip(medians, medians[1:]))
    edges = torch.as_tensor(HIST_EDGES)
    mid = (edges[:-1] * edges[1:]).sqrt()
    busy = (stats.counts >= 20).nonzero().flatten()
    weak = torch.stack([stats.hist[f][mid < stats.max[f] / 2].sum() / stats.hist[f].sum() for f in busy])
    assert 0.7 < (weak > 0.5).float().mean() < 0.95  # "about four in five"


_MARKERS = {  # words only one of the three languages uses, to tell contexts apart
    "es": {
        "el",
        "los",
        "las",
        "que",
        "y",
        "como",
        "cuando",
        "mi",
        "lo",
        "por",
        "con",
        "del",
        "fue",
        "tengo",
        "muy",
    },
    "fr": {"le", "les", "des", "et", "est", "une", "pour", "dans", "qui", "du", "au", "fichiers", "système"},
    "it": {"il", "di", "della", "per", "che", "delle", "nomi", "localizzazione"},
}


def _language(example) -> str | None:
    """The language whose marker words a context holds most of (None: none of them)."""
    words = "".join(example["strings"]).lower().split()
    hits = {lang: sum(w in m for w in words) for lang, m in _MARKERS.items()}
    best = max(hits, key=hits.get)
    return best if hits[best] else None


def test_02_contrast_winners_are_not_french_only(cards02):
    """02: "none of the four is French": their top contexts on held-out text are "mostly Italian"; the held-out
    text "holds a little more Italian than French, and more Spanish than either"."""
    from collections import Counter

    from saehelpers.text import read_jsonl_gz, shipped_sample_path

    model, tok, rel, layer, sae, stats, table = cards02
    broad = table[table.freq_b > 0.05].index[:2]
    specific = table[table.freq_b <= 0.05].index[:2]
    langs = Counter()
    for f in [*broad, *specific]:
        card = cards.feature_card(model, tok, sae, rel, stats, int(f), n_examples=16)
        langs_f = Counter(_language(e) for e in card.top)
        assert langs_f["fr"] < len(card.top) / 4, (f, langs_f)
        langs += langs_f
    marked = sum(n for lang, n in langs.items() if lang)
    assert langs["it"] > marked / 2, langs
    chars = Counter()
    for doc in read_jsonl_gz(shipped_sample_path()):  # the held-out sample the package ships
        chars[doc["lang"]] += len(doc["text"])
    assert chars["es"] > chars["it"] > chars["fr"] > 0.8 * chars["it"], chars


# ---------------------------------------------------------------- 05: prefixes on every layer


@pytest.fixture(scope="module")
def prefixes05(mini):
    """Notebook 05's held-out activations at every SAE layer and each layer's prefix table."""
    import pandas as pd

    from saehelpers.activations import collect_resid
    from saehelpers.text import token_batches

    model, tok = mini
    rel = get_release("mini")
    batches = token_batches(tok, "mini", batch_size=8, seq_len=128, split="heldout")
    acts = collect_resid(model, batches, rel.layers, max_tokens=4096, progress=False)
    tables = [
        matryoshka.prefix_metrics(saehelpers.load_sae(L, "mini"), rel, acts.acts[L]).assign(layer=L)
        for L in rel.layers
    ]
    return model, tok, rel, pd.concat(tables, ignore_index=True)


def test_05_prefix_ev_small_prefix_fair_then_diminishing_and_deeper_is_harder_at_full_width(prefixes05):
    """05 (and 00's pointer to it): over held-out tokens every prefix scores above 0, the first "a fifth to nearly a
    third"; past the second group each group adds less; at full width "the first layers are the easiest to
    reconstruct and the last two the hardest, about equally (within 0.02)", at the smallest widths not in order;
    about zero even the smallest prefix scores close to 0.9."""
    _, _, rel, table = prefixes05
    ev = table.pivot(index="layer", columns="width", values="ev_mean")
    assert (ev.to_numpy() > 0).all()
    assert ev.iloc[:, 0].between(0.18, 0.32).all()
    gains = ev.diff(axis=1).iloc[:, 1:].to_numpy()  # gains from each group after the first
    assert (gains[:, 1:-1] > gains[:, 2:]).all()  # from the third group on, each adds less
    full = ev.iloc[:, -1]
    a, b, c, d = full.tolist()  # in layer order
    assert a > b > max(c, d) and abs(c - d) < 0.02
    assert not ev.iloc[:, 0].is_monotonic_decreasing
    assert (table[table.width == rel.matryoshka_widths[0]].ev_zero > 0.85).all()  # "close to 0.9"


def test_05_prefix_loss_falls_with_width_and_not_in_proportion_to_ev(prefixes05):
    """05: the loss increase falls with every width; at full width a layer that leaves out less variance can cost
    more loss than another."""
    from saehelpers.text import token_batches

    model, tok, rel, table = prefixes05
    full = rel.matryoshka_widths[-1]
    rows = {}
    for L in rel.layers:
        batches = token_batches(tok, "mini", batch_size=4, seq_len=64, n_batches=1)
        loss = matryoshka.prefix_loss(model, saehelpers.load_sae(L, "mini"), rel, batches)
        assert loss.delta_loss.is_monotonic_decreasing
        ev = table[(table.layer == L) & (table.width == full)].ev_mean.item()
        rows[L] = ev, loss.delta_loss.iloc[-1]
    assert any(rows[a][0] > rows[b][0] and rows[a][1] > rows[b][1] for a in rows for b in rows)


def test_05_first_groups_fire_most_and_take_a_large_share_of_firings(mini):
    """05: the group medians fall; the first two groups, 1.6% of the latents, take about a quarter of all firings."""
    from saehelpers import features

    model, tok = mini
    rel = get_release("mini")
    layer = rel.layers[len(rel.layers) // 2]
    stats = features.feature_stats(model, tok, saehelpers.load_sae(layer, "mini"), "mini", n_tokens=4096)
    freq = stats.frequency
    w = rel.matryoshka_widths[1]
    assert w / rel.d_sae == pytest.approx(0.016, abs=0.001)
    assert 0.18 < (freq[:w].sum() / freq.sum()).item() < 0.32
