"""Feature absorption on a language model: the first-letter task, k-sparse probing, and the absorption test.

The task (Chanin et al. 2024, "A is for Absorption"; SAEBench's absorption eval): single-token words
from the tokenizer's own vocabulary, each at the end of an in-context prompt that makes the model spell,

    \\n cat has the first letter: C\\n tree has the first letter: T ...\\n {word} has the first letter:

and the residual stream at the word's token, where a linear probe reads its first letter. Then:

1. `train_probe`: a multinomial logistic-regression probe, one direction per letter, on held-out words.
2. `k_sparse_probing`: for each letter, the k latents whose mean activation differs most between the
   letter's words and the others (`select_latents`), and the F1 of a logistic regression on just those k
   (k = 1, 2, ...). `main_latents` keeps adding latents while each adds at least `jump` F1: the letter's
   *main latents* (more than one is feature splitting).
3. `absorption_table`: on the test words the probe gets right, the probe direction's projection of the
   activation, and each latent's share of it (activation times the decoder row's projection on the unit
   probe direction). *Full absorption* (`is_full_absorption`): every main latent is silent, the probe
   projection is positive, and the latent with the largest projection has cosine >= `cos_full` with the
   probe and carries at least `share` of the projection. *Absorption fraction*: the share of the
   projection taken by up to `max_absorbers` other latents with cosine >= `cos_fraction`, against what
   the main latents carry (0 when the main latents carry it all).
4. `prefix_absorption`: the same with only the first `w` latents of a Matryoshka SAE (each prefix is an
   SAE of its own), for every width of the release.

Where this agrees with SAEBench (github.com/adamkarvonen/SAEBench, `sae_bench/evals/absorption/` at commit
8042bb3: feature_absorption_calculator.py, feature_absorption.py, k_sparse_probing.py, main.py, eval_config.py): the prompt template and
the word's token position; the thresholds (0.025 cosine for full absorption, 0.1 cosine and 3 latents
for the fraction, 0.4 projection share for both, 0.03 F1 jump for the main latents); the two formulas;
the rates as counts over the probe's true positives of each letter, averaged over letters.

Where it differs, and why:
- Words: SAEBench takes every alphabetic token of the vocabulary (139,585 for Gemma 3's tokenizer: any case,
  with or without a leading space); here a seeded,
  letter-balanced sample (at most `per_letter` words per letter) so that a CPU runs it in seconds and every
  letter has test words. Lowercase only, at least 3 characters (2-letter fragments are not words).
- Probe: SAEBench trains a multiclass linear probe with Adam and counts a true positive where that
  letter's logit is above 0; here the same kind of probe trained to convergence with L-BFGS, and a true
  positive is a word whose letter the probe ranks first (argmax), a stricter, parameter-free rule.
- Latent selection: SAEBench ranks latents by the weights of an L1-regularised probe on SAE activations;
  here by the difference of mean activation (letter vs the rest), as in Gurnee et al. 2023's k-sparse
  probing. It is one line a learner can write, has no regularisation strength to tune, and is nested in k.
- Projection: SAEBench scores a latent by activation x cosine(decoder row, probe); here by activation x
  (decoder row . unit probe), its exact contribution to the reconstruction's projection. The two agree
  when decoder rows have norm 1 (SAELens's usual convention); `cosines` still uses the cosine for the
  thresholds.
- Decoder norms: the mini release's decoder rows have norms far from 1 (medians from about 8 at layer 2 to about
  300 at layer 14). SAEBench folds them into the encoder when it loads an SAE from a release (`fold_W_dec_norm`
  in `load_and_format_sae`), after which its activation x cosine is the same contribution as here; an SAE handed
  to it as an object is only checked (a warning), and unfolded its activation x cosine would misstate every
  latent's share by the row's norm. Here nothing needs folding.
- SAEBench drops letters whose probe F1 is below 0.6; here every letter is reported with its probe
  accuracy next to it, and `summary` states which letters pass the same 0.6 gate.

Run side by side on the mini preset (sae-bench 0.6.0 from PyPI; `benchmarks/bench_absorption_saebench.py`, its
table in `benchmarks/results.md`, 2026-12-08): on the same 832 words at layer 10 the two probes read the letters
about equally well (held-out accuracy 0.49 and 0.47), and the main latents make most of the difference: SAEBench's
are silent on 87% of its probe's true positives, ours on 19%, and its absorption rates over all letters are
0.64-0.66 against our 0.03-0.04 (0.30-0.33 with SAEBench's main latents in our computation). Its gate passes 1
letter there, so its own `run_eval` gives no score for the mini preset.
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass

import pandas as pd
import torch

from . import hooks, lm
from .checks import check_finite, check_int
from .progress import progress_bar

LETTERS = string.ascii_lowercase
TEMPLATE = "\n {word} has the first letter:"
ANSWER = " {letter}"

# SAEBench's thresholds (sae_bench/evals/absorption/feature_absorption.py and eval_config.py).
COS_FULL = 0.025  # cosine of the top-projecting latent with the probe (full absorption)
COS_FRACTION = 0.1  # cosine of each candidate absorbing latent with the probe (absorption fraction)
SHARE = 0.4  # share of the probe projection the absorbing latent(s) must carry (both)
MAX_ABSORBERS = 3  # latents that may together absorb (absorption fraction)
F1_JUMP = 0.03  # F1 gain that makes the next latent of the k-sparse probe a main latent
MIN_PROBE_F1 = 0.6  # SAEBench evaluates a letter only if its probe's F1 is at least this
TABLE_COLUMNS = [
    "letter",
    "word",
    "main_fired",
    "full_absorption",
    "fraction",
    "top_latent",
    "top_cos",
    "top_share",
]


# ---------------------------------------------------------------- words and prompts


def vocab_words(tokenizer, min_len: int = 3, max_len: int = 12) -> list[str]:
    """Every single-token lowercase ASCII word with a leading space in the tokenizer's vocabulary, sorted.

    A token counts when its text is " " + letters a-z only, `min_len`..`max_len` of them. Returned without
    the space. The order is the sorted order, so a seeded sample of it is the same on every machine.
    """
    min_len, max_len = check_int(min_len, "min_len", low=1), check_int(max_len, "max_len", low=1)
    words = set()
    for token in tokenizer.get_vocab():
        if token[:1] not in ("▁", "Ġ"):  # SentencePiece (Gemma) and byte-level BPE mark a leading space
            continue
        word = token[1:]
        if min_len <= len(word) <= max_len and all(c in LETTERS for c in word):
            words.add(word)
    if not words:
        raise ValueError(
            "The tokenizer's vocabulary has no single-token lowercase words with a leading space "
            f"of {min_len}..{max_len} letters; this task needs a SentencePiece or byte-level BPE tokenizer."
        )
    return sorted(words)


@dataclass
class Split:
    """Words for the task: `icl` for the in-context examples, `train` and `test` for the probe (disjoint)."""

    icl: list[str]
    train: list[str]
    test: list[str]

    @property
    def words(self) -> list[str]:
        return self.train + self.test

    def letters(self, part: str = "all") -> torch.Tensor:
        """Letter index (0 = a) of each word of `part` ("train", "test" or "all"): [n]."""
        words = {"train": self.train, "test": self.test, "all": self.words}[part]
        return torch.tensor([LETTERS.index(w[0]) for w in words])


def split_words(
    words: list[str], per_letter: int, test_share: float = 0.3, n_icl: int = 20, seed: int = 0
) -> Split:
    """A seeded, letter-balanced sample: at most `per_letter` words of each letter, `test_share` of each
    letter's words held out; `n_icl` other words (never probed) for the in-context examples."""
    per_letter = check_int(per_letter, "per_letter", low=2)
    test_share = check_finite(test_share, "test_share", 0.05, 0.95)
    n_icl, seed = check_int(n_icl, "n_icl", low=1), check_int(seed, "seed", low=0)
    rng = random.Random(seed)
    words = sorted(set(words))
    rng.shuffle(words)
    icl, rest = words[:n_icl], words[n_icl:]
    train, test = [], []
    for letter in LETTERS:
        mine = [w for w in rest if w[0] == letter][:per_letter]
        n_test = max(1, round(len(mine) * test_share)) if len(mine) >= 2 else 0
        test += mine[:n_test]
        train += mine[n_test:]
    return Split(icl, train, test)


def prompts(words: list[str], icl: list[str], n_examples: int = 8, seed: int = 0) -> list[str]:
    """One spelling prompt per word: `n_examples` in-context examples from `icl` (a seeded draw per word), then
    the word with the answer left out. The word's token is 6 tokens from the end (" has the first letter:")."""
    n_examples = check_int(n_examples, "n_examples", low=0, high=len(icl))
    rng = random.Random(seed)
    out = []
    for word in words:
        shots = rng.sample(icl, n_examples)
        out.append(
            "".join(TEMPLATE.format(word=s) + ANSWER.format(letter=s[0].upper()) for s in shots)
            + TEMPLATE.format(word=word)
        )
    return out


def word_position(tokenizer) -> int:
    """Index, counted from the end, of the word's token in a prompt (-6 for Gemma's tokenizer)."""
    tail = tokenizer(TEMPLATE.format(word="cat"), add_special_tokens=False).input_ids
    word = tokenizer(" cat", add_special_tokens=False).input_ids
    for i in range(len(tail) - len(word) + 1):
        if tail[i : i + len(word)] == word:
            return i - len(tail)
    raise ValueError(
        "The tokenizer splits ' cat' differently inside the prompt; cannot find the word's token."
    )


def letter_token_ids(tokenizer) -> list[int]:
    """The token of each answer " A" .. " Z" (one token each), in letter order."""
    ids = [tokenizer(ANSWER.format(letter=c.upper()), add_special_tokens=False).input_ids for c in LETTERS]
    if any(len(i) != 1 for i in ids):
        raise ValueError(
            "The tokenizer splits a ' A'..' Z' answer into several tokens; the task needs one each."
        )
    return [i[0] for i in ids]


@torch.no_grad()
def word_acts(model, tokenizer, texts: list[str], layers, batch_size: int = 32, progress: bool = True):
    """resid_post at the word's token of each prompt, at each of `layers`, and the model's own answer.

    Returns ({layer: [n, d_model]} float32 on the CPU, answers [n]: the letter index the model ranks first
    among " A".." Z" after the prompt). All prompts must tokenize to the same length (single-token words,
    same number of examples): no padding, so the word sits at the same position in every row. One forward
    pass per batch; only the last position is unembedded (the full logits would cost far more).
    """
    layers = hooks.check_layers(model, layers)
    pos = word_position(tokenizer)
    letter_ids = letter_token_ids(tokenizer)
    out = {layer: [] for layer in layers}
    answers = []
    bar = progress_bar(range(0, len(texts), batch_size), desc="prompts", unit="batch", disable=not progress)
    for start in bar:
        enc = [tokenizer(t).input_ids for t in texts[start : start + batch_size]]
        if len({len(e) for e in enc}) != 1:
            raise ValueError(
                "Prompts of different token lengths: every word and example must be a single token "
                "(use vocab_words) and every prompt must have the same number of examples."
            )
        ids = torch.tensor(enc, device=model.device)
        with hooks.capture(model, layers) as resid:
            last = lm.final_hidden(model, ids)[:, -1]
        answers.append(lm.unembed(model, last)[:, letter_ids].argmax(-1).cpu())
        for layer in layers:
            out[layer].append(resid[layer][:, pos].float().cpu())
    return {layer: torch.cat(parts) for layer, parts in out.items()}, torch.cat(answers)


# ---------------------------------------------------------------- the probe


@dataclass
class Probe:
    """A linear probe: logits = (x - mean) @ W.T + b. W: [n_classes, d_model], one direction per letter."""

    W: torch.Tensor
    b: torch.Tensor
    mean: torch.Tensor

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() - self.mean) @ self.W.T + self.b

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(x).argmax(-1)

    def direction(self, letter: int) -> torch.Tensor:
        """The unit direction of letter `letter` in the residual stream: [d_model]."""
        return self.W[letter] / self.W[letter].norm()


def _fit_logistic(x, y, n_classes, l2, steps):
    """Multinomial logistic regression fitted with L-BFGS; x is standardised inside, the weights returned
    are for the unstandardised x. Seeded by construction (zeros start, deterministic solver)."""
    scale = x.std(0).clamp_min(1e-6)
    xs = x / scale
    W = torch.zeros(n_classes, x.shape[1], requires_grad=True)
    b = torch.zeros(n_classes, requires_grad=True)
    opt = torch.optim.LBFGS([W, b], max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(xs @ W.T + b, y) + l2 * W.pow(2).sum() / len(x)
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return (W / scale).detach(), b.detach()


def train_probe(
    x: torch.Tensor, y: torch.Tensor, n_classes: int = 26, l2: float = 1.0, steps: int = 300
) -> Probe:
    """A multinomial logistic-regression probe on activations x [n, d_model] for labels y [n] (0..n_classes-1)."""
    x = x.float()
    if x.ndim != 2 or y.shape != (len(x),):
        raise ValueError(f"Need x [n, d_model] and y [n]; got x {tuple(x.shape)}, y {tuple(y.shape)}.")
    mean = x.mean(0)
    W, b = _fit_logistic(x - mean, y.long(), n_classes, l2, steps)
    return Probe(W, b, mean)


def f1(pred: torch.Tensor, truth: torch.Tensor) -> float:
    """F1 of the boolean predictions `pred` [n] against `truth` [n] (0 when nothing is predicted or true)."""
    tp = (pred & truth).sum().item()
    denom = pred.sum().item() + truth.sum().item()
    return 2 * tp / denom if denom else 0.0


def probe_report(probe: Probe, x: torch.Tensor, y: torch.Tensor) -> pd.DataFrame:
    """Per letter, on held-out x [n, d_model], y [n]: words, accuracy (recall: share of the letter's words the
    probe gets right) and F1 (one letter against the rest)."""
    pred = probe.predict(x)
    rows = []
    for i, letter in enumerate(LETTERS):
        mine = y == i
        if not mine.any():
            continue
        rows.append({"letter": letter, "words": int(mine.sum()), "accuracy": (pred[mine] == i).float().mean().item(),
                     "f1": f1(pred == i, mine)})  # fmt: skip
    return pd.DataFrame(rows).set_index("letter")


# ---------------------------------------------------------------- k-sparse probing on SAE latents


def select_latents(acts: torch.Tensor, is_letter: torch.Tensor, k: int) -> torch.Tensor:
    """The k latents whose mean activation is highest on the letter's words relative to the others: [k].

    acts: SAE activations [n, d_sae]; is_letter: bool [n]. Score = mean over is_letter minus mean over the
    rest (signed: a latent that fires *less* on the letter does not detect it); ties go to the lower index.
    """
    k = check_int(k, "k", low=1, high=acts.shape[1])
    if not is_letter.any() or is_letter.all():
        raise ValueError(
            "is_letter must hold both True and False: a letter needs words with it and without it."
        )
    acts = acts.float()
    score = acts[is_letter].mean(0) - acts[~is_letter].mean(0)
    return torch.sort(score, descending=True, stable=True).indices[:k]


def _fit_binary(x, y, l2=1e-3, steps=25):
    """Logistic regression of y (bool [n]) on a few columns x [n, k] by Newton's method (IRLS): exact and fast
    for k <= 10 (a (k+1) x (k+1) solve per step). Returns weights [k + 1] for [x, 1]."""
    X = torch.cat([x.double(), torch.ones(len(x), 1, dtype=torch.float64)], 1)
    t = y.double()
    w = torch.zeros(X.shape[1], dtype=torch.float64)
    reg = l2 * torch.eye(X.shape[1], dtype=torch.float64)
    reg[-1, -1] = 0  # the bias is not penalised
    for _ in range(steps):
        p = torch.sigmoid(X @ w)
        grad = X.T @ (p - t) + reg @ w
        hess = (X * (p * (1 - p))[:, None]).T @ X + reg + 1e-9 * torch.eye(X.shape[1], dtype=torch.float64)
        step = torch.linalg.solve(hess, grad)
        w = w - step
        if step.abs().max() < 1e-8:
            break
    return w


def _binary_f1(x_train, y_train, x_test, y_test):
    w = _fit_binary(x_train, y_train)
    return f1((x_test.double() @ w[:-1] + w[-1]) > 0, y_test)


def k_sparse_probing(
    acts_train: torch.Tensor, y_train: torch.Tensor, acts_test: torch.Tensor, y_test: torch.Tensor,
    max_k: int = 5, letters=None, progress: bool = True,
) -> pd.DataFrame:  # fmt: skip
    """F1 of a k-latent probe for each letter and k = 1..max_k: one row per (letter, k) with the latents used.

    acts_*: SAE activations [n, d_sae]; y_*: letter index [n]. The latents are `select_latents` on the
    training words; a one-letter-vs-rest logistic regression on those k latents is scored on the test words.
    """
    max_k = check_int(max_k, "max_k", low=1, high=acts_train.shape[1])
    letters = range(len(LETTERS)) if letters is None else letters
    rows = []
    for i in progress_bar(list(letters), desc="k-sparse probes", unit="letter", disable=not progress):
        on_train, on_test = y_train == i, y_test == i
        if not on_train.any() or not on_test.any():
            continue
        ranked = select_latents(acts_train, on_train, max_k)
        for k in range(1, max_k + 1):
            use = ranked[:k]
            score = _binary_f1(acts_train[:, use].float(), on_train, acts_test[:, use].float(), on_test)
            rows.append({"letter": LETTERS[i], "k": k, "f1": score, "latents": use.tolist()})
    return pd.DataFrame(rows)


def main_latents(table: pd.DataFrame, jump: float = F1_JUMP) -> dict[str, list[int]]:
    """Each letter's main latents from `k_sparse_probing`'s table: the latents of the largest k reached while
    every step from k-1 to k added more than `jump` F1 (k = 1 always counts; SAEBench's rule)."""
    out = {}
    for letter, rows in table.sort_values("k").groupby("letter", sort=False):
        best, keep = None, []
        for _, row in rows.iterrows():
            if best is None or row.f1 > best + jump:
                best, keep = row.f1, row.latents
            else:
                break
        out[letter] = list(keep)
    return out


# ---------------------------------------------------------------- absorption


def cosines(W_dec: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
    """Cosine of every decoder row [d_sae, d_model] with `direction` [d_model]: [d_sae]."""
    W = W_dec.float()
    return (W @ direction.float()) / (W.norm(dim=1).clamp_min(1e-8) * direction.float().norm())


def is_full_absorption(
    sae_acts: torch.Tensor, main: list[int], proj: torch.Tensor, cos: torch.Tensor, probe_proj: torch.Tensor,
    cos_full: float = COS_FULL, share: float = SHARE,
) -> torch.Tensor:  # fmt: skip
    """Which words [n] show full absorption (bool).

    sae_acts [n, d_sae]; main: the letter's main latents; proj [n, d_sae]: each latent's contribution to the
    probe projection (activation x decoder row . unit probe); cos [d_sae]: each decoder row's cosine with
    the probe; probe_proj [n]: the activation's projection on the unit probe. A word is fully absorbed when
    every main latent is silent, probe_proj > 0, and the latent with the largest contribution has cosine
    >= cos_full and carries at least `share` of probe_proj.
    """
    silent = (sae_acts[:, main] <= 0).all(1)
    top = proj.argmax(1)
    top_share = proj.gather(1, top[:, None])[:, 0] / probe_proj
    return silent & (probe_proj > 0) & (cos[top] >= cos_full) & (top_share >= share)


def absorption_fraction(
    main: list[int], proj: torch.Tensor, cos: torch.Tensor, probe_proj: torch.Tensor,
    cos_fraction: float = COS_FRACTION, share: float = SHARE, max_absorbers: int = MAX_ABSORBERS,
) -> torch.Tensor:  # fmt: skip
    """SAEBench's absorption fraction of each word [n], in [0, 1]: what the main latents do not carry of the
    probe projection and up to `max_absorbers` other aligned latents (cosine >= cos_fraction) do carry."""
    candidate = (cos >= cos_fraction).expand_as(proj).clone()
    candidate[:, main] = False
    others = torch.where(candidate & (proj > 0), proj, torch.zeros_like(proj))
    absorbed = others.topk(min(max_absorbers, proj.shape[1]), dim=1).values.sum(1)
    main_proj = proj[:, main].sum(1)
    unaccounted = probe_proj - main_proj
    taken = torch.minimum(absorbed, unaccounted)
    frac = (taken / (taken + main_proj)).clamp(0, 1)
    frac = torch.where(main_proj <= 0, torch.ones_like(frac), frac)
    none = (main_proj >= probe_proj) | (absorbed / probe_proj < share)
    return torch.where(none, torch.zeros_like(frac), frac)


@torch.no_grad()
def absorption_table(
    sae_acts: torch.Tensor, W_dec: torch.Tensor, x: torch.Tensor, y: torch.Tensor, probe: Probe,
    mains: dict[str, list[int]], words: list[str] | None = None, width: int | None = None,
) -> pd.DataFrame:  # fmt: skip
    """One row per test word the probe gets right: its letter, whether it is fully absorbed, its absorption
    fraction, the top-contributing latent and its cosine and share, and whether a main latent fired.

    sae_acts [n, d_sae] (the test words' SAE activations), W_dec [d_sae, d_model], x [n, d_model] (their
    residual stream), y [n] letter index. width: use only latents 0:width (a Matryoshka prefix).
    """
    width = W_dec.shape[0] if width is None else check_int(width, "width", low=1, high=W_dec.shape[0])
    acts, W = sae_acts[:, :width].float(), W_dec[:width].float()
    right = probe.predict(x) == y
    rows = []
    for i, letter in enumerate(LETTERS):
        idx = ((y == i) & right).nonzero()[:, 0]
        main = [m for m in mains.get(letter, []) if m < width]
        if len(idx) == 0 or not main:
            continue
        p = probe.direction(i)
        cos = cosines(W, p)
        proj = acts[idx] * (W @ p)  # each latent's share of the reconstruction's projection on the probe
        probe_proj = x[idx].float() @ p
        full = is_full_absorption(acts[idx], main, proj, cos, probe_proj)
        frac = absorption_fraction(main, proj, cos, probe_proj)
        top = proj.argmax(1)
        for j, n in enumerate(idx.tolist()):
            rows.append({
                "letter": letter, "word": None if words is None else words[n],
                "main_fired": bool((acts[n, main] > 0).any()), "full_absorption": bool(full[j]),
                "fraction": float(frac[j]), "top_latent": int(top[j]), "top_cos": float(cos[top[j]]),
                "top_share": float(proj[j, top[j]] / probe_proj[j]),
            })  # fmt: skip
    types = {
        "main_fired": bool,
        "full_absorption": bool,
        "fraction": float,
        "top_latent": int,
        "top_cos": float,
    }
    return pd.DataFrame(rows, columns=TABLE_COLUMNS).astype(types)  # typed even when empty


def by_letter(table: pd.DataFrame) -> pd.DataFrame:
    """Per letter: true positives (words), full-absorption rate, mean absorption fraction, share with a main
    latent silent."""
    g = table.groupby("letter")
    return pd.DataFrame({"words": g.size(), "full_absorption": g.full_absorption.mean(),
                         "fraction": g.fraction.mean(), "main_silent": 1 - g.main_fired.mean()})  # fmt: skip


def summary(table: pd.DataFrame, report: pd.DataFrame | None = None) -> dict:
    """SAEBench's two numbers: the mean over letters of the full-absorption rate and of the absorption fraction
    (letters whose probe F1 in `report` is below MIN_PROBE_F1 left out, as SAEBench does)."""
    per = by_letter(table)
    if report is not None:
        per = per[per.index.isin(report.index[report.f1 >= MIN_PROBE_F1])]
    return {"letters": len(per), "full_absorption": float(per.full_absorption.mean()),
            "fraction": float(per.fraction.mean())}  # fmt: skip


def prefix_absorption(
    sae_acts_train, y_train, sae_acts_test, W_dec, x_test, y_test, probe: Probe, widths, max_k: int = 5,
    progress: bool = True,
) -> pd.DataFrame:  # fmt: skip
    """For each Matryoshka width w: the main latents chosen among latents 0:w only, their mean k=1 F1, and the
    absorption (full rate, fraction) measured with the prefix SAE (latents w: set to 0). One row per width."""
    rows = []
    for w in progress_bar(list(widths), desc="prefixes", unit="width", disable=not progress):
        sparse = k_sparse_probing(sae_acts_train[:, :w], y_train, sae_acts_test[:, :w], y_test,
                                  max_k=min(max_k, w), progress=False)  # fmt: skip
        mains = main_latents(sparse)
        table = absorption_table(sae_acts_test, W_dec, x_test, y_test, probe, mains, width=w)
        s = summary(table)
        rows.append({"width": w, "f1_k1": float(sparse[sparse.k == 1].f1.mean()),
                     "main_latents": sum(map(len, mains.values())) / max(len(mains), 1),
                     "full_absorption": s["full_absorption"], "fraction": s["fraction"]})  # fmt: skip
    return pd.DataFrame(rows).set_index("width")


__all__ = [
    "COS_FRACTION", "COS_FULL", "F1_JUMP", "LETTERS", "MAX_ABSORBERS", "MIN_PROBE_F1", "SHARE", "Probe",
    "Split", "absorption_fraction", "absorption_table", "by_letter", "cosines", "f1", "is_full_absorption",
    "k_sparse_probing", "letter_token_ids", "main_latents", "prefix_absorption", "probe_report", "prompts", "select_latents",
    "split_words", "summary", "train_probe", "vocab_words", "word_acts", "word_position",
]  # fmt: skip
