import json
import re
from pathlib import Path

import pytest

import saehelpers
from saehelpers import get_release, release
from saehelpers.presets import Choice, choose_preset
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


def test_choice_explicit_and_env(monkeypatch, capsys):
    assert choose_preset("mini").name == "mini"
    assert "asked for explicitly" in capsys.readouterr().out
    monkeypatch.setenv("SAEHELPERS_PRESET", "gemma-3-1b")
    choice = choose_preset()
    out = capsys.readouterr().out.strip()
    assert choice == Choice("gemma-3-1b", "SAEHELPERS_PRESET=gemma-3-1b is set")
    assert out.count("\n") == 0 and "preset 'gemma-3-1b'" in out
    monkeypatch.setenv("SAEHELPERS_PRESET", "big")
    with pytest.raises(ValueError, match="Valid values: gemma-3-1b, mini"):
        choose_preset()


def test_auto_choice_offline_without_cache_is_mini(monkeypatch, tmp_path, capsys):
    from huggingface_hub import constants

    monkeypatch.delenv("SAEHELPERS_PRESET", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    choice = choose_preset()
    assert choice.name == "mini"
    assert "not in the local Hugging Face cache" in choice.reason
    assert capsys.readouterr().out.startswith("saehelpers: preset 'mini'")


def test_auto_choice_without_token_online_is_mini(monkeypatch, tmp_path):
    from huggingface_hub import constants

    import saehelpers.presets

    monkeypatch.delenv("SAEHELPERS_PRESET", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(saehelpers.presets, "hf_token", lambda: None)
    choice = choose_preset(announce=False)
    assert choice.name == "mini" and "no Hugging Face token" in choice.reason


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


def test_get_release_none_uses_the_chosen_preset_without_the_hub(monkeypatch):
    from saehelpers import release

    monkeypatch.delenv("SAEHELPERS_PRESET", raising=False)
    monkeypatch.setattr(release, "_chosen", [])
    with pytest.raises(ValueError, match=r"No preset chosen yet: pass one, e.g. get_release\('mini'\)"):
        get_release()
    choose_preset("mini", announce=False)
    assert get_release().name == "mini"
    monkeypatch.setenv("SAEHELPERS_PRESET", "gemma-3-1b")
    assert get_release().name == "gemma-3-1b"


@pytest.mark.parametrize("bad", [3, 1.5, ["mini"], object()])
def test_as_release_takes_a_release_or_a_preset_name(bad):
    from saehelpers.release import as_release

    assert as_release("mini") == get_release("mini") and as_release(get_release("mini")).name == "mini"
    with pytest.raises(ValueError, match=r"release must be a Release .* or a preset name"):
        as_release(bad)
