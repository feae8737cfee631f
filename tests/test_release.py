import json
import re
from pathlib import Path

import pytest

import saehelpers
from saehelpers import get_release, release
from saehelpers.release import CARD_EXPLAINED_VARIANCE

ROOT = Path(__file__).resolve().parents[1]


def test_real_release_facts():
    rel = saehelpers.get_release("gemma-3-1b")
    assert rel.model_id == "google/gemma-3-1b-pt"
    assert rel.saelens_release == "gemma-3-1b-res-matryoshka-dc"
    assert rel.layers == tuple(range(25))
    assert (rel.d_model, rel.d_sae, rel.k) == (1152, 32768, 40)
    assert rel.matryoshka_widths == (128, 512, 2048, 8192, 32768)
    assert rel.groups == [(0, 128), (128, 512), (512, 2048), (2048, 8192), (8192, 32768)]
    assert rel.sae_id(12) == rel.hook_name(12) == "blocks.12.hook_resid_post"
    assert rel.group_of(0) == 0 and rel.group_of(127) == 0 and rel.group_of(128) == 1
    assert rel.group_of(32767) == 4
    assert rel.explained_variance[24] == pytest.approx(0.7452)
    assert "pile" in rel.text_source.lower()


def test_release_matches_saelens_registry():
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    rel = saehelpers.get_release("gemma-3-1b")
    entry = get_pretrained_saes_directory()[rel.saelens_release]
    assert entry.repo_id == rel.repo_id
    assert entry.model == rel.model_id
    assert sorted(entry.saes_map) == sorted(rel.sae_id(layer) for layer in rel.layers)


def test_readme_table_is_the_card():
    text = (ROOT / "README.md").read_text()
    block = text.split("<!-- real-table -->")[1].split("<!-- /real-table -->")[0]
    rows = re.findall(r"^\| (\d+) \| (\S+) \| (\d+) \| (\d+) \| ([\d.]+) \|$", block, re.M)
    rel = saehelpers.get_release("gemma-3-1b")
    assert [int(r[0]) for r in rows] == list(rel.layers)
    for layer, sae_id, width, l0, ev in rows:
        assert sae_id == rel.sae_id(int(layer))
        assert int(width) == rel.d_sae and int(l0) == rel.k
        assert float(ev) == CARD_EXPLAINED_VARIANCE[int(layer)]


@pytest.mark.parametrize("bad", [-1, 25, "12", 3.5, True, None])
def test_bad_layer_names_valid_layers(bad):
    rel = saehelpers.get_release("gemma-3-1b")
    with pytest.raises(ValueError, match=r"0\.\.24"):
        rel.sae_id(bad)


def test_layer_25_says_model_has_it_but_no_sae():
    with pytest.raises(ValueError, match="26 layers"):
        saehelpers.get_release("gemma-3-1b").check_layer(25)


def test_mini_layer_without_sae_lists_layers():
    rel = saehelpers.get_release("mini")
    missing = next(i for i in range(rel.n_model_layers) if i not in rel.layers)
    with pytest.raises(ValueError) as e:
        rel.check_layer(missing)
    for layer in rel.layers:
        assert str(layer) in str(e.value)


def test_mini_release_shape():
    rel = saehelpers.get_release("mini")
    assert len(rel.layers) == 4 and rel.d_model == 640 and rel.n_model_layers == 18
    widths = rel.matryoshka_widths
    assert len(widths) == 5 and widths[-1] == rel.d_sae
    assert all(b == 4 * a for a, b in zip(widths, widths[1:]))

    # The facts come from the shipped release.json, not from defaults in the code.
    meta = json.loads((release.mini_dir() / "release.json").read_text())
    assert (rel.layers, rel.k, rel.d_sae) == (tuple(meta["layers"]), meta["k"], meta["d_sae"])


def test_mini_without_release_json_says_how_to_fix(monkeypatch, tmp_path):
    monkeypatch.setattr(release, "mini_dir", lambda: tmp_path)
    with pytest.raises(FileNotFoundError, match="build_mini_release.py"):
        saehelpers.get_release("mini")


@pytest.mark.parametrize("bad", ["gemma-3-2b", "Mini", "", 3])
def test_unknown_preset(bad):
    with pytest.raises(ValueError, match="Valid presets: 'gemma-3-1b', 'mini'"):
        saehelpers.get_release(bad)


def test_no_import_circle_between_modules():
    """The package's module-level imports form no cycle (release.py, the facts, imports only checks)."""
    import ast
    from graphlib import TopologicalSorter
    from pathlib import Path

    import saehelpers

    graph = {}
    for path in Path(saehelpers.__file__).parent.glob("*.py"):
        deps = set()
        for node in ast.parse(
            path.read_text()
        ).body:  # module level only: imports inside functions are deferred
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                deps |= {node.module} if node.module else {a.name for a in node.names}
        graph[path.stem] = deps
    list(TopologicalSorter(graph).static_order())  # raises CycleError on a circle
    assert graph["release"] == {"checks"}


@pytest.mark.parametrize("bad", [3, 1.5, ["mini"], object()])
def test_as_release_takes_a_release_or_a_preset_name(bad):
    from saehelpers.release import as_release

    assert as_release("mini") == get_release("mini") and as_release(get_release("mini")).name == "mini"
    with pytest.raises(ValueError, match=r"release must be a Release .* or a preset name"):
        as_release(bad)


def _public_functions_taking_a_release():
    """(qualified name, function) of every public function or method of saehelpers with a `release` or
    `preset` parameter."""
    return _public_functions(lambda params: bool({"release", "preset"} & set(params)))


def _public_functions(wanted):
    """(qualified name, function) of every public function or method of saehelpers (the atlas and the
    exercises' checkers aside) whose parameter names satisfy `wanted`."""
    import importlib
    import inspect
    import pkgutil

    found = {}
    for info in pkgutil.walk_packages(saehelpers.__path__, "saehelpers."):
        if info.name.endswith("__main__") or info.name.startswith(
            ("saehelpers.atlas", "saehelpers.exercises")
        ):
            continue  # the atlas and the exercises' checkers have tests of their own
        mod = importlib.import_module(info.name)
        for name in getattr(mod, "__all__", [n for n in vars(mod) if not n.startswith("_")]):
            obj = getattr(mod, name, None)
            if getattr(obj, "__module__", None) != mod.__name__:
                continue
            members = [(name, obj)] if inspect.isfunction(obj) else []
            if inspect.isclass(obj):
                members = [(f"{name}.{k}", v) for k, v in vars(obj).items() if inspect.isfunction(v)]
                members = [(k, v) for k, v in members if not k.split(".")[-1].startswith("_")]
            for qual, fn in members:
                if wanted(list(inspect.signature(fn).parameters)):
                    found[f"{info.name.removeprefix('saehelpers.')}.{qual}"] = fn
    return found


def test_every_public_release_argument_takes_a_release_or_a_preset_name(mini, monkeypatch):
    """CONTRIBUTING's rule, over the whole public API: where a function takes `release` (or `preset`), a
    Release and its preset name give the same result. A new function with such an argument must be added here."""
    import contextlib
    import io

    import pandas as pd
    import torch
    import transformers

    from saehelpers import (
        ablation,
        budgets,
        cards,
        checks,
        features,
        loading,
        matryoshka,
        presets,
        text,
        toy,
        widgets,
    )
    from saehelpers.tokens import text_batches

    monkeypatch.setenv("SAEHELPERS_WIDGETS", "0")
    # What is checked is which preset each function reads: the model's own loading and generation are
    # tested elsewhere, so these hand back the loaded model and the prompt (seconds each, not half a minute).
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", lambda *a, **k: mini[0])
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: mini[1])
    monkeypatch.setattr(widgets, "generate", lambda model, tok, prompt, n: prompt)
    model, tok = mini
    rel = get_release("mini")
    sae = saehelpers.load_sae(rel.layers[0], "mini", dtype="float32")
    ids = tok(["The cat sat on the mat."], return_tensors="pt")
    x = torch.randn(6, rel.d_model)
    acts = sae.encode(x)
    stats = features.stream_stats(
        model, sae, text_batches(tok, ["A cat.", "The dog ran home."]), k=2, progress=False
    )
    task = ablation.make_task(tok, [("The capital of France is", " Paris", " London")])
    world = toy.make_toy(seed=0)
    feats, tx = world.sample(200, seed=1)
    tsae = toy.train(world, True, seed=1, steps=20, progress=False)

    def run_model(ctx):
        with ctx:
            return model(**ids).logits

    def printed(fn, *args):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            fn(*args)
        return out.getvalue()

    calls = {
        "ablation.ablate_group": lambda r: run_model(ablation.ablate_group(model, sae, r, 0)),
        "ablation.ablate_outside": lambda r: run_model(
            ablation.ablate_outside(model, sae, r, rel.matryoshka_widths[0])
        ),
        "ablation.attribute": lambda r: ablation.attribute(model, sae, task, tokenizer=tok, release=r),
        "budgets.get_budget": budgets.get_budget,
        "cards.feature_card": lambda r: str(
            cards.feature_card(model, tok, sae, r, stats, int(stats.counts.argmax()))
        ),
        "features.contrast": lambda r: features.contrast(model, tok, sae, r, ["A cat."], ["A dog."]),
        "features.feature_stats": lambda r: (
            features.feature_stats(
                model, tok, sae, r, n_tokens=64, k=2, batch_size=2, seq_len=16, cache=False, progress=False
            ).counts
        ),
        "loading.check_memory": lambda r: loading.check_memory(r, "cpu", torch.float32),
        "checks.check_sae": lambda r: checks.check_sae(sae, r, model),
        "loading.iter_saes": lambda r: [
            s.cfg.metadata.hook_name for s in loading.iter_saes(rel.layers[0], r)
        ],
        "loading.load_model": lambda r: type(loading.load_model(r, dtype="float32")[0]).__name__,
        "loading.load_sae": lambda r: loading.load_sae(rel.layers[0], r, dtype="float32").W_dec,
        "loading.sae_path": lambda r: loading.sae_path(rel.layers[0], r),
        "matryoshka.check_width": lambda r: matryoshka.check_width(r, rel.matryoshka_widths[0]),
        "matryoshka.check_widths": lambda r: matryoshka.check_widths(r),
        "matryoshka.group_of": lambda r: matryoshka.group_of(r, rel.d_sae - 1),
        "matryoshka.groups": matryoshka.groups,
        "matryoshka.hierarchy": lambda r: matryoshka.hierarchy(sae, r, acts, [0], min_child_fires=0),
        "matryoshka.latent_groups": matryoshka.latent_groups,
        "matryoshka.parent_children": lambda r: matryoshka.parent_children(
            sae, r, acts, 0, min_child_fires=0
        ),
        "matryoshka.prefix_decode": lambda r: matryoshka.prefix_decode(sae, r, acts),
        "matryoshka.prefix_loss": lambda r: matryoshka.prefix_loss(
            model, sae, r, [ids], rel.d_sae, progress=False
        ),
        "matryoshka.prefix_metrics": lambda r: matryoshka.prefix_metrics(sae, r, x),
        "presets.choose_preset": lambda r: presets.choose_preset(r, announce=False),
        "presets.current_preset": presets.current_preset,
        "release.as_release": release.as_release,
        "release.check_preset": release.check_preset,
        "release.get_release": get_release,
        "release.remember_choice": release.remember_choice,
        "text.iter_texts": lambda r: list(text.iter_texts(r, limit=2)),
        "text.token_batches": lambda r: next(text.token_batches(tok, r, 2, 16)),
        "toy.absorption": lambda r: toy.absorption(tsae, world, feats, tx, r),
        "widgets.explorer": lambda r: repr(widgets.explorer(model, tok, sae, r, 0, stats=stats)),
        "widgets.steering_panel": lambda r: printed(
            widgets.steering_panel,
            model,
            tok,
            r,
            rel.layers[0],
            0,
            1.0,
            "The cat",
            2,
            {rel.layers[0]: sae},
            [ids],
        ),
    }
    assert set(calls) == set(_public_functions_taking_a_release())
    for name, call in calls.items():
        by_name, by_release = call("mini"), call(rel)
        if isinstance(by_name, dict) and not isinstance(by_name, pd.DataFrame):
            assert by_name.keys() == by_release.keys(), name
            by_name, by_release = list(by_name.values()), list(by_release.values())
        if isinstance(by_name, pd.DataFrame):
            pd.testing.assert_frame_equal(by_name, by_release)
        elif isinstance(by_name, (list, tuple)) and by_name and isinstance(by_name[0], torch.Tensor):
            assert all(torch.equal(a, b) for a, b in zip(by_name, by_release)), name
        elif isinstance(by_name, torch.Tensor):
            assert torch.equal(by_name, by_release), name
        else:
            assert by_name == by_release, name


def test_sae_sizes_are_the_sizes_on_disk():
    """Notebook 01 prints release.sae_mb: the mini files as shipped (bfloat16: 5 MB, not float32's 11 MB),
    the real release's float32 files as the Hub serves them."""
    from saehelpers.release import mini_dir

    rel = get_release("mini")
    on_disk = [
        sum(f.stat().st_size for f in (mini_dir() / rel.sae_id(layer)).iterdir()) / 1e6
        for layer in rel.layers
    ]
    assert rel.sae_mb == pytest.approx(on_disk[0]) and max(on_disk) - min(on_disk) < 0.01
    float32 = (2 * rel.d_model * rel.d_sae + 2 * rel.d_sae + rel.d_model) * 4 / 1e6
    assert rel.sae_mb < 0.6 * float32  # the shipped files are not float32
    real = get_release("gemma-3-1b")
    assert real.sae_mb == pytest.approx((2 * 1152 * 32768 + 2 * 32768 + 1152) * 4 / 1e6)  # 302 MB


def test_every_public_function_keeps_one_argument_order():
    """CONTRIBUTING: `model, tokenizer, sae, release, ...`, leaving out what a function does not use. The ones
    a function requires come first, in that order (token_changes took the tokenizer after the logits); an
    optional one may come later or keyword-only (attribute's tokenizer and release now are)."""
    import inspect

    order = ["model", "tokenizer", "sae", "release"]
    bad = {}
    for name, fn in _public_functions(lambda params: bool(set(order) & set(params))).items():
        params = [
            p.name
            for p in inspect.signature(fn).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
            and p.default is p.empty
            and p.name != "self"
        ]
        ours = [p for p in params if p in order]
        if params[: len(ours)] != ours or ours != sorted(ours, key=order.index):
            bad[name] = params
    assert bad == {}
