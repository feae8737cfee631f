"""A feature card: what the dashboard shows for one feature, from its statistics and its decoder direction.

The statistics (top and typical examples, frequency, histogram) come from `features.feature_stats`;
the card adds the logit lens of the feature's decoder row (`lens_table`), its Matryoshka group and
its nearest decoder neighbours (`neighbours`). It shows as HTML in Jupyter and as text elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
import torch

from . import lm
from .checks import check_feature, check_int, check_sae, check_vector
from .display import card_html, card_text
from .features import HIST_EDGES, FeatureStats
from .matryoshka import latent_groups
from .release import as_release
from .tokens import context_strings, token_strings


@torch.no_grad()
def lens_table(model, tokenizer, direction: torch.Tensor, n: int = 10) -> pd.DataFrame:
    """The logit lens (`lm.logit_lens`) as a feature card shows it: the n tokens whose logits `direction`
    raises most and the n it lowers most, unembed(final_norm(d)).

    An approximation, the "direct path" only: it treats the direction as if it were the whole
    residual stream at the top of the model. It ignores every layer after the SAE's (attention and
    MLPs read and transform the direction before the output), and the final norm's scale, which
    depends on everything else in the residual stream (for a lone direction the norm only rescales
    it, so the ranking is that of ((1 + w) * d) @ W_U). Logits before any final soft-capping.
    """
    n = check_int(n, "n", 1, model.config.vocab_size, hint="n is how many tokens to list each way.")
    direction = check_vector(
        direction, "direction", (model.config.hidden_size,), hint="(the model's d_model)"
    )
    logits = lm.lens_logits(model, direction).cpu()
    top, bottom = logits.topk(n), logits.topk(n, largest=False)
    return pd.DataFrame(
        {
            "raises": token_strings(tokenizer, top.indices),
            "logit ↑": top.values.numpy(),
            "lowers": token_strings(tokenizer, bottom.indices),
            "logit ↓": bottom.values.numpy(),
        }  # fmt: skip
    )


@torch.no_grad()
def neighbours(sae, feature: int, n: int = 8) -> pd.DataFrame:
    """The n features whose decoder directions point most nearly the same way (cosine similarity)."""
    check_sae(sae)  # before any work: a number or a model where the SAE goes
    feature = check_feature(feature, sae.cfg.d_sae)
    n = check_int(n, "n", 1, sae.cfg.d_sae - 1, hint="n is how many neighbours to list.")
    W = sae.W_dec.detach().float()  # on the SAE's device: only the top n come to the CPU
    cos = W @ W[feature] / (W.norm(dim=1) * W[feature].norm()).clamp_min(1e-8)
    cos[feature] = -torch.inf  # not its own neighbour
    values, indices = (t.cpu() for t in cos.topk(min(n, len(cos) - 1)))
    return pd.DataFrame({"feature": indices.numpy(), "cosine": values.numpy()})


@dataclass
class FeatureCard:
    """Everything the dashboard shows for one feature; displays as HTML in Jupyter and as text elsewhere."""

    layer: int
    feature: int
    group: int
    group_range: tuple[int, int]
    n_tokens: int
    count: int
    frequency: float
    rank: int  # by firing frequency, 1 = most frequent
    d_sae: int
    max: float
    mean_when_firing: float
    hist: list[int]  # counts per bin of `edges`
    edges: list[float]
    top: list[dict]  # Examples.of(...) with token strings
    sample: list[dict]
    logits: pd.DataFrame
    neighbours: pd.DataFrame
    notes: list[str] = field(default_factory=list)

    def _repr_html_(self) -> str:
        return card_html(self)

    def __str__(self) -> str:
        return card_text(self)

    __repr__ = __str__

    def plot_histogram(self, ax=None):
        """The feature's activation histogram (log-spaced bins) with matplotlib."""
        import matplotlib.pyplot as plt

        ax = ax or plt.subplots(figsize=(6, 2.8))[1]
        ax.stairs(self.hist, self.edges, fill=True)
        ax.set(xscale="log", xlabel="activation (log scale)", ylabel="tokens",
               title=f"Layer {self.layer}, feature {self.feature}: {self.count} firings in {self.n_tokens} tokens")  # fmt: skip
        on = [e for e, c in zip(self.edges, self.hist) if c] or self.edges[:2]
        ax.set_xlim(on[0] / 1.5, on[-1] * 3)
        return ax


def feature_card(
    model, tokenizer, sae, release, stats: FeatureStats, feature: int, n_examples: int = 8,
    n_logits: int = 8, n_neighbours: int = 6,
) -> FeatureCard:  # fmt: skip
    """The card of one feature from `stats` (see `stream_stats`) and the SAE's decoder direction."""
    release = as_release(release)
    layer = check_sae(sae, release, model)
    n_examples = check_int(n_examples, "n_examples", low=1)
    n_logits = check_int(n_logits, "n_logits", 1, model.config.vocab_size)
    n_neighbours = check_int(n_neighbours, "n_neighbours", 1, sae.cfg.d_sae - 1)
    if not isinstance(stats, FeatureStats):
        raise ValueError(
            f"stats must be FeatureStats (from features.feature_stats), got {type(stats).__name__}."
        )
    feature = check_feature(feature, stats.d_sae)
    if sae.cfg.d_sae != stats.d_sae:
        raise ValueError(f"The SAE has {sae.cfg.d_sae} latents but the statistics have {stats.d_sae}.")
    if stats.layer is not None and stats.layer != layer:
        raise ValueError(
            f"These statistics are of layer {stats.layer}, but the SAE reads layer {layer}: "
            f"pass features.feature_stats(model, tokenizer, sae, release) for this SAE."
        )
    groups = latent_groups(release)

    def with_strings(found: list[dict]) -> list[dict]:
        for e in found:
            e["strings"] = context_strings(tokenizer, e["tokens"])
        return found

    count = int(stats.counts[feature])
    hood = neighbours(sae, feature, n_neighbours)
    near = torch.tensor(hood["feature"].tolist())
    hood["group"], hood["frequency"] = groups[near].numpy(), stats.frequency[near].numpy()
    notes = (
        []
        if count
        else [f"Feature {feature} never fired on these {stats.n_tokens} tokens: try more or other text."]
    )
    g = int(groups[feature])
    return FeatureCard(
        layer=stats.layer, feature=feature, group=g, group_range=tuple(release.groups[g]), n_tokens=stats.n_tokens,
        count=count, frequency=count / max(stats.n_tokens, 1), rank=stats.frequency_rank(feature), d_sae=stats.d_sae,
        max=float(stats.max[feature]), mean_when_firing=float(stats.sums[feature]) / max(count, 1),
        hist=stats.hist[feature].tolist(), edges=HIST_EDGES.tolist(), top=with_strings(stats.top(feature)[:n_examples]),
        sample=with_strings(stats.sample(feature, n_examples)), logits=lens_table(model, tokenizer, sae.W_dec[feature], n_logits),
        neighbours=hood, notes=notes,
    )  # fmt: skip


__all__ = ["FeatureCard", "feature_card", "lens_table", "neighbours"]
