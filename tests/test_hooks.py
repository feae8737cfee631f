import contextlib
from types import SimpleNamespace

import pytest
import torch

from saehelpers import hooks


def logits(model, ids, mask):
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask).logits


def hook_count(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


@pytest.fixture(scope="module")
def clean(mini, prompt_ids):
    model, _ = mini
    ids, mask = prompt_ids
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    return out.logits, out.hidden_states


@pytest.mark.parametrize("layer", [0, 6, 16])
def test_capture_equals_hidden_states(mini, prompt_ids, clean, layer):
    model, _ = mini
    ids, mask = prompt_ids
    _, hidden = clean
    # blocks.L.hook_resid_post == hidden_states[L + 1] (index 0 is the embeddings).
    acts = hooks.resid_post(model, ids, [layer], mask)
    assert torch.equal(acts[layer], hidden[layer + 1])
    with torch.no_grad(), hooks.capture(model, [layer]) as full:
        model(input_ids=ids, attention_mask=mask)
    assert torch.equal(full[layer], hidden[layer + 1])


def test_capture_several_layers_one_pass_stops_early(mini, prompt_ids, clean):
    model, _ = mini
    ids, mask = prompt_ids
    ran = []
    later = hooks.decoder_layers(model)[7].register_forward_hook(lambda *a: ran.append(7))
    try:
        acts = hooks.resid_post(model, ids, [2, 6], mask)
    finally:
        later.remove()
    assert ran == []  # layer 7 never ran: the pass stopped after layer 6
    assert torch.equal(acts[2], clean[1][3]) and torch.equal(acts[6], clean[1][7])
    assert hooks.active_hooks(model) == 0


def contexts(model):
    v = torch.randn(model.config.hidden_size)
    return {
        "capture": lambda: hooks.capture(model, [3]),
        "capture_stop": lambda: hooks.capture(model, [3], stop=True),
        "add_vector": lambda: hooks.add_vector(model, 3, v),
        "replace": lambda: hooks.replace(model, 3, lambda h: 2 * h),
    }


@pytest.mark.parametrize("name", ["capture", "capture_stop", "add_vector", "replace"])
def test_exception_leaves_model_clean(mini, prompt_ids, clean, name):
    model, _ = mini
    ids, mask = prompt_ids
    before = hook_count(model)
    with pytest.raises(KeyError, match="boom"):
        with contexts(model)[name]():
            if name != "capture_stop":  # an early-stopping forward ends the block by design
                model(input_ids=ids[:, :3])
            raise KeyError("boom")
    assert hooks.active_hooks(model) == 0 and hook_count(model) == before
    assert torch.equal(logits(model, ids, mask), clean[0])


def test_exception_inside_hook_leaves_model_clean(mini, prompt_ids, clean):
    model, _ = mini
    ids, mask = prompt_ids

    def bad(h):
        raise RuntimeError("inside the hook")

    with pytest.raises(RuntimeError, match="inside the hook"):
        with hooks.replace(model, 4, bad):
            model(input_ids=ids, attention_mask=mask)
    with pytest.raises(ValueError, match=r"must return a tensor of shape \(1, \d+, 640\)"):
        with hooks.replace(model, 4, lambda h: h[..., :10]):
            model(input_ids=ids, attention_mask=mask)
    assert hooks.active_hooks(model) == 0
    assert torch.equal(logits(model, ids, mask), clean[0])


def test_add_vector_changes_only_chosen_positions(mini, prompt_ids, clean):
    model, _ = mini
    ids, mask = prompt_ids
    v = torch.randn(model.config.hidden_size)
    base = clean[1][5 + 1]
    with torch.no_grad(), hooks.add_vector(model, 5, v), hooks.capture(model, [5], stop=True) as acts:
        model(input_ids=ids, attention_mask=mask)
    assert torch.equal(acts[5][:, 0], base[:, 0])  # BOS left alone by default
    torch.testing.assert_close(acts[5][:, 1:], base[:, 1:] + v, rtol=1e-6, atol=1e-6)
    with torch.no_grad(), hooks.add_vector(model, 5, v, positions=[2, 4]), hooks.capture(model, [5]) as acts:
        model(input_ids=ids, attention_mask=mask)
    delta = acts[5] - base
    changed = delta.abs().amax(-1)[0] > 0
    assert changed.nonzero().flatten().tolist() == [2, 4]
    torch.testing.assert_close(acts[5][0, [2, 4]], base[0, [2, 4]] + v, rtol=1e-6, atol=1e-6)
    assert hooks.active_hooks(model) == 0


def test_add_vector_steers_every_generated_position(mini, prompt_ids):
    model, tok = mini
    ids, mask = prompt_ids
    layer = 6
    # A fixed, strong direction (not a random one, whose effect on greedy text is luck): half the typical
    # residual norm along the " banana" embedding, which the tied unembedding turns into " banana" logits.
    banana = tok.encode(" banana", add_special_tokens=False)[0]
    emb = model.get_input_embeddings().weight[banana].detach()
    with torch.no_grad():
        norm = hooks.resid_post(model, ids, [layer])[layer][0, 1:].norm(dim=-1).median()
    v = 0.5 * norm * emb / emb.norm()
    with torch.no_grad():
        plain = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=6, do_sample=False)
        with hooks.add_vector(model, layer, v), hooks.capture(model, [layer], keep_all=True) as acts:
            steered = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=6, do_sample=False)
    assert hooks.active_hooks(model) == 0
    assert not torch.equal(plain, steered)  # the text changed
    assert banana in steered[0, ids.shape[1] :].tolist() and banana not in plain[0].tolist()
    # One call for the prompt, then one per new token with the KV cache (the last token is not fed back).
    got = torch.cat(acts.history[layer], dim=1)
    assert len(acts.history[layer]) == 6 and got.shape[1] == steered.shape[1] - 1
    # Layer L's own output depends only on layers <= L, so clean + v must be what every step saw.
    with torch.no_grad(), hooks.capture(model, [layer]) as ref:
        model(input_ids=steered[:, :-1])
    torch.testing.assert_close(got[:, 1:], ref[layer][:, 1:] + v, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(got[:, 0], ref[layer][:, 0], rtol=1e-4, atol=1e-4)


def test_splice_sae_identity_like_replace(mini, prompt_ids, clean):
    model, _ = mini
    ids, mask = prompt_ids

    class Identity(torch.nn.Module):
        """An SAE that reconstructs perfectly: the spliced model is the clean model."""

        dtype, device = torch.float32, "cpu"
        cfg = SimpleNamespace(d_in=640, metadata=SimpleNamespace(hook_name="blocks.8.hook_resid_post"))

        def encode(self, x):
            return x

        def decode(self, a):
            return a

    with torch.no_grad(), hooks.splice_sae(model, Identity()):
        out = model(input_ids=ids, attention_mask=mask).logits
    assert torch.equal(out, clean[0])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(vector=torch.zeros(3)), r"shape \(640,\)"),
        (dict(vector=torch.full((640,), float("nan"))), "NaN or inf"),
        (dict(vector=torch.zeros(640, dtype=torch.long)), "floating point"),
        (dict(layer=18), r"0\.\.17"),
        (dict(layer=-1), r"0\.\.17"),
        (dict(positions=[-1]), "positions must be"),
        (dict(positions=[]), "positions must be"),
    ],
)
def test_add_vector_bad_input(mini, kwargs, match):
    model, _ = mini
    args = dict(layer=3, vector=torch.zeros(640)) | kwargs
    with pytest.raises(ValueError, match=match):
        with hooks.add_vector(model, **args):
            pass
    assert hooks.active_hooks(model) == 0


def test_capture_bad_layers(mini):
    model, _ = mini
    with pytest.raises(ValueError, match=r"0\.\.17"):
        with hooks.capture(model, [2, 99]):
            pass
    with pytest.raises(ValueError, match="at least one layer"):
        hooks.resid_post(model, torch.tensor([[2, 3]]), [])
    assert hooks.active_hooks(model) == 0


def test_every_splice_keeps_bos_clean_by_default(mini, prompt_ids):
    """hooks.replace, hooks.splice_sae and ablation.splice default to BOS's clean value, as sae_stats,
    prefix_loss and every published number do: a caller who forgets the flag no longer splices BOS."""
    import saehelpers
    from saehelpers import ablation, get_release

    model, _ = mini
    ids, mask = prompt_ids
    layer = get_release("mini").layers[1]
    sae = saehelpers.load_sae(layer, "mini", dtype="float32")
    seen = {}

    def resid_after(ctx):
        with torch.no_grad(), ctx, hooks.capture(model, [layer]) as acts:
            model(input_ids=ids, attention_mask=mask)
        return acts[layer]

    clean = resid_after(contextlib.nullcontext())
    doubled = resid_after(hooks.replace(model, layer, lambda h: 2 * h))
    assert torch.equal(doubled[:, 0], clean[:, 0]) and torch.allclose(doubled[:, 1:], 2 * clean[:, 1:])
    for name, ctx in {
        "splice_sae": hooks.splice_sae(model, sae),
        "ablation.splice": ablation.splice(model, sae, keep_error=False),
    }.items():
        seen[name] = resid_after(ctx)
        assert torch.equal(seen[name][:, 0], clean[:, 0]), name  # BOS untouched
        assert not torch.allclose(seen[name][:, 1:], clean[:, 1:]), name  # the rest spliced
    with_bos = resid_after(hooks.splice_sae(model, sae, include_bos=True))
    assert not torch.allclose(with_bos[:, 0], clean[:, 0])  # asked for, BOS is spliced too


def test_edit_is_the_position_aware_primitive(mini, prompt_ids, clean):
    """hooks.edit hands fn each token's absolute position: the primitive ablation builds on (no private hooks)."""
    model, _ = mini
    ids, mask = prompt_ids
    got = {}

    def fn(h, pos, bos):
        got["pos"], got["bos"] = pos, bos
        return torch.where(hooks.position_mask(pos, [2, 3], False, bos)[..., None], h + 1, h)

    with torch.no_grad(), hooks.edit(model, 4, fn), hooks.capture(model, [4]) as acts:
        model(input_ids=ids, attention_mask=mask)
    assert torch.equal(got["pos"], torch.arange(ids.shape[1]).expand_as(ids))
    assert torch.equal(got["bos"], ids == model.config.bos_token_id)
    diff = acts[4] - clean[1][5]
    assert torch.allclose(diff[:, [2, 3]], torch.ones_like(diff[:, [2, 3]]), atol=1e-5)
    assert diff[:, [0, 1, *range(4, ids.shape[1])]].abs().max() == 0
    assert hooks.active_hooks(model) == 0
    with pytest.raises(ValueError, match=r"fn must be a function, e\.g\. lambda h, pos, bos: h"):
        hooks.edit(model, 4, "h + 1").__enter__()


def test_no_code_drops_bos_by_position():
    """BOS is found by its token id everywhere (metrics.token_mask, activations.bos_id): no module or script
    drops position 0 (`[0, 1:]`, `keep[:, 0] = False`), which is wrong for rows cut from a text's middle.
    Exercise 00's named mistake `_first_position` is the one place that does it, on purpose."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    drop = re.compile(r"\[0, 1:\]|\[:, 0\] = False|\[:, 1:\]\.flatten")
    found = [
        f"{p.relative_to(root)}:{i}: {line.strip()}"
        for p in [*root.glob("saehelpers/**/*.py"), *root.glob("scripts/*.py")]
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if drop.search(line) and "_first_position" not in line and "def _first_position" not in line
    ]
    mistake = [f for f in found if "exercises/lesson00.py" in f]
    assert len(mistake) == 1 and found == mistake, found


def test_bos_is_found_by_token_id_in_a_row_cut_from_the_middle(mini):
    """A row that starts mid-text and holds BOS later: BOS is the token with BOS's id, not position 0."""
    model, tok = mini
    text = tok("The cat sat on the mat and the dog ran", add_special_tokens=False).input_ids
    ids = torch.tensor([[*text[:3], tok.bos_token_id, *text[3:6]]])
    with torch.no_grad(), hooks.capture(model, [4]) as acts:
        model(input_ids=ids)
    clean = acts[4]
    with torch.no_grad(), hooks.replace(model, 4, lambda h: 2 * h), hooks.capture(model, [4]) as acts:
        model(input_ids=ids)
    kept = (acts[4] == clean).all(-1)[0]
    assert kept.tolist() == [i == 3 for i in range(ids.shape[1])]  # only the BOS token kept its value


def test_modules_use_no_other_modules_private_helpers():
    """A helper one module needs from another is public (named, documented, tested): no `module._name`
    reached across modules, no `from .module import _name`.
    The atlas subpackage (saehelpers/atlas) follows the same rule."""
    import ast
    from pathlib import Path

    import saehelpers

    root = Path(saehelpers.__file__).parent
    modules = {p.stem for p in root.glob("*.py")}
    files = sorted(root.glob("*.py")) + sorted((root / "atlas").glob("*.py"))
    found = []
    for path in files:
        rel = str(path.relative_to(root))
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in modules
            ):
                names = [node.attr]
            elif isinstance(node, ast.ImportFrom) and node.level >= 1:
                names = [a.name for a in node.names]
            names = [n for n in names if n.startswith("_") and not n.startswith("__")]
            found += [(rel, n) for n in names]
    assert found == []
