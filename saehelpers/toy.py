"""A toy model with known ground truth: hierarchical features, a plain and a Matryoshka SAE trained on it.

The data comes from SAELens's synthetic-data tools (`sae_lens.synthetic`): `n_parents` parent
features, each with `n_children` children that fire only when their parent fires (at most one
child at a time), plus `n_other` independent features. Each feature has a unit direction in a
`d`-dimensional space (nearly orthogonal); a sample is the sum of the active features' directions
times their magnitudes. Because we know every feature, we can check what an SAE learned:

- which latent matches each true feature (cosine of its decoder row with the true direction);
- absorption: how often the parent's latent stays silent although a child (hence the parent)
  is present, because a child latent has taken the parent's direction into its own;
- whether `matryoshka.hierarchy` finds the planted parent -> children structure.

Both SAEs are SAELens training SAEs (`BatchTopKTrainingSAE`, `MatryoshkaBatchTopKTrainingSAE`),
trained with their own `training_forward_pass` in a short Adam loop, then converted to the
JumpReLU SAE that SAELens saves (as the mini and real releases are). Everything is seeded; the
training runs on one CPU thread so that the result does not depend on the machine's core count.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import pandas as pd
import torch

from .checks import as_int, check_finite, check_int
from .progress import progress_bar
from .release import as_release, get_release


@dataclass
class Toy:
    """The ground truth: feature directions, how they fire, and the planted hierarchy."""

    directions: torch.Tensor  # [n_features, d], unit rows
    parents: list[int]
    children: dict[int, list[int]]  # parent -> its children
    others: list[int]
    generator: object  # sae_lens.synthetic.ActivationGenerator
    seed: int

    @property
    def n_features(self) -> int:
        return len(self.directions)

    @property
    def d(self) -> int:
        return self.directions.shape[1]

    @torch.no_grad()
    def sample(self, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(true feature activations [n, n_features], activations x [n, d]), seeded."""
        n, seed = check_int(n, "n", low=1), check_int(seed, "seed", low=0)
        with _seeded(seed):
            feats = self.generator(n)
        return feats, feats @ self.directions

    def role(self, f: int) -> str:
        if f in self.parents:
            return "parent"
        return "child" if f in self.parent_of else "other"

    @property
    def parent_of(self) -> dict[int, int]:
        return {c: p for p, kids in self.children.items() for c in kids}


class _seeded:
    """Seed torch's global generator (which SAELens's generators use) and restore it afterwards."""

    def __init__(self, seed: int):
        self.seed = seed

    def __enter__(self):
        self.state, self.threads = torch.get_rng_state(), torch.get_num_threads()
        torch.manual_seed(self.seed)
        torch.set_num_threads(1)

    def __exit__(self, *exc):
        torch.set_rng_state(self.state)
        torch.set_num_threads(self.threads)


def make_toy(
    n_parents: int = 3, n_children: int = 3, n_other: int = 6, d: int = 32, p_parent: float = 0.3,
    p_child: float = 0.3, p_other: float = 0.03, seed: int = 0,
) -> Toy:  # fmt: skip
    """Features 0..n_parents-1 are parents; then each parent's children; then the independent ones.

    p_parent, p_other: firing probabilities; p_child: probability that a child fires given that its
    parent fires (before the at-most-one-child rule). Magnitudes: mean 1, sd 0.15.
    """
    from sae_lens.synthetic import ActivationGenerator, FeatureDictionary, HierarchyNode, hierarchy_modifier

    n_parents, n_other = check_int(n_parents, "n_parents", low=1), check_int(n_other, "n_other", low=0)
    if as_int(n_children) is None or as_int(n_children) < 2:
        raise ValueError(
            f"Need n_children >= 2, an int (children are mutually exclusive; one child is not a choice), "
            f"got {n_children!r}."
        )
    d, seed = check_int(d, "d", low=1), check_int(seed, "seed", low=0)
    p_parent, p_child, p_other = (
        check_finite(p, name, 0, 1, hint="It is a firing probability.")
        for p, name in ((p_parent, "p_parent"), (p_child, "p_child"), (p_other, "p_other"))
    )
    parents = list(range(n_parents))
    children = {p: [n_parents + p * n_children + j for j in range(n_children)] for p in parents}
    n = n_parents * (1 + n_children) + n_other
    others = list(range(n - n_other, n))
    probs = torch.full((n,), p_other)
    probs[parents] = p_parent
    for kids in children.values():
        probs[kids] = p_child
    with _seeded(seed):
        directions = FeatureDictionary(n, d, seed=seed).feature_vectors.detach().clone()
        roots = [
            HierarchyNode(p, [HierarchyNode(c) for c in kids], mutually_exclusive_children=True)
            for p, kids in children.items()
        ]
        gen = ActivationGenerator(
            n, probs, std_firing_magnitudes=0.15, mean_firing_magnitudes=1.0,
            modify_activations=hierarchy_modifier(roots),
        )  # fmt: skip
    return Toy(directions, parents, children, others, gen, seed)


def layout(toy: Toy, matryoshka: bool = True):
    """A release-like layout for the toy SAE (for `saehelpers.matryoshka`): d_sae = number of features;
    Matryoshka groups: the first `n_parents` latents, then the rest (one group for the plain SAE)."""
    n = toy.n_features
    widths = (len(toy.parents), n) if matryoshka else (n,)
    return replace(get_release("mini"), name="toy", model_id="toy", layers=(0,), n_model_layers=1,
                   d_model=toy.d, d_sae=n, matryoshka_widths=widths, explained_variance={})  # fmt: skip


def train(
    toy: Toy, matryoshka: bool, steps: int = 2000, batch: int = 1024, lr: float = 3e-3, k: float | None = None,
    seed: int = 1, progress: bool = True,
):  # fmt: skip
    """Train a batch-top-k SAE (Matryoshka or plain) on the toy's samples; returns the inference SAE.

    d_sae = the number of true features; k = the true mean L0 (measured) unless given. The loop:
    Adam; lr warm-up over the first 20% of steps (it lets the first group settle on the frequent
    parents before later latents take them), linear decay to 0 over the last 40%; dead latents
    (silent for 50 steps) fed to SAELens's auxiliary loss, as SAELens's trainer does; b_dec starts
    at the data mean.
    """
    from sae_lens import (
        BatchTopKTrainingSAE,
        BatchTopKTrainingSAEConfig,
        MatryoshkaBatchTopKTrainingSAE,
        MatryoshkaBatchTopKTrainingSAEConfig,
    )  # fmt: skip
    from sae_lens.saes.sae import TrainStepInput

    steps, batch = check_int(steps, "steps", low=1), check_int(batch, "batch", low=1)
    seed = check_int(seed, "seed", low=0)
    lr = check_finite(lr, "lr", 0, 1, hint="It is Adam's learning rate, e.g. 3e-3.")
    k = (
        None
        if k is None
        else check_finite(k, "k", 1, toy.n_features, hint="k is the number of active latents per token.")
    )
    n = toy.n_features
    with _seeded(seed):
        sample, x = toy.sample(8192, seed + 10_000)
        k = (sample > 0).sum(1).float().mean().item() if k is None else k
        cfg = dict(d_in=toy.d, d_sae=n, k=k, device="cpu")
        if matryoshka:
            widths = list(layout(toy).matryoshka_widths)
            sae = MatryoshkaBatchTopKTrainingSAE(
                MatryoshkaBatchTopKTrainingSAEConfig(
                    matryoshka_widths=widths, use_matryoshka_aux_loss=True, **cfg
                )
            )
        else:
            sae = BatchTopKTrainingSAE(BatchTopKTrainingSAEConfig(**cfg))
        with torch.no_grad():
            sae.b_dec.copy_(x.mean(0))
        opt = torch.optim.Adam(sae.parameters(), lr=lr)
        warm, decay = int(0.2 * steps), int(0.4 * steps)
        silent = torch.zeros(n)
        for step in progress_bar(
            range(steps), desc="Matryoshka SAE" if matryoshka else "plain SAE", disable=not progress
        ):
            scale = min(1.0, (step + 1) / warm, (steps - step) / decay)
            for group in opt.param_groups:
                group["lr"] = lr * scale
            _, x = toy.sample(batch, seed * 1_000_003 + step)
            out = sae.training_forward_pass(TrainStepInput(x, {}, silent > 50, step, False))
            opt.zero_grad()
            out.loss.backward()
            opt.step()
            silent = torch.where((out.feature_acts > 0).any(0), 0, silent + 1)
    return inference_sae(sae)


def inference_sae(training_sae):
    """The JumpReLU SAE that `training_sae.save_inference_model` would write, without the disk round trip."""
    from sae_lens import JumpReLUSAE, JumpReLUSAEConfig

    state = {k: v.detach().clone() for k, v in training_sae.state_dict().items()}
    training_sae.process_state_dict_for_saving_inference(state)
    sae = JumpReLUSAE(JumpReLUSAEConfig.from_dict(training_sae.cfg.get_inference_sae_cfg_dict()))
    sae.load_state_dict(state)
    return sae.requires_grad_(False)


@torch.no_grad()
def cosines(sae, toy: Toy) -> torch.Tensor:
    """Cosine similarity of every latent's decoder row with every true direction: [d_sae, n_features]."""
    W = sae.W_dec / sae.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-8)
    return W @ toy.directions.T


@torch.no_grad()
def match(sae, toy: Toy) -> pd.DataFrame:
    """For each true feature, the latent whose decoder row points closest to it, and how close."""
    cos = cosines(sae, toy)
    best = cos.max(0)
    rows = [
        {
            "feature": f,
            "role": toy.role(f),
            "parent": toy.parent_of.get(f),
            "latent": int(best.indices[f]),
            "cosine": float(best.values[f]),
        }  # fmt: skip
        for f in range(toy.n_features)
    ]
    return pd.DataFrame(rows).set_index("feature")


@torch.no_grad()
def absorption(sae, toy: Toy, feats: torch.Tensor, x: torch.Tensor, release=None) -> pd.DataFrame:
    """One row per true parent: its best-matching latent and how much of the parent that latent misses.

    - latent, cosine: the latent whose decoder row is closest to the parent's direction;
    - group: that latent's Matryoshka group (when `release` is given);
    - recall: P(latent fires | parent present);
    - absorption: P(latent silent | a child present). The child always comes with its parent, so a
      latent that truly tracks the parent fires on all of these; absorption 1 means some child
      latent has taken the parent's direction and the parent latent stands aside;
    - child_cosine: mean, over the children, of the best latent's cosine with the child's true
      direction (a child latent that absorbed its parent points between the two, cosine ~0.7).
    """
    release = None if release is None else as_release(release)
    acts = sae.encode(x)
    cos = cosines(sae, toy)
    rows = []
    for p in toy.parents:
        latent = int(cos[:, p].argmax())
        fires = acts[:, latent] > 0
        child_on = (feats[:, toy.children[p]] > 0).any(1)
        rows.append(
            {
                "parent": p,
                "latent": latent,
                **({"group": release.group_of(latent)} if release is not None else {}),
                "cosine": float(cos[latent, p]),
                "recall": fires[feats[:, p] > 0].float().mean().item(),
                "absorption": (~fires[child_on]).float().mean().item(),
                "child_cosine": cos[:, toy.children[p]].max(0).values.mean().item(),
            }
        )
    return pd.DataFrame(rows).set_index("parent")


__all__ = ["Toy", "absorption", "cosines", "inference_sae", "layout", "make_toy", "match", "train"]
