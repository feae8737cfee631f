"""Lessons 05 and 06: other correct ways to write each exercise pass too (the checkers compare
values, not a method), and each checker's cases reach the traps its mistakes describe."""

import torch
import torch.nn.functional as F
from checking import passed

from saehelpers import exercises
from saehelpers.exercises import lesson05, lesson06


def test_prefix_recons_decoded_from_scratch_per_width_passes():
    def per_width(feature_acts, W_dec, b_dec, widths):
        return {w: feature_acts[:, :w] @ W_dec[:w] + b_dec for w in widths}

    assert passed(exercises.check_prefix_recons, per_width) == len(lesson05._prefix_cases())


def test_group_of_by_counting_widths_passes_and_cases_hold_every_boundary():
    def counting(latents, widths):
        return (latents[:, None] >= torch.tensor(widths)).sum(1)

    assert passed(exercises.check_group_of, counting) >= 2
    for case in lesson05._group_cases():
        latents, widths = case.args
        assert {0, *(w - 1 for w in widths), *widths[:-1]} <= set(latents.tolist())
        assert int(latents.max()) < widths[-1]


def test_best_match_with_cosine_similarity_passes():
    def with_f(W_dec, directions):
        cos = F.cosine_similarity(W_dec[:, None], directions[None], dim=-1)
        values, latents = cos.max(0)
        return latents, values

    assert passed(exercises.check_best_match, with_f) >= 2


def test_absorption_score_as_a_tensor_passes_and_every_case_has_a_child():
    def as_tensor(latent_acts, child_on):
        return 1 - (latent_acts[child_on] > 0).float().mean()

    assert passed(exercises.check_absorption_score, as_tensor) >= 2
    assert all(case.args[1].any() for case in lesson06._absorption_cases())
