"""saehelpers.presets: which preset a process uses, decided once and asked for everywhere else."""

import pytest

from saehelpers import get_release, release
from saehelpers.presets import Choice, choose_preset, current_preset


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


def test_get_release_none_uses_the_chosen_preset_without_the_hub(monkeypatch):
    from saehelpers import release

    monkeypatch.delenv("SAEHELPERS_PRESET", raising=False)
    monkeypatch.setattr(release, "_chosen", [])
    with pytest.raises(ValueError, match=r"No preset chosen yet: pass one, e.g. get_release\('mini'\)"):
        get_release()
    choose_preset("mini", announce=False)
    assert get_release().name == "mini"


def test_the_choice_stays_until_asked_again(monkeypatch):
    """choose_preset("mini") then get_release() is mini even with $SAEHELPERS_PRESET=gemma-3-1b set: one
    function decides, the others ask it; choose_preset() again reads the variable."""
    monkeypatch.setattr(release, "_chosen", [])
    monkeypatch.setenv("SAEHELPERS_PRESET", "gemma-3-1b")
    choose_preset("mini", announce=False)
    assert get_release().name == "mini" and current_preset() == "mini"
    assert choose_preset(announce=False).name == "gemma-3-1b"
    assert get_release().name == "gemma-3-1b" and current_preset() == "gemma-3-1b"
    assert current_preset("mini") == "mini" and get_release().name == "gemma-3-1b"  # an argument is per call


def test_the_preset_is_decided_once_per_process(monkeypatch):
    """load_model, load_sae and iter_saes with preset=None ask the Hub once, not on every call."""
    import saehelpers.presets

    asked = []

    def reachable():
        asked.append(1)
        return False, "the test says so"

    monkeypatch.setattr(release, "_chosen", [])
    monkeypatch.delenv("SAEHELPERS_PRESET", raising=False)
    monkeypatch.setattr(saehelpers.presets, "real_model_reachable", reachable)
    rel = get_release("mini")
    saes = [saehelpers.load_sae(rel.layers[0]), saehelpers.load_sae(rel.layers[-1])]
    saes += list(saehelpers.iter_saes(rel.layers[0]))
    assert [release.layer_of(s) for s in saes[:2]] == [rel.layers[0], rel.layers[-1]]
    assert len(asked) == 1 and current_preset() == "mini"
