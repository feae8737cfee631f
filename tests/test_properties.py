"""Property: any nesting of saehelpers' model-editing contexts leaves the model exactly as it was.

Hypothesis builds random stacks of `capture`, `steer`, `clamp`, `ablate`, `splice`, `splice_sae`,
`add_vector` and `replace`, sometimes with an exception raised in the block or inside the forward pass
at a random depth, or a bad argument (ValueError while entering) somewhere in the stack. After each
case the model has no saehelpers hooks left and its logits on a fixed prompt are bitwise equal to the
clean logits. A tiny random Gemma 3 and tiny random JumpReLU SAEs keep 1,000 cases to seconds: the
clean-up does not depend on the model's size or on trained weights.
"""

import math
from contextlib import ExitStack

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sae_lens import JumpReLUSAE, JumpReLUSAEConfig
from transformers import Gemma3ForCausalLM, Gemma3TextConfig

from saehelpers import ablation, hooks, release, steering

N_LAYERS, D_MODEL, D_SAE = 3, 32, 16


class Boom(Exception):
    """The exception the cases raise; no context may swallow it."""


@pytest.fixture(scope="module")
def world():
    """The tiny model, one SAE per layer, two steering vectors, a prompt and its clean logits."""
    # One thread: on 32-wide matrices extra threads only add synchronisation (10x slower on a busy CPU).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    cfg = Gemma3TextConfig(
        vocab_size=128, hidden_size=D_MODEL, intermediate_size=64, num_hidden_layers=N_LAYERS,
        num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=64,
        attn_implementation="eager",
    )  # fmt: skip
    model = Gemma3ForCausalLM(cfg).eval()
    ids = torch.randint(1, 128, (2, 8))
    resid = hooks.resid_post(model, ids, list(range(N_LAYERS)))
    saes = []
    for layer in range(N_LAYERS):
        sae = JumpReLUSAE(JumpReLUSAEConfig(d_in=D_MODEL, d_sae=D_SAE))
        sae.cfg.metadata.hook_name = release.hook_name(layer)
        with torch.no_grad():  # thresholds at each latent's 70th percentile: every latent fires somewhere
            pre = (resid[layer][:, 1:].flatten(0, 1) - sae.b_dec) @ sae.W_enc + sae.b_enc
            sae.threshold.copy_(torch.quantile(pre, 0.7, dim=0).clamp(min=0) + 1e-3)
        saes.append(sae.eval())
    vectors = torch.randn(2, D_MODEL)
    yield model, saes, vectors, ids, forward(model, ids)
    torch.set_num_threads(threads)


def forward(model, ids):
    with torch.no_grad():
        return model(input_ids=ids, use_cache=False).logits


# ---------------------------------------------------------------- what to enter

LAYER = st.integers(0, N_LAYERS - 1)
FEATURE = st.integers(0, D_SAE - 1)
FEATURES = FEATURE | st.lists(FEATURE, min_size=1, max_size=4)  # ablate takes an id or a list
COEF = st.floats(-8, 8, allow_subnormal=False)
FNS = {"double": lambda h: 2 * h, "flip": lambda h: h.flip(1), "zero": torch.zeros_like}


def specs(layer=LAYER, feature=FEATURE, coef=COEF, features=FEATURES):
    """kind -> strategy for that context as plain data (kind, *args), so hypothesis prints readable examples."""
    return {
        "capture": st.tuples(
            st.just("capture"), layer | st.lists(layer, min_size=1, max_size=3), st.booleans()
        ),
        "steer_feature": st.tuples(st.just("steer_feature"), LAYER, feature, coef),
        "steer_vector": st.tuples(st.just("steer_vector"), layer, st.integers(0, 1), coef),
        "clamp": st.tuples(st.just("clamp"), LAYER, feature, coef),
        "ablate": st.tuples(st.just("ablate"), LAYER, features, st.booleans()),
        "splice": st.tuples(st.just("splice"), LAYER, st.booleans()),
        "splice_sae": st.tuples(st.just("splice_sae"), LAYER),
        "add_vector": st.tuples(st.just("add_vector"), layer, st.integers(0, 1)),
        "replace": st.tuples(st.just("replace"), layer, st.sampled_from(sorted(FNS))),
    }


GOOD = st.one_of(*specs().values())
# Each bad spec has one argument out of range or not finite, so entering it must raise ValueError.
BAD_LAYER = specs(layer=st.sampled_from([-1, N_LAYERS]))
BAD_FEATURE = specs(feature=st.sampled_from([-1, D_SAE]))
BAD_COEF = specs(coef=st.sampled_from([math.nan, math.inf, -math.inf]))
BAD = st.one_of(
    *(BAD_LAYER[k] for k in ("capture", "steer_vector", "add_vector", "replace")),
    BAD_FEATURE["steer_feature"],
    BAD_FEATURE["clamp"],
    specs(features=st.lists(FEATURE, max_size=2).map(lambda f: [*f, D_SAE]))["ablate"],
    *(BAD_COEF[k] for k in ("steer_feature", "steer_vector", "clamp")),
)


def enter(spec, model, saes, vectors):
    kind, *args = spec
    sae = saes[args[0]] if kind in ("steer_feature", "clamp", "ablate", "splice", "splice_sae") else None
    if kind == "capture":
        return hooks.capture(model, args[0], stop=args[1])
    if kind == "steer_feature":
        return steering.steer(model, sae, args[1], args[2])
    if kind == "steer_vector":
        return steering.steer(model, args[0], vectors[args[1]], args[2])
    if kind == "clamp":
        return steering.clamp(model, sae, args[1], args[2])
    if kind == "ablate":
        return ablation.ablate(model, sae, args[1], keep_error=args[2])
    if kind == "splice":
        return ablation.splice(model, sae, keep_error=args[1])
    if kind == "splice_sae":
        return hooks.splice_sae(model, sae)
    if kind == "add_vector":
        return hooks.add_vector(model, args[0], vectors[args[1]])
    return hooks.replace(model, args[0], FNS[args[1]])


@st.composite
def cases(draw):
    """(stack, bad_at, depth, throw): enter stack[:depth], run the model, then `throw` (None, "body" or "hook").

    A bad spec is inserted at stack[bad_at]; it raises only if it is reached (bad_at < depth).
    """
    stack = draw(st.lists(GOOD, max_size=6))
    bad_at = draw(st.none() | st.integers(0, len(stack)))
    if bad_at is not None:
        stack.insert(bad_at, draw(BAD))
    throw = draw(st.sampled_from([None, "body", "hook"]))
    depth = len(stack) if throw is None else draw(st.integers(0, len(stack)))
    hook_layer = draw(LAYER)
    return stack, bad_at, depth, (throw, hook_layer)


def expected(stack, bad_at, depth, throw):
    """What leaves the `with` block: the first of ValueError, Boom or an early stop (swallowed: None)."""
    if bad_at is not None and bad_at < depth:
        return ValueError
    where, hook_layer = throw
    # A capture with stop=True ends the forward pass after its deepest layer, before any later hook or the
    # body's raise; a hook raising at the same layer was entered after it, so runs after it.
    stops = [
        max([s[1]] if isinstance(s[1], int) else s[1]) for s in stack[:depth] if s[0] == "capture" and s[2]
    ]
    if stops and not (where == "hook" and hook_layer < min(stops)):
        return None
    return Boom if where else None


def boom(h):
    raise Boom("inside the forward pass")


@settings(
    max_examples=1000,
    deadline=None,
    derandomize=True,  # the same cases on every run (derandomize also turns the example database off)
    suppress_health_check=[HealthCheck.function_scoped_fixture],  # `world` is module-scoped and read-only
)
@given(case=cases())
def test_nested_contexts_leave_the_model_clean(world, case):
    model, saes, vectors, ids, clean = world
    stack, bad_at, depth, throw = case
    got = None
    try:
        with ExitStack() as es:
            for spec in stack[:depth]:
                es.enter_context(enter(spec, model, saes, vectors))
            if throw[0] == "hook":
                es.enter_context(hooks.replace(model, throw[1], boom))
            forward(model, ids)
            if throw[0] == "body":
                raise Boom("in the with block")
    except (ValueError, Boom) as e:
        got = type(e)
    assert got is expected(stack, bad_at, depth, throw)
    assert hooks.active_hooks(model) == 0
    assert torch.equal(forward(model, ids), clean)


@pytest.mark.parametrize(
    "spec",
    [
        ("steer_feature", 1, 3, 2.0),
        ("steer_vector", 0, 1, 2.0),
        ("clamp", 2, 5, 3.0),
        ("ablate", 1, [0, 1, 2, 3], True),
        ("splice", 0, False),
        ("splice_sae", 2),
        ("add_vector", 1, 0),
        ("replace", 0, "flip"),
    ],
)
def test_edits_change_the_logits_while_active(world, spec):
    """The property is not vacuous: inside its block each edit does change the tiny model's logits."""
    model, saes, vectors, ids, clean = world
    with enter(spec, model, saes, vectors):
        assert not torch.equal(forward(model, ids), clean)
