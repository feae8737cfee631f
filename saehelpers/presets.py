"""Which preset to use, and why: explicit argument > $SAEHELPERS_PRESET > real if reachable > mini.

`choose_preset` is the one place that decides; it decides once per process (when first needed) and
again only when called again. Everything that takes `preset=None` asks `current_preset`.
"""

from __future__ import annotations

from dataclasses import dataclass

from .release import ENV, MINI, REAL, check_preset, chosen_preset, env_preset, get_release, remember_choice


def hf_token() -> str | None:
    """The Hugging Face token from HF_TOKEN or `hf auth login`; never printed."""
    from huggingface_hub import get_token

    return get_token()


@dataclass(frozen=True)
class Choice:
    name: str
    reason: str

    def line(self) -> str:
        what = "the real release (Gemma-3-1b)" if self.name == REAL else "the offline stand-in (Gemma-3-270m)"
        return f"saehelpers: preset {self.name!r}, {what}, because {self.reason}."


def real_model_reachable() -> tuple[bool, str]:
    """Whether google/gemma-3-1b-pt can be loaded here, and a short reason either way.

    Offline (HF_HUB_OFFLINE=1): it is reachable when its config is in the local cache.
    Online: the Hub must confirm that the current token may read the gated repo.
    """
    from huggingface_hub import constants, errors, try_to_load_from_cache

    model_id = get_release(REAL).model_id
    cached = try_to_load_from_cache(model_id, "config.json")
    if constants.HF_HUB_OFFLINE:
        if isinstance(cached, str):
            return True, f"{model_id} is in the local Hugging Face cache (offline mode)"
        return False, f"HF_HUB_OFFLINE is set and {model_id} is not in the local Hugging Face cache"
    token = hf_token()
    if token is None and not isinstance(cached, str):
        return False, f"no Hugging Face token is set, and {model_id} is gated"
    try:
        from huggingface_hub import auth_check

        auth_check(model_id, token=token)
        return True, f"{model_id} is reachable with your Hugging Face token"
    except errors.GatedRepoError:
        return False, f"your Hugging Face account has not accepted the Gemma licence for {model_id}"
    except Exception as e:  # network down, DNS, proxies: all mean "not reachable now"
        if isinstance(cached, str):
            return True, f"the Hub is unreachable ({type(e).__name__}) but {model_id} is in the local cache"
        return False, f"the Hugging Face Hub is unreachable ({type(e).__name__})"


def choose_preset(preset=None, announce: bool = True) -> Choice:
    """Pick the process's preset (a name, a Release, or None: decide), remember it, and print one line that
    says which and why (when `announce`). `get_release()`, `load_model()`, `load_sae(layer)` and `iter_saes()`
    then use it, until choose_preset is called again."""
    if preset is not None:
        choice = Choice(check_preset(preset), "it was asked for explicitly")
    elif env_preset() is not None:
        choice = Choice(env_preset(), f"{ENV}={env_preset()} is set")
    else:
        ok, why = real_model_reachable()
        if ok:
            choice = Choice(REAL, why)
        else:
            choice = Choice(MINI, why + f" (set {ENV}=gemma-3-1b after logging in to use the real release)")
    remember_choice(choice.name)  # get_release(None) and current_preset read it, without asking the Hub again
    if announce:
        print(choice.line())
    return choice


def current_preset(preset=None) -> str:
    """The preset to use: `preset` when given (a name or a Release); else this process's choice, made once by
    `choose_preset` (quietly) on first need, so the model and every SAE come from the same preset and the Hub
    is asked at most once."""
    if preset is not None:
        return check_preset(preset)
    return chosen_preset() or choose_preset(announce=False).name
