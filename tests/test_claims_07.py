"""Lesson 07's sentences about numbers, checked on its own executed run (`claims.notebook`, as tests/test_claims.py).

Each test names the sentence it guards (`run.sentence`), then checks the lesson's own variables after its last
cell. None recomputes the lesson's sample.
"""

import claims
import pytest
from claims import positive

pytestmark = pytest.mark.heavy  # the fast lane leaves this module out


@pytest.fixture(scope="module")
def nb07():
    return claims.notebook("07_absorption")


def test_07_probe_far_above_chance_at_every_layer(nb07):
    run = nb07
    run.sentence("the probe is far above chance at every layer")
    run.sentence("a linear probe reads a word's first letter from its own token's residual stream")
    by_layer = run.var("by_layer")
    assert len(by_layer) == len(run.var("LAYERS")) >= 2
    acc = by_layer["held-out accuracy"]
    assert (acc > 5 / 26).all(), acc.to_dict()  # five times chance, at every layer
    assert positive(acc.max(), "the best layer's accuracy") == acc[run.var("LAYER")]


def test_07_mini_model_knows_letters_only_in_part(nb07):
    run = nb07
    run.sentence(
        "the probe gets well under all of the held-out words right, and so does the model's own answer"
    )
    run.sentence("far above chance on the mini preset, though well short of every word")  # What you learned
    by_layer, layer = run.var("by_layer"), run.var("LAYER")
    probe_acc = positive(by_layer.loc[layer, "held-out accuracy"], "the probe's accuracy")
    answers, y = run.var("answers"), run.var("y")
    model_acc = positive((answers == y).float().mean().item(), "the model's own accuracy")
    assert probe_acc < 0.8 and model_acc < 0.8, (probe_acc, model_acc)
    assert model_acc > 5 / 26  # it does spell, far above chance


def test_07_gate_leaves_some_letters_and_summary_uses_them(nb07):
    run = nb07
    run.sentence("absorption is averaged only over letters whose probe F1 is at least 0.6")
    report, overall = run.var("report"), run.var("overall")
    passing = int((report.f1 >= 0.6).sum())
    assert positive(passing, "letters passing the gate") == overall["letters"] < len(report)


def test_07_narrow_prefixes_hold_no_letter_latent_and_f1_rises_with_width(nb07):
    run = nb07
    run.sentence("On the mini preset the letters' main latents themselves sit in the late groups")
    run.sentence(
        "As $w$ grows the F1 at $k = 1$ rises, while absorption stays small at every width on the mini preset"
    )
    prefixes, groups, release = run.var("prefixes"), run.var("groups"), run.var("release")
    f1 = prefixes.f1_k1
    assert (f1.iloc[:2] < 0.05).all(), f1.to_dict()  # no latent in the two narrowest prefixes tracks a letter
    assert positive(f1.iloc[-1], "F1 at k = 1 in the full width") > f1.iloc[0] + 0.2
    half = len(release.groups) // 2
    late = groups["main latents"].iloc[half:].sum()
    assert positive(late, "main latents in the late groups") > groups["main latents"].iloc[:half].sum(), (
        groups
    )
    assert (prefixes.full_absorption < 0.1).all() and (prefixes.fraction < 0.1).all(), prefixes


def test_07_full_absorption_is_rare_on_mini(nb07):
    run = nb07
    run.sentence("On the mini preset full absorption is rare")
    overall, table = run.var("overall"), run.var("table")
    assert positive(len(table), "words the probe gets right") > 0
    assert overall["full_absorption"] < 0.05 and table.full_absorption.mean() < 0.05, overall


def test_07_absorption_differs_from_letter_to_letter(nb07):
    run = nb07
    run.sentence("it differs from letter to letter")
    per_letter = run.var("per_letter")
    assert per_letter.full_absorption.max() > per_letter.full_absorption.min() or (
        per_letter.fraction.max() > per_letter.fraction.min()
    )
    table = run.var("table")
    assert positive(len(table), "words the probe gets right") == per_letter.words.sum()
