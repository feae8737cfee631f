"""Feature ablation through an SAE that keeps its error term, and attribution patching.

The SAE writes x = decode(a) + e, with e = x - decode(a) its error term. Ablating features F keeps e, so
that only F changes (decode is affine, so b_dec and every other feature cancel):

    zero ablation:   x' = x - sum_{f in F} a_f(x) d_f
    mean ablation:   x' = x + sum_{f in F} (mean_f - a_f(x)) d_f

a_f(x) is feature f's activation on x (`sae.encode`) and d_f = `sae.W_dec[f]`. With keep_error=False the
residual becomes the SAE's reconstruction of the edited activations, decode(a'), and the SAE's own error
is added to the ablation's effect. Everything is a context manager on `saehelpers.hooks`: the hook is
removed when the block ends, exceptions included.

Attribution patching estimates every (position, feature) ablation effect on a metric from one forward
and one backward pass, to first order: metric(x') - metric(x) ~ (target - a_f) * (dmetric/dx . d_f).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import pandas as pd
import torch

from . import hooks, lm
from .checks import check_callable, check_features, check_int, check_sae, check_vector
from .matryoshka import check_width, groups, latent_groups
from .progress import progress_bar
from .release import as_release
from .tokens import check_texts, pad_rows, token_strings

# ---------------------------------------------------------------- checks


def _distinct(sae, features) -> list[int]:
    """The feature ids, each once, in the order given."""
    return list(dict.fromkeys(check_features(features, sae.cfg.d_sae)))


def _check_means(sae, means) -> torch.Tensor | None:
    if means is None:
        return None
    hint = "(one mean activation per feature, e.g. `stats.mean` from features.feature_stats)"
    return check_vector(means, "means", (sae.cfg.d_sae,), hint=hint)


def _check_group(release, group) -> int:
    n = len(groups(release))
    return check_int(group, "group", 0, n - 1, hint=f"The Matryoshka groups are {groups(release)}.")


def _check_in_input(positions, n: int):
    """ValueError when a position is beyond an input of n tokens (positions 0..n-1)."""
    if positions is not None and max(positions) >= n:
        raise ValueError(
            f"Position {max(positions)} is beyond the sequence: this input has positions 0..{n - 1} "
            "(0 is BOS). Give positions inside it, or None for every position."
        )


# ---------------------------------------------------------------- ablation contexts


def _edit(sae, x, ids, means, keep_error) -> torch.Tensor:
    """x with features `ids` set to their target (0, or their mean)."""
    a = sae.encode(x.to(sae.device, sae.dtype))
    target = torch.zeros(len(ids), device=a.device, dtype=a.dtype) if means is None else means[ids].to(a)
    if keep_error:  # x + (target - a_F) @ W_dec[F]: the error term and every other feature stay exactly
        return x + ((target - a[..., ids]) @ sae.W_dec[ids]).to(x.device, x.dtype)
    a = a.clone()
    a[..., ids] = target
    return sae.decode(a).to(x.device, x.dtype)


@contextmanager
def _ablation(model, sae, ids, means=None, positions=None, include_bos=False, keep_error=True):
    layer = check_sae(sae, model=model, affine=True)
    means = _check_means(sae, means)
    positions = hooks.check_positions(positions)
    ids = torch.as_tensor(ids, dtype=torch.long, device=sae.W_dec.device)
    if means is not None:
        means = means.to(sae.W_dec.device)

    def fn(h, pos, bos):
        if bool((pos[:, 0] == 0).all()):  # a call from the start (not a cached generation step)
            _check_in_input(positions, int(pos.max()) + 1)
        new = _edit(sae, h, ids, means, keep_error) if len(ids) or not keep_error else h
        mask = hooks.position_mask(pos, positions, include_bos, bos).unsqueeze(-1)
        return torch.where(mask, new, h)

    with hooks.edit(model, layer, fn):
        yield


def ablate(model, sae, features, means=None, positions=None, include_bos=False, keep_error=True):
    """Context manager: remove `features` (an id or a list of ids) from resid_post at the SAE's layer.

    means=None sets them to 0 (zero ablation); a [d_sae] tensor of mean activations (e.g. `stats.mean`)
    sets each to its mean (mean ablation). positions: absolute token positions to ablate (None: all);
    BOS (position 0) is left alone unless include_bos=True. keep_error=False replaces the residual by
    the SAE's reconstruction of the ablated activations (the SAE's error is then lost as well).
    """
    check_sae(sae, model=model, affine=True)
    ids = _distinct(sae, features)
    return _ablation(model, sae, ids, means, positions, include_bos, keep_error)


def ablate_group(model, sae, release, group: int, **kwargs):
    """Context manager: ablate every feature of Matryoshka `group` (its latents `start:end`); see `ablate`."""
    check_sae(sae, release, layers=False)
    release = as_release(release)
    start, end = groups(release)[_check_group(release, group)]
    return ablate(model, sae, range(start, end), **kwargs)


def ablate_outside(model, sae, release, width: int, **kwargs):
    """Context manager: ablate every latent outside the prefix `0:width`, a Matryoshka group boundary.

    width = d_sae ablates nothing: with keep_error=False that is the plain spliced SAE.
    """
    check_sae(sae, release, layers=False)
    release = as_release(release)
    width = check_width(release, width)
    return _ablation(model, sae, list(range(width, sae.cfg.d_sae)), **kwargs)


def splice(model, sae, keep_error: bool = True, include_bos: bool = False):
    """Context manager: resid_post at the SAE's layer -> decode(encode(x)) + (x - decode(encode(x))) when keep_error.

    Nothing ablated: with the error term the model computes what the clean model does (up to float
    rounding); keep_error=False is `hooks.splice_sae`, the SAE's reconstruction alone. BOS keeps its clean
    value unless include_bos=True (as in every published number).
    """
    layer = check_sae(sae, model=model, affine=True)
    if not keep_error:
        return hooks.splice_sae(model, sae, include_bos=include_bos)

    def with_error(x):
        recon = sae(x.to(sae.device, sae.dtype)).to(x.device, x.dtype)
        return recon + (x - recon)

    return hooks.replace(model, layer, with_error, include_bos=include_bos)


# ---------------------------------------------------------------- a task and its metric


@dataclass
class Task:
    """Prompts with a correct and a wrong next token; the metric is the mean of logit(correct) - logit(wrong).

    input_ids / attention_mask: right-padded batch (BOS first); last: index of each prompt's last token.
    `run(model)` gives the next-token logits after each prompt, [prompts, vocab], and `metric` reads them.
    """

    prompts: list[str]
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    correct: torch.Tensor
    wrong: torch.Tensor
    last: torch.Tensor

    def run(self, model) -> torch.Tensor:
        """Next-token logits [prompts, vocab] at each prompt's last token (under whatever hooks are active).

        Unembeds the last tokens only: the unembedding (vocab x d_model) costs more than the layers.
        """
        h = lm.final_hidden(model, self.input_ids, self.attention_mask)
        return lm.unembed(model, h[torch.arange(len(self.last)), self.last])

    def metric(self, logits: torch.Tensor, per_prompt: bool = False) -> torch.Tensor:
        """logit(correct) - logit(wrong) from `run`'s logits: the mean (a scalar tensor) or one per prompt."""
        rows = torch.arange(len(self.last), device=logits.device)
        logits = logits.float()
        diff = logits[rows, self.correct.to(logits.device)] - logits[rows, self.wrong.to(logits.device)]
        return diff if per_prompt else diff.mean()


def make_task(tokenizer, items, device="cpu") -> Task:
    """A `Task` from (prompt, correct, wrong) triples; each answer must be one token, e.g. " Paris"."""
    example = '("The capital of Japan is", " Tokyo", " Beijing")'
    if isinstance(items, (str, bytes)) or not hasattr(items, "__iter__"):
        raise ValueError(
            f"items must be a list of (prompt, correct, wrong) triples, e.g. [{example}]; got {items!r}."
        )
    items = list(items)
    if not items:
        raise ValueError(f"Give at least one (prompt, correct, wrong) triple, e.g. {example}.")
    for i, item in enumerate(items):
        if isinstance(item, str) or not hasattr(item, "__len__") or len(item) != 3:
            raise ValueError(
                f"items[{i}] is {item!r}: each item must be a (prompt, correct, wrong) triple, e.g. {example}."
            )
        check_texts(item, f"items[{i}]")

    def one_token(text):
        ids = tokenizer(text, add_special_tokens=False).input_ids
        if len(ids) != 1:
            pieces = [tokenizer.decode([i]) for i in ids]
            raise ValueError(
                f"The answer {text!r} is {len(ids)} tokens {pieces}: answers must be one token each."
            )
        return ids[0]

    rows = [tokenizer(p).input_ids for p, _, _ in items]
    ids, mask = pad_rows(tokenizer, rows)
    return Task(
        prompts=[p for p, _, _ in items],
        input_ids=ids.to(device),
        attention_mask=mask.to(device),
        correct=torch.tensor([one_token(c) for _, c, _ in items], device=device),
        wrong=torch.tensor([one_token(w) for _, _, w in items], device=device),
        last=torch.tensor([len(r) - 1 for r in rows], device=device),
    )


# ---------------------------------------------------------------- attribution patching and true ablation


def _where(task, positions, include_bos) -> torch.Tensor:
    """Bool [batch, seq]: the real tokens to ablate (padding never; BOS only with include_bos)."""
    positions = hooks.check_positions(positions)
    _check_in_input(positions, task.input_ids.shape[1])
    pos = torch.arange(task.input_ids.shape[1], device=task.input_ids.device).expand_as(task.input_ids)
    bos = task.input_ids == task.input_ids[0, 0]  # every row starts with BOS (make_task): found by its id
    return hooks.position_mask(pos, positions, include_bos, bos) & task.attention_mask.bool()


def _metric(task, metric):
    return (
        task.metric
        if metric is None
        else check_callable(metric, "metric", "lambda logits: logits[:, 5].mean()")
    )


def attribute(
    model, sae, task: Task, metric=None, means=None, positions=None, include_bos: bool = False, *,
    tokenizer=None, release=None,
) -> pd.DataFrame:  # fmt: skip
    """Estimated effect on the metric of ablating each feature at each token, from one forward + one backward.

    metric(logits) -> scalar tensor, on `task.run`'s logits (default: `task.metric`). For feature f at
    token t, with g_t the gradient of the metric with respect to resid_post at the SAE's layer:

        estimate = (target_f - a_f(t)) * (g_t . d_f)        (target 0, or means[f] for mean ablation)

    the first-order change of the metric when f is ablated at t alone; summed over t it estimates
    ablating f at all those tokens. One row per (row, position, feature) whose activation differs from
    its target, largest |estimate| first. Columns: row (the prompt), position, token (its string when
    `tokenizer` is given, else its id), feature, group (when `release` is given), activation, estimate.
    `attrs["metric"]` holds the clean metric.
    """
    layer = check_sae(sae, model=model, affine=True)
    release = None if release is None else as_release(release)
    check_sae(sae, release, layers=False)
    means = _check_means(sae, means)
    where = _where(task, positions, include_bos)
    metric = _metric(task, metric)
    seen = {}

    def leaf(h, pos, bos):
        seen["x"] = x = h.detach().requires_grad_(True)  # a leaf: the backward pass stops here
        return x

    with torch.enable_grad(), hooks.edit(model, layer, leaf):
        value = metric(task.run(model))
        if not isinstance(value, torch.Tensor) or value.numel() != 1 or not value.requires_grad:
            raise ValueError(
                "metric(logits) must return a scalar tensor computed from the logits (e.g. task.metric)."
            )
        (grad,) = torch.autograd.grad(value.reshape(()), seen["x"])

    with torch.no_grad():
        a = sae.encode(seen["x"].detach().to(sae.device, sae.dtype))
        g = grad.to(sae.device, sae.dtype) @ sae.W_dec.T  # g_t . d_f for every token and feature
        target = torch.zeros_like(a) if means is None else means.to(a).expand_as(a)
        b, t, f = ((target != a) & where.to(a.device)[..., None]).nonzero(as_tuple=True)
        est = ((target - a) * g)[b, t, f]
    tokens = task.input_ids[b.cpu(), t.cpu()].tolist()
    table = pd.DataFrame(
        {
            "row": b.tolist(),
            "position": t.tolist(),
            "token": token_strings(tokenizer, tokens) if tokenizer is not None else tokens,
            "feature": f.tolist(),
            **({"group": latent_groups(release)[f.cpu()].tolist()} if release is not None else {}),
            "activation": a[b, t, f].float().cpu().numpy(),
            "estimate": est.float().cpu().numpy(),
        }
    )
    table = table.iloc[table["estimate"].abs().to_numpy().argsort()[::-1]].reset_index(drop=True)
    table.attrs["metric"] = value.item()
    return table


@torch.no_grad()
def true_effects(
    model, sae, task: Task, features, metric=None, means=None, positions=None,
    include_bos: bool = False, keep_error: bool = True, progress: bool = True,
) -> pd.DataFrame:  # fmt: skip
    """The real effect on the metric of ablating each of `features` alone: one forward pass per feature.

    Same arguments as `attribute`. Returns a table indexed by feature (in the order given) with the
    column `effect` = metric(ablated) - metric(clean); `attrs["metric"]` holds the clean metric.
    """
    check_sae(sae, model=model, affine=True)
    ids = _distinct(sae, features)
    _where(task, positions, include_bos)  # checks the positions against the input
    metric = _metric(task, metric)
    clean = metric(task.run(model)).item()
    effects = []
    for f in progress_bar(ids, desc="ablating one feature at a time", disable=not progress):
        with _ablation(model, sae, [f], means, positions, include_bos, keep_error):
            effects.append(metric(task.run(model)).item() - clean)
    table = pd.DataFrame({"effect": effects}, index=pd.Index(ids, name="feature"))
    table.attrs["metric"] = clean
    return table


# ---------------------------------------------------------------- what changes at the output


@torch.no_grad()
def token_changes(tokenizer, clean_logits, new_logits, n: int = 8, by: str = "prob") -> pd.DataFrame:
    """The n next tokens that gain most and the n that lose most, from clean to new logits.

    Each is one next-token distribution [vocab] (e.g. `logits[row]` from `Task.run`). by="prob" ranks by
    the change in probability (the tokens that matter for what the model says); by="logprob" by the
    change in log-probability, in nats (which also lifts tokens the model would never say). Columns:
    token, clean_prob, new_prob, change (in the unit of `by`), from the largest gain down to the largest loss.
    """
    if by not in ("prob", "logprob"):
        raise ValueError(f"by must be 'prob' or 'logprob', got {by!r}.")
    hint = "(one next-token distribution, e.g. `logits[row]` from Task.run)"
    clean = check_vector(clean_logits, "clean_logits", ("vocab",), hint)
    new = check_vector(new_logits, "new_logits", tuple(clean.shape), hint)
    n = check_int(n, "n", 1, len(clean), hint="n is how many tokens to list each way.")
    clean = torch.log_softmax(clean.detach().double().cpu(), -1)
    new = torch.log_softmax(new.detach().double().cpu(), -1)
    change = new - clean if by == "logprob" else new.exp() - clean.exp()
    ids = torch.cat([change.topk(n).indices, change.topk(n, largest=False).indices.flip(0)])
    return pd.DataFrame(
        {
            "token": token_strings(tokenizer, ids.tolist()),  # a byte token reads ⟨0xE8⟩, not �
            "clean_prob": clean[ids].exp().numpy(),
            "new_prob": new[ids].exp().numpy(),
            "change": change[ids].numpy(),
        }
    )


__all__ = [
    "Task",
    "ablate",
    "ablate_group",
    "ablate_outside",
    "attribute",
    "make_task",
    "splice",
    "token_changes",
    "true_effects",
]
