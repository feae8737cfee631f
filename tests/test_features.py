"""saehelpers.features: streaming statistics against brute force, cards, contrast, and bad input."""

from pathlib import Path

import pytest
import torch

from saehelpers import features as F
from saehelpers import get_release
from saehelpers.activations import collect_resid
from saehelpers.tokens import text_batches

K, BEFORE, AFTER = 3, 2, 1


# ---------------------------------------------------------------- a synthetic stream, no model


def synthetic_stream(n_batches=4, batch=3, seq=7, d=10, seed=0):
    """Batches (feats, ids, keep): sparse random activations, BOS at position 0, some right padding."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_batches):
        feats = torch.rand(batch, seq, d, generator=g) * 5
        feats *= torch.rand(batch, seq, d, generator=g) < 0.3  # ~30% fire
        ids = torch.randint(10, 99, (batch, seq), generator=g)
        keep = torch.ones(batch, seq, dtype=torch.bool)
        keep[:, 0] = False  # BOS
        lengths = torch.randint(2, seq + 1, (batch,), generator=g)
        keep &= torch.arange(seq) < lengths[:, None]  # padding
        out.append((feats, ids, keep))
    return out


def brute_force(stream, d, k=K, before=BEFORE, after=AFTER):
    """Every firing event of the whole stream in plain Python, then sorted per latent."""
    events, n = {f: [] for f in range(d)}, 0
    for feats, ids, keep in stream:
        batch, seq, _ = feats.shape
        for r in range(batch):
            for s in range(seq):
                if not keep[r, s]:
                    continue
                for f in feats[r, s].nonzero().flatten().tolist():
                    window = range(s - before, s + after + 1)
                    inside = [0 <= p < seq and bool(keep[r, p]) for p in window]
                    toks = [int(ids[r, p]) if ok else -1 for p, ok in zip(window, inside)]
                    acts = [float(feats[r, p, f]) if ok else 0.0 for p, ok in zip(window, inside)]
                    events[f].append(
                        {"value": float(feats[r, s, f]), "index": n, "tokens": toks, "acts": acts}
                    )
                n += 1
    return events, n


def check_rows(stats, events, key, offset):
    """Rows offset + f of the examples table hold latent f's k best events by `key`, with their contexts."""
    got = stats.examples.best_first()
    for f, evs in events.items():
        want = sorted(evs, key=lambda e: key(e, f), reverse=True)[: stats.examples.k]
        row = offset + f
        assert int((got["index"][row] >= 0).sum()) == len(want)
        for j, e in enumerate(want):
            assert got["index"][row, j] == e["index"]
            assert got["value"][row, j] == pytest.approx(e["value"])
            assert got["tokens"][row, j].tolist() == e["tokens"]
            assert got["acts"][row, j].tolist() == pytest.approx(e["acts"])


@pytest.mark.parametrize("n_batches, d", [(1, 10), (4, 10), (3, 40)])  # 40: blocks of 16 and a part block
def test_stream_equals_brute_force(n_batches, d):
    stream = synthetic_stream(n_batches=n_batches, d=d)
    stats = F.FeatureStats(d, K, BEFORE, AFTER)
    for feats, ids, keep in stream:
        stats.add(feats, ids, keep)
    events, n = brute_force(stream, d)
    assert stats.n_tokens == n
    assert stats.counts.tolist() == [len(events[f]) for f in range(d)]
    assert stats.sums.tolist() == pytest.approx([sum(e["value"] for e in events[f]) for f in range(d)])
    assert stats.max.tolist() == pytest.approx([max(e["value"] for e in events[f]) for f in range(d)])
    for f in range(d):
        vals = torch.tensor([e["value"] for e in events[f]])
        idx = torch.bucketize(vals, F.HIST_EDGES[1:-1])
        want = torch.bincount(idx, minlength=len(F.HIST_EDGES) - 1)
        assert stats.hist[f].tolist() == want.tolist()
    check_rows(stats, events, key=lambda e, f: e["value"], offset=0)  # the top examples

    def sample_key(e, f):  # the sample: the k firing events with the largest uniform key
        return int(F.uniform_key(torch.tensor([e["index"]]), torch.tensor([f]), d))

    check_rows(stats, events, key=sample_key, offset=d)
    top, sample = stats.top(0), stats.sample(0)
    assert [e["index"] for e in top] == [e["index"] for e in sorted(events[0], key=lambda e: -e["value"])[:K]]
    assert [e["value"] for e in sample] == sorted((e["value"] for e in sample), reverse=True)
    # A smaller sample: the top 2 keys.
    drawn = sorted(events[0], key=lambda e: sample_key(e, 0), reverse=True)[:2]
    assert {e["index"] for e in stats.sample(0, 2)} == {e["index"] for e in drawn}


def test_rising_activations_replace_examples_within_a_batch():
    """Activations that rise token by token: every firing enters its row and most are pushed out again
    in the same batch (the merge's list of entering firings outgrows its first size, 4 x d_sae)."""
    d, batch, seq = 2, 4, 40
    feats = torch.arange(1, batch * seq * d + 1, dtype=torch.float32).view(batch, seq, d) / 100
    ids = torch.arange(batch * seq).view(batch, seq) + 10
    keep = torch.ones(batch, seq, dtype=torch.bool)
    keep[:, 0] = False
    stream = [(feats, ids, keep)]
    stats = F.FeatureStats(d, K, BEFORE, AFTER)
    stats.add(*stream[0])
    events, n = brute_force(stream, d)
    assert stats.n_tokens == n == batch * (seq - 1)
    check_rows(stats, events, key=lambda e, f: e["value"], offset=0)
    assert [e["index"] for e in stats.top(1)] == [n - 1, n - 2, n - 3]  # the last tokens: the largest
    check_rows(stats, events, key=lambda e, f: int(F.uniform_key(torch.tensor(e["index"]), torch.tensor(f), d)),
               offset=d)  # fmt: skip


def test_ties_keep_the_earliest_firings():
    """Equal activations: the top rows keep the first k firings in stream order, whatever the batching;
    -0.0 is not a firing."""
    d, batch, seq = 3, 2, 6
    feats = torch.full((batch, seq, d), 2.0)
    feats[:, :, 2] = -0.0
    feats[0, 3, 1] = 0.0
    ids = torch.arange(batch * seq).view(batch, seq)
    keep = torch.ones(batch, seq, dtype=torch.bool)
    keep[:, 0] = False
    stream = [(feats, ids, keep), (feats, ids, keep)]
    events, n = brute_force(stream, d)
    for parts in (1, 2):  # the whole batch at once, then row by row
        stats = F.FeatureStats(d, K, BEFORE, AFTER)
        for f_, i_, k_ in stream:
            for r in range(0, batch, batch // parts):
                stats.add(f_[r : r + batch // parts], i_[r : r + batch // parts], k_[r : r + batch // parts])
        assert stats.n_tokens == n == 2 * batch * (seq - 1)
        assert stats.counts.tolist() == [n, n - 2, 0]
        assert [e["index"] for e in stats.top(0)] == [0, 1, 2]
        assert [e["index"] for e in stats.top(1)] == [0, 1, 3]  # token 2 (row 0, place 3) does not fire
        assert stats.top(2) == [] and stats.sample(2) == []
        check_rows(stats, events, key=lambda e, f: e["value"], offset=0)


def test_batching_does_not_change_the_result():
    """The same tokens cut into batches differently give identical tables (the sample included)."""
    d = 8
    stream = synthetic_stream(n_batches=2, batch=4, d=d, seed=1)
    one, two = F.FeatureStats(d, K, BEFORE, AFTER), F.FeatureStats(d, K, BEFORE, AFTER)
    for feats, ids, keep in stream:
        one.add(feats, ids, keep)
        for part in range(0, 4, 1):  # row by row
            two.add(feats[part : part + 1], ids[part : part + 1], keep[part : part + 1])
    for name in ("counts", "hist"):
        assert torch.equal(getattr(one, name), getattr(two, name))
    a, b = one.examples.best_first(), two.examples.best_first()
    for name in F.Examples.FIELDS:
        assert torch.equal(a[name], b[name])


def test_memory_does_not_grow_with_tokens():
    d = 16
    stats = F.FeatureStats(d, K, BEFORE, AFTER)
    stats.add(*synthetic_stream(1, d=d)[0])
    size = stats.nbytes
    for batch in synthetic_stream(20, d=d, seed=3):
        stats.add(*batch)
    assert stats.nbytes == size and stats.n_tokens > 100


def test_uniform_key_is_uniform():
    keys = F.uniform_key(torch.arange(20000), torch.full((20000,), 7), 2048) / 2**32
    assert keys.min() >= 0 and keys.max() < 1
    assert keys.mean().item() == pytest.approx(0.5, abs=0.01)
    assert torch.histc(keys.float(), 10, 0, 1).min() > 1800  # each tenth holds about 2000


def test_float_key_sorts_like_the_floats():
    x = torch.tensor([-float("inf"), -3.5, -1e-30, -0.0, 0.0, 1e-30, 0.25, 2.0, 7e20, float("inf")])
    keys = F.float_key(x).tolist()
    assert keys == sorted(keys) and len(set(keys)) == len(x)


def test_examples_of_and_save_load(tmp_path):
    d = 6
    stats = F.FeatureStats(d, K, BEFORE, AFTER, layer=3)
    for batch in synthetic_stream(2, d=d):
        stats.add(*batch)
    stats.save(tmp_path / "s.pt")
    back = F.FeatureStats.load(tmp_path / "s.pt")
    assert back.layer == 3 and back.n_tokens == stats.n_tokens
    assert torch.equal(back.examples.tokens, stats.examples.tokens)
    ex = back.top(0)
    assert [e["value"] for e in ex] == sorted((e["value"] for e in ex), reverse=True)
    for e in ex:
        assert -1 not in e["tokens"][: e["centre"] + 1][-1:]  # the centre is a real token
        assert e["acts"][e["centre"]] == pytest.approx(e["value"])


def test_add_rejects_wrong_shapes():
    stats = F.FeatureStats(4)
    with pytest.raises(ValueError, match=r"feats must be \[batch, seq, 4\]"):
        stats.add(
            torch.zeros(2, 3, 5), torch.zeros(2, 3, dtype=torch.long), torch.ones(2, 3, dtype=torch.bool)
        )
    with pytest.raises(ValueError, match=r"keep must have input_ids' shape \(2, 3\)"):
        stats.add(
            torch.zeros(2, 3, 4), torch.zeros(2, 3, dtype=torch.long), torch.ones(3, 2, dtype=torch.bool)
        )


@pytest.mark.parametrize("bad", [{"k": 0}, {"k": 2.0}, {"before": -1}, {"after": True}, {"d_sae": 0}])
def test_stats_settings_must_be_counts(bad):
    args = {"d_sae": 4} | bad
    with pytest.raises(ValueError, match=rf"{next(iter(bad))} must be an int >= [01], got"):
        F.FeatureStats(**args)


# ---------------------------------------------------------------- on the mini model with a random SAE

LAYER = 6  # random_sae's layer (tests/conftest.py)


@pytest.fixture
def sae(random_sae):
    """The random SAE of the mini release's shape (tests/conftest.py), under this module's short name."""
    return random_sae


def test_stream_stats_on_the_model_equals_brute_force(mini, sae, small_batches):
    model, _ = mini
    stats = F.stream_stats(model, sae, small_batches, k=4, before=3, after=2, progress=False)
    acts = collect_resid(model, small_batches, [LAYER], progress=False)
    with torch.no_grad():
        feats = sae.encode(acts.acts[LAYER])  # [n_tokens, d_sae], BOS and padding left out
    assert stats.n_tokens == acts.n_tokens
    assert torch.equal(stats.counts, (feats != 0).sum(0))
    assert torch.allclose(stats.max, feats.max(0).values, atol=1e-5)
    top = feats.topk(4, dim=0)
    fired = (feats != 0).sum(0) >= 4
    best = {name: t[: sae.cfg.d_sae] for name, t in stats.examples.best_first().items()}  # the top rows
    assert torch.equal(best["index"][fired], top.indices.T[fired])
    f = int(stats.counts.argmax())
    i = int(best["index"][f, 0])
    bos = model.config.bos_token_id
    ctx = [t for t in acts.context(i).tolist()[-4:] if t != bos]  # the token and up to 3 before it
    got = best["tokens"][f, 0, :4].tolist()
    assert [t for t in got if t != -1] == ctx  # -1 where there is no text, BOS included
    # max_tokens stops at exactly that many tokens
    assert F.stream_stats(model, sae, small_batches, max_tokens=9, progress=False).n_tokens == 9


def test_feature_stats_is_cached(mini, sae, tmp_path, monkeypatch):
    model, tok = mini
    monkeypatch.setattr(F, "cache_dir", lambda: tmp_path)
    kw = dict(release="mini", n_tokens=30, batch_size=2, seq_len=24, progress=False)
    first = F.feature_stats(model, tok, sae, **kw)
    files = list((tmp_path / "feature_stats").glob("*.pt"))
    assert len(files) == 1 and first.n_tokens == 30 and first.info["layer"] == LAYER
    calls = []
    monkeypatch.setattr(F, "stream_stats", lambda *a, **k: calls.append(1))
    again = F.feature_stats(model, tok, sae, **kw)
    assert (
        calls == []
        and torch.equal(again.counts, first.counts)
        and torch.equal(again.examples.tokens, first.examples.tokens)
    )


def test_feature_stats_cache_keys_on_the_models_dtype_and_heals_a_corrupt_file(
    mini, sae, tmp_path, monkeypatch, capsys
):
    """Statistics of a float32 model are not reused for a bfloat16 one; a corrupt cache file is detected,
    recomputed and replaced with one line; each write goes to a temporary file of its own."""
    model, tok = mini
    monkeypatch.setattr(F, "cache_dir", lambda: tmp_path)
    kw = dict(release="mini", n_tokens=30, batch_size=2, seq_len=24, progress=False)
    first = F.feature_stats(model, tok, sae, **kw)
    (path,) = (tmp_path / "feature_stats").glob("*.pt")
    assert first.info["model_dtype"] == "torch.float32"
    # The same weights read as bfloat16: a different key, so a second file (the numbers are not reused).
    monkeypatch.setattr(type(model), "dtype", property(lambda self: torch.bfloat16))
    other = F.feature_stats(model, tok, sae, **kw)
    monkeypatch.undo()
    monkeypatch.setattr(F, "cache_dir", lambda: tmp_path)
    assert other.info["model_dtype"] == "torch.bfloat16" and len(list(path.parent.glob("*.pt"))) == 2
    # A corrupt file: one line, then recomputed and replaced.
    path.write_bytes(b"not a torch file")
    capsys.readouterr()
    healed = F.feature_stats(model, tok, sae, **kw)
    out = capsys.readouterr().out
    assert (
        out.count("\n") == 1
        and f"{path.name} could not be used" in out
        and "recomputing and replacing" in out
    )
    assert torch.equal(healed.counts, first.counts)
    assert torch.equal(F.FeatureStats.load(path).counts, first.counts)  # the file was replaced
    # Writes go to a unique temporary file beside the target, renamed over it; none is left behind.
    written = []
    save = F.FeatureStats.save
    monkeypatch.setattr(F.FeatureStats, "save", lambda self, p: (written.append(p), save(self, p))[1])
    for _ in range(2):
        path.unlink()
        F.feature_stats(model, tok, sae, **kw)
    assert len(set(written)) == 2 and all(Path(p).parent == path.parent and Path(p) != path for p in written)
    assert sorted(p.name for p in path.parent.iterdir()) == sorted(p.name for p in path.parent.glob("*.pt"))


def test_feature_stats_rejects_a_layer_without_sae(mini, sae):
    model, tok = mini
    sae.cfg.metadata.hook_name = "blocks.3.hook_resid_post"
    try:
        with pytest.raises(ValueError, match=r"reads layer 3, which has no SAE in the 'mini' release"):
            F.feature_stats(model, tok, sae, release="mini", cache=False)
        sae.cfg.metadata.hook_name = "blocks.18.hook_resid_post"
        with pytest.raises(ValueError, match=r"the model has only 18 decoder layers"):
            F.stream_stats(model, sae, [], progress=False)
    finally:
        sae.cfg.metadata.hook_name = f"blocks.{LAYER}.hook_resid_post"


@pytest.mark.parametrize("bad", ["", [], [""], ["ok", ""], None])
def test_empty_text_is_refused(mini, sae, bad):
    model, tok = mini
    with pytest.raises(ValueError, match="empty|non-empty"):
        if isinstance(bad, list):
            F.contrast(model, tok, sae, get_release("mini"), bad, ["fine"])
        else:
            F.encode_text(model, tok, sae, bad)


def test_encode_text_leaves_bos_out(mini, sae):
    model, tok = mini
    tokens, feats = F.encode_text(model, tok, sae, "Hello world")
    assert "".join(tokens) == "Hello world" and feats.shape == (len(tokens), sae.cfg.d_sae)


def test_contrast_is_the_difference_of_means(mini, sae):
    model, tok = mini
    a, b = ["Bonjour, comment allez-vous ?", "Le chat dort."], ["Hello, how are you?"]
    table = F.contrast(model, tok, sae, get_release("mini"), a, b)
    means = []
    for texts in (a, b):
        feats = torch.cat([F.encode_text(model, tok, sae, t)[1] for t in texts])
        means.append(feats.mean(0))
    want = (means[0] - means[1]).double()
    got = torch.tensor(table["diff"].sort_index().to_numpy())
    assert torch.allclose(got, want, atol=1e-4)
    assert table["diff"].is_monotonic_decreasing and table.index[0] == int(want.argmax())


def test_dense_on_cpu_copies_only_nonzero_entries_yet_gives_the_same_block():
    from saehelpers.features import dense_on_cpu

    g = torch.Generator().manual_seed(0)
    x = torch.relu(torch.randn(64, 512, generator=g)) * (torch.rand(64, 512, generator=g) < 0.05)
    for feats in (x, x.to(torch.bfloat16)):
        sparse, dense = dense_on_cpu(feats, sparse=True), dense_on_cpu(feats, sparse=False)
        assert sparse.dtype == dense.dtype == torch.float32 and sparse.is_contiguous()
        assert torch.equal(sparse, dense) and torch.equal(dense, feats.float())


def test_stream_stats_needs_a_bos_id(mini, sae, monkeypatch):
    """A config without bos_token_id is an error, as in collect_resid, not a silent count of BOS as a token."""
    model, tok = mini
    monkeypatch.setattr(model.config, "bos_token_id", None)
    with pytest.raises(ValueError, match="config has no bos_token_id"):
        F.stream_stats(model, sae, text_batches(tok, ["A cat."]), progress=False)
