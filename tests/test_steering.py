"""saehelpers.steering on the mini model: exact edits, seeded generation, measurements, bad input, clean-up.

Most tests use a random SAELens JumpReLU SAE (the mechanics do not depend on trained weights); the
test that steering *works* uses a trained mini SAE, shipped with the package.
"""

import pytest
import torch
from transformers import LogitsProcessor, LogitsProcessorList

from saehelpers import cards, display, hooks, lm, steering
from saehelpers import metrics as M

LAYER = 6
PROMPTS = ["The weather today is", "def add(a, b):"]


@pytest.fixture(scope="module")
def sae(mini):
    """A random 640 x 64 JumpReLU SAE whose thresholds make each latent fire on ~30% of the prompts' tokens."""
    from sae_lens import JumpReLUSAE, JumpReLUSAEConfig

    model, tok = mini
    torch.manual_seed(0)
    sae = JumpReLUSAE(JumpReLUSAEConfig(d_in=640, d_sae=64))
    sae.cfg.metadata.hook_name = f"blocks.{LAYER}.hook_resid_post"
    x = hooks.resid_post(model, tok(PROMPTS[0], return_tensors="pt").input_ids, [LAYER])[LAYER][0, 1:]
    with torch.no_grad():
        pre = (x - sae.b_dec) @ sae.W_enc + sae.b_enc
        sae.threshold.copy_(torch.quantile(pre, 0.7, dim=0).clamp(min=0) + 1e-3)
    return sae.eval()


@pytest.fixture(scope="module")
def ids(mini):
    _, tok = mini
    return tok(PROMPTS[0], return_tensors="pt").input_ids


@pytest.fixture(scope="module")
def clean(mini, ids):
    model, _ = mini
    with torch.no_grad(), hooks.capture(model, [LAYER]) as acts:
        logits = model(input_ids=ids).logits
    return acts[LAYER], logits


def steered_resid(model, ids, edit):
    with torch.no_grad(), edit, hooks.capture(model, [LAYER], stop=True) as acts:
        model(input_ids=ids)
    assert hooks.active_hooks(model) == 0
    return acts[LAYER]


# ---------------------------------------------------------------- the edits are exact


@pytest.mark.parametrize("by", ["feature", "vector"])
def test_steer_adds_coef_times_direction_at_chosen_positions_only(mini, sae, ids, clean, by):
    model, _ = mini
    base, _ = clean
    d = sae.W_dec[7].detach()
    at, what = (sae, 7) if by == "feature" else (LAYER, d.clone())
    coef = 3.5
    got = steered_resid(model, ids, steering.steer(model, at, what, coef))
    assert torch.equal(got[:, 0], base[:, 0])  # BOS left alone
    torch.testing.assert_close(got[:, 1:], base[:, 1:] + coef * d, rtol=0, atol=1e-5)

    got = steered_resid(model, ids, steering.steer(model, at, what, coef, positions=[2, 4]))
    changed = (got != base).any(-1)[0].nonzero().flatten().tolist()
    assert changed == [2, 4]  # and nowhere else
    torch.testing.assert_close(got[0, [2, 4]], base[0, [2, 4]] + coef * d, rtol=0, atol=1e-5)

    got = steered_resid(model, ids, steering.steer(model, at, what, coef, include_bos=True))
    torch.testing.assert_close(got, base + coef * d, rtol=0, atol=1e-5)


def test_steer_one_generated_position_during_generate(mini, sae, ids):
    """With the KV cache, steering position P changes layer LAYER's output at P only, by coef * direction."""
    model, _ = mini
    coef, P = 40.0, ids.shape[1] + 1  # the second new token
    with torch.no_grad(), steering.steer(model, sae, 7, coef, positions=[P]):
        with hooks.capture(model, [LAYER], keep_all=True) as acts:
            out = model.generate(input_ids=ids, max_new_tokens=4, do_sample=False)
    got = torch.cat(acts.history[LAYER], dim=1)  # every step's output, the prompt's first
    with torch.no_grad(), hooks.capture(model, [LAYER]) as ref:
        model(input_ids=out[:, :-1])  # the clean model on the same tokens
    diff, norm = (got - ref[LAYER])[0], ref[LAYER][0].norm(dim=-1)
    off = [p for p in range(diff.shape[0]) if p != P]
    assert (diff[off].norm(dim=-1) / norm[off]).max() < 1e-5  # KV-cache numerics only
    torch.testing.assert_close(diff[P], coef * sae.W_dec[7].detach(), rtol=0, atol=1e-5 * norm[P].item())


def test_steer_at_zero_changes_nothing(mini, sae, ids, clean):
    model, _ = mini
    with torch.no_grad(), steering.steer(model, sae, 7, 0.0):
        logits = model(input_ids=ids).logits
    assert torch.equal(logits, clean[1])


def test_clamp_is_x_plus_value_minus_activation_times_direction(mini, sae, ids, clean):
    model, _ = mini
    base, _ = clean
    with torch.no_grad():
        a = sae.encode(base)[0]
    f = int(a[1:].sum(0).argmax())  # a feature that fires on this prompt, so clamping differs from adding
    assert (a[1:, f] > 0).any() and (a[1:, f] == 0).any()
    d = sae.W_dec[f].detach()
    got = steered_resid(model, ids, steering.clamp(model, sae, f, 2.0))
    assert torch.equal(got[:, 0], base[:, 0])
    want = base[0, 1:] + (2.0 - a[1:, f, None]) * d
    torch.testing.assert_close(got[0, 1:], want, rtol=0, atol=1e-5)
    # Clamping to 0 removes the feature where it fires and leaves the other positions untouched.
    got = steered_resid(model, ids, steering.clamp(model, sae, f, 0.0))
    off = (a[:, f] == 0).nonzero().flatten()
    assert torch.equal(got[0, off], base[0, off])


# ---------------------------------------------------------------- generation


def test_steering_changes_generated_text_and_same_seed_same_text(mini, sae):
    model, tok = mini
    plain = steering.generate(model, tok, PROMPTS, max_new_tokens=6)
    assert isinstance(plain, list) and len(plain) == 2 and all(isinstance(t, str) for t in plain)
    norm = sae.W_dec[7].norm().item()
    with steering.steer(model, sae, 7, 200 / norm):
        steered = steering.generate(model, tok, PROMPTS, max_new_tokens=6)
    assert steered[0] != plain[0] and steered[1] != plain[1]

    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = steering.generate(model, tok, PROMPTS[0], max_new_tokens=6, do_sample=True, seed=1)
    assert isinstance(a, str)  # a string in, a string out
    assert torch.equal(torch.get_rng_state(), state)  # the caller's RNG is left as it was
    assert steering.generate(model, tok, PROMPTS[0], max_new_tokens=6, do_sample=True, seed=1) == a
    assert steering.generate(model, tok, PROMPTS[0], max_new_tokens=6, do_sample=True, seed=2) != a
    with steering.steer(model, sae, 7, 20 / norm):
        s1 = steering.generate(model, tok, PROMPTS[0], max_new_tokens=6, do_sample=True, seed=1)
        assert steering.generate(model, tok, PROMPTS[0], max_new_tokens=6, do_sample=True, seed=1) == s1
    assert hooks.active_hooks(model) == 0


class Boom(LogitsProcessor):
    """Raises at the third generation step, after the hooks have run on the prompt and two new tokens."""

    def __init__(self):
        self.calls = 0

    def __call__(self, input_ids, scores):
        self.calls += 1
        if self.calls == 3:
            raise RuntimeError("boom mid-generation")
        return scores


@pytest.mark.parametrize("edit", ["steer", "clamp"])
def test_exception_mid_generation_leaves_model_clean(mini, sae, ids, clean, edit):
    model, tok = mini
    boom = Boom()
    ctx = steering.steer(model, sae, 7, 50.0) if edit == "steer" else steering.clamp(model, sae, 7, 50.0)
    with pytest.raises(RuntimeError, match="boom mid-generation"):
        with ctx:
            steering.generate(
                model, tok, PROMPTS, max_new_tokens=6, logits_processor=LogitsProcessorList([boom])
            )
    assert boom.calls == 3
    assert hooks.active_hooks(model) == 0
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, clean[1])


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "what, coef, match",
    [
        (7, float("nan"), "coef must be finite"),
        (7, float("inf"), "coef must be finite"),
        (7, torch.tensor(float("-inf")), "coef must be finite"),
        (7, "3", "coef must be a real number"),
        (7, True, "coef must be a real number"),
        (64, 1.0, r"Feature 64 is out of range: .* 0\.\.63"),
        (-1, 1.0, r"out of range: .* 0\.\.63"),
        (torch.zeros(3), 1.0, r"shape \(640,\)"),
        (torch.zeros(1, 640), 1.0, r"shape \(640,\)"),
        (torch.zeros(640, dtype=torch.long), 1.0, "floating point"),
        (torch.full((640,), float("nan")), 1.0, "NaN or inf"),
    ],
)
def test_bad_input_gives_clear_errors(mini, sae, what, coef, match):
    model, _ = mini
    with pytest.raises(ValueError, match=match):
        with steering.steer(model, sae, what, coef):
            pass
    assert hooks.active_hooks(model) == 0


def test_bad_clamp_and_sae_inputs(mini, sae):
    model, _ = mini
    with pytest.raises(ValueError, match="value must be finite"):
        steering.clamp(model, sae, 7, float("nan"))
    with pytest.raises(ValueError, match=r"Feature 99 is out of range"):
        steering.clamp(model, sae, 99, 1.0)
    with pytest.raises(ValueError, match="needs its SAE"):
        steering.steer(model, LAYER, 7, 1.0)
    with pytest.raises(ValueError, match=r"0\.\.17"):
        with steering.steer(model, 18, torch.zeros(640), 1.0):
            pass
    hook = sae.cfg.metadata.hook_name
    sae.cfg.metadata.hook_name = None  # an SAE built by hand, that does not say where it reads
    try:
        with pytest.raises(ValueError, match=r"does not say which layer it reads.*hook_name = 'blocks\.0"):
            steering.steer(model, sae, 7, 1.0)
    finally:
        sae.cfg.metadata.hook_name = hook
    with pytest.raises(ValueError, match="max_new_tokens"):
        steering.generate(model, None, "hi", max_new_tokens=0)
    assert hooks.active_hooks(model) == 0


# ---------------------------------------------------------------- measurements against hand computations


def test_read_back_and_lens_probability_by_hand(mini, sae):
    model, tok = mini
    prompt, text = "The cat sat on the", " mat and looked out of the window."
    activation, loss = steering.read_back(model, tok, sae, [7, 3], [prompt], [text])
    p_ids, t_ids = tok(prompt).input_ids, tok(text, add_special_tokens=False).input_ids
    ids = torch.tensor([p_ids + t_ids])
    with torch.no_grad(), hooks.capture(model, [LAYER]) as acts:
        logits = model(input_ids=ids).logits
    new = slice(len(p_ids), ids.shape[1])
    want = sae.encode(acts[LAYER][0, new])[:, [7, 3]].mean(0)
    torch.testing.assert_close(torch.tensor(activation), want, rtol=1e-5, atol=1e-6)
    # The loss of predicting each text token, from the last prompt token on.
    targets = ids[0, new]
    want_loss = torch.nn.functional.cross_entropy(logits[0, new.start - 1 : -1].double(), targets).item()
    # lm.next_token_losses takes the softmax in float32 after subtracting each row's maximum.
    assert loss == pytest.approx(want_loss, rel=1e-6)
    assert steering.read_back(model, tok, sae, 7, prompt, text)[0] == pytest.approx(activation[0])

    p = steering.lens_probability(model, tok, [prompt], [text], targets.unique())
    probs = logits[0, new.start - 1 : -1].double().softmax(-1)
    assert p == pytest.approx(probs[:, targets.unique()].sum(-1).mean().item(), rel=1e-4)
    assert steering.lens_probability(model, tok, [prompt], [text], torch.arange(model.config.vocab_size)) == (
        pytest.approx(1.0, abs=1e-5)
    )
    with pytest.raises(ValueError, match="one text per prompt"):
        steering.read_back(model, tok, sae, 7, [prompt, prompt], [text])


def test_logit_lens_of_the_last_layer_is_the_models_prediction(mini, ids, clean):
    model, _ = mini
    last = model.config.num_hidden_layers - 1
    with torch.no_grad(), hooks.capture(model, [last]) as acts:
        logits = model(input_ids=ids).logits
    top, _ = lm.logit_lens(model, acts[last][0, -1], k=5)
    assert top.tolist() == logits[0, -1].topk(5).indices.tolist()


def test_resid_norms_and_max_activation_by_hand(mini, sae):
    model, tok = mini
    batch = dict(tok(PROMPTS, return_tensors="pt", padding=True))
    keep = M.token_mask(batch["input_ids"], batch["attention_mask"], tok.bos_token_id)
    with torch.no_grad(), hooks.capture(model, [LAYER]) as acts:
        model(**batch)
    x = acts[LAYER][keep]
    norm, spread = steering.resid_norms(model, LAYER, [batch])
    assert norm == pytest.approx(x.norm(dim=-1).median().item(), rel=1e-6)
    assert spread == pytest.approx((x - x.mean(0)).norm(dim=-1).median().item(), rel=1e-5)
    assert spread < norm / 2  # a few huge, nearly constant dimensions dominate ||x||
    got = steering.max_activation(model, tok, sae, PROMPTS)
    with torch.no_grad():
        want = torch.stack(
            [
                sae.encode(
                    hooks.resid_post(model, tok(p, return_tensors="pt").input_ids, [LAYER])[LAYER][0, 1:]
                ).amax(0)
                for p in PROMPTS
            ]
        ).amax(0)
    torch.testing.assert_close(got, want.clamp(min=0))


# ---------------------------------------------------------------- steering works (trained mini SAEs)


def _trained_sae_path():
    from saehelpers import get_release
    from saehelpers.loading import sae_path

    layer = get_release("mini").layers[-1]
    return layer, sae_path(layer, "mini")


def test_steering_a_lens_picked_feature_moves_the_measurements(mini):
    """At the deepest mini layer, pick the live feature whose logit lens most strongly promotes word tokens,
    steer with it at half the residual spread, and check that each measurement moves the expected way."""
    import saehelpers
    from saehelpers.activations import collect_resid
    from saehelpers.text import token_batches

    layer, path = _trained_sae_path()
    assert (path / "cfg.json").exists(), f"the shipped mini SAE is missing: {path}"
    model, tok = mini
    sae = saehelpers.load_sae(layer, "mini", dtype="float32")
    batches = list(token_batches(tok, "mini", 4, 64, n_batches=2))
    x = collect_resid(model, batches, [layer], progress=False).acts[layer]  # BOS and padding left out
    freq = (sae.encode(x) > 0).float().mean(0)
    candidates = freq.topk(128).indices  # the most frequent features: all live
    tops, vals = lm.logit_lens(model, sae.W_dec[candidates], k=10)
    lens = {}
    for f, top, val in zip(candidates.tolist(), tops, vals):
        words = [tok.decode(t).strip() for t in top[:3]]
        if all(w.isalpha() and len(w) >= 3 for w in words):  # its top lens tokens are words
            lens[f] = (val[:3].mean().item(), top)
    assert lens, "no live feature has word tokens at the top of its logit lens"
    feature = max(lens, key=lambda f: lens[f][0])
    lens_ids = lens[feature][1]
    spread = (x - x.mean(0)).norm(dim=-1).median().item()  # as steering.resid_norms
    coef = 0.5 * spread / sae.W_dec[feature].norm().item()  # a push of half the residual spread
    prompts = ["I think that", "The best thing about it is", "Yesterday we went to"]
    plain = steering.measure(model, tok, sae, feature, prompts, lens_ids, max_new_tokens=12)
    steered = steering.measure(
        model,
        tok,
        sae,
        feature,
        prompts,
        lens_ids,
        edit=lambda: steering.steer(model, sae, feature, coef),
        max_new_tokens=12,
    )
    words = [tok.decode(t) for t in lens_ids[:5]]
    assert steered["texts"] != plain["texts"], words
    assert steered["lens_prob"] > 2 * plain["lens_prob"], (words, plain, steered)
    assert steered["activation"] > plain["activation"], (words, plain, steered)
    assert steered["loss"] > plain["loss"], (words, plain, steered)
    assert hooks.active_hooks(model) == 0


def test_distinct_words_counts_repetition():
    assert steering.distinct_words(["a b c d"]) == 1.0
    assert steering.distinct_words(["très très très très"]) == 0.25
    assert steering.distinct_words(["a a", "a b"]) == pytest.approx(0.75)  # the mean over texts
    assert steering.distinct_words("x x x y") == 0.5  # one text
    assert steering.distinct_words([""]) == 1.0  # no words, nothing repeated
    with pytest.raises(ValueError, match="at least one text"):
        steering.distinct_words([])


def test_side_by_side_escapes_every_text_and_checks_lengths():
    hostile = '<script>alert(1)</script> <img src=x onerror="alert(2)"> &amp;'
    html = display.side_by_side([hostile], plain=[hostile], steered=["ok"]).to_html()
    assert "<script>" not in html and "<img" not in html
    assert "&lt;script&gt;" in html and "&amp;amp;" in html  # shown as the text it is
    assert "ok" in html
    with pytest.raises(ValueError, match="one per prompt"):
        display.side_by_side(["a", "b"], plain=["x"])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"top_p": float("nan")}, "top_p must be finite"),
        ({"top_p": 0.0}, r"0 < top_p <= 1"),
        ({"top_p": 1.5}, r"0 < top_p <= 1"),
        ({"temperature": 0.0}, "temperature > 0"),
        ({"temperature": float("inf")}, "temperature must be finite"),
    ],
)
def test_sampling_settings_are_checked_before_generating(mini, kwargs, match):
    model, tok = mini
    with pytest.raises(ValueError, match=match):
        steering.generate(model, tok, "Hello", 2, do_sample=True, **kwargs)
    assert hooks.active_hooks(model) == 0


def test_lens_sizes_are_checked(mini, sae):

    model, tok = mini
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="k must be an int in 1"):
            lm.logit_lens(model, sae.W_dec[0], k=bad)
        with pytest.raises(ValueError, match="n must be an int in 1"):
            cards.neighbours(sae, 0, n=bad)
        with pytest.raises(ValueError, match="n must be an int in 1"):
            cards.lens_table(model, tok, sae.W_dec[0], n=bad)
