"""Which preset to use, and why: explicit argument > $SAEHELPERS_PRESET > real if reachable > mini."""

from __future__ import annotations

import os
from dataclasses import dataclass

from .release import ENV, MINI, PRESETS, REAL, check_preset, get_release, remember_choice


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


def choose_preset(preset: str | None = None, announce: bool = True) -> Choice:
    """Pick the preset and print one line that says which and why (when `announce`)."""
    if preset is not None:
        choice = Choice(check_preset(preset), "it was asked for explicitly")
    elif os.environ.get(ENV):
        value = os.environ[ENV].strip()
        if value not in PRESETS:
            raise ValueError(
                f"{ENV}={value!r} is not a preset. Valid values: {', '.join(PRESETS)}; "
                f"or unset {ENV} to choose automatically."
            )
        choice = Choice(value, f"{ENV}={value} is set")
    else:
        ok, why = real_model_reachable()
        if ok:
            choice = Choice(REAL, why)
        else:
            choice = Choice(MINI, why + f" (set {ENV}=gemma-3-1b after logging in to use the real release)")
    remember_choice(choice.name)  # get_release(None) reads it, without asking the Hub again
    if announce:
        print(choice.line())
    return choice
