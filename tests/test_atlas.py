"""The feature atlas (saehelpers.atlas): exact merges, the command on mini, torchrun K=2, the site in Chromium.

One atlas is built per session on mini from a few held-out texts plus hostile ones (a small budget: CI
time is tight); the torchrun run is compared with it byte for byte, and the browser test opens it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from saehelpers.atlas import build, site
from saehelpers.atlas.stats import AtlasStats, Moments, merge_examples, sorted_examples
from saehelpers.features import float_key, uniform_key

HOSTILE = [
    'Click <img src=x onerror="window.__pwned=1"> here and there.',
    "The end </script><script>window.__pwned=2</script> & more &amp; text.",
]
LAYER = 6
ARGS = ["--preset", "mini", "--layers", str(LAYER), "--tokens", "320", "--batch-size", "4", "--seq-len", "48",
        "--examples", "6", "--threads", "1", "--quiet"]  # fmt: skip
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def read_js(path: Path):
    """The arguments of the one call a data file makes, e.g. ATLAS.rows(6, [...]) -> [6, [...]]."""
    text = path.read_text(encoding="utf-8")
    call = re.match(r"[A-Za-z.]+\(", text)
    assert call and text.endswith(");\n"), path
    return json.loads("[" + text[call.end() : -3] + "]")


# ---------------------------------------------------------------- the merge is exact


def _stream(seed, n_batches=6, rows=3, seq=10, d=24, ties=True):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_batches):
        feats = torch.rand(rows * seq, d, generator=g) * 5
        feats[torch.rand(rows * seq, d, generator=g) < 0.7] = 0  # sparse, like an SAE's code
        if ties:
            feats = (feats * 2).round() / 2  # many equal activations: the tie-break decides
        ids = torch.randint(0, 1000, (rows, seq), generator=g)
        keep = torch.rand(rows, seq, generator=g) > 0.1
        out.append((feats, ids, keep))
    return out


def _run(batches, owner, world, d=24, k=4):
    """Process `batches` as `world` ranks would (batch i on rank owner[i]), then merge as rank 0 does."""
    ranks = [AtlasStats(d, k, before=2, after=1) for _ in range(world)]
    seen, moments = 0, []
    for i, (feats, ids, keep) in enumerate(batches):
        moments.append(ranks[owner[i]].add(feats, ids, keep, seen))
        seen += int(keep.sum())
    first = ranks[0]
    first.merge_tables([r.tables() for r in ranks[1:]])
    first.merge_moments(moments)
    first.n_tokens = seen
    return first


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_merge_is_exact_for_any_split(seed):
    batches = _stream(seed)
    one = _run(batches, [0] * len(batches), 1)
    split = np.random.default_rng(seed).integers(0, 3, len(batches))  # random, uneven, some rank maybe idle
    many = _run(batches, split.tolist(), 3)
    assert torch.equal(one.hist, many.hist)
    for a, b in zip(one.moments.stack(), many.moments.stack()):
        assert torch.equal(a, b)
    ea, eb = sorted_examples(one.examples), sorted_examples(many.examples)
    for name in ("key", "value", "index", "tokens", "acts"):
        assert torch.equal(getattr(ea, name), getattr(eb, name)), name


def test_examples_are_the_true_top_and_sample():
    d, k = 24, 4
    batches = _stream(3)
    stats = _run(batches, [0, 1, 0, 1, 1, 0], 2, d, k)
    feats = torch.cat([f[0] for f in batches])
    keep = torch.cat([f[2].reshape(-1) for f in batches])
    kept = feats[keep]  # stream index = row here
    index = torch.arange(len(kept))
    for f in range(d):
        fires = (kept[:, f] > 0).nonzero().flatten()
        # top: largest activation, equal activations to the earlier token
        want = sorted(fires.tolist(), key=lambda i: (-kept[i, f].item(), i))[:k]
        got = [e["index"] for e in stats.examples.of(f)]
        assert got == want, f
        # random sample: the k largest hash keys of (token index, latent)
        keys = uniform_key(index[fires], torch.tensor(f), d)
        want = set(fires[keys.argsort(descending=True)[:k]].tolist())
        assert {e["index"] for e in stats.examples.of(d + f)} == want
        assert int(stats.hist[f].sum()) == len(fires)
        vals = kept[fires, f].double()
        assert stats.moments.count[f] == len(fires)
        if len(fires):
            assert stats.moments.mean[f].item() == pytest.approx(vals.mean().item(), rel=1e-12)
            assert stats.moments.m2[f].item() == pytest.approx(
                ((vals - vals.mean()) ** 2).sum().item(), abs=1e-9
            )
    assert float_key(torch.tensor([1.0])).item() > 0  # the top key's high bits: positive floats sort as ints


def test_chan_merge_matches_one_pass():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1000, generator=g, dtype=torch.float64) * 10
    parts = torch.split(x, [1, 300, 0, 699])
    total = Moments(1)
    for p in parts:
        m = Moments(1)
        m.count[0], m.mean[0] = len(p), p.mean() if len(p) else 0.0
        m.m2[0] = ((p - p.mean()) ** 2).sum() if len(p) else 0.0
        total.merge(m)
    assert total.count.item() == 1000
    assert total.mean.item() == pytest.approx(x.mean().item(), rel=1e-13)
    assert total.std.item() == pytest.approx(x.std(unbiased=False).item(), rel=1e-12)


def test_merge_examples_keeps_largest_keys_best_first():
    from saehelpers.features import Examples

    a, b = Examples(1, 2, 0, 0), Examples(1, 2, 0, 0)
    a.key[0], a.index[0], b.key[0], b.index[0] = torch.tensor([5, 1]), torch.tensor([0, 1]), torch.tensor([3, 7]), torch.tensor([2, 3])  # fmt: skip
    m = merge_examples([a, b])
    assert m.key[0].tolist() == [7, 5] and m.index[0].tolist() == [3, 0]


# ---------------------------------------------------------------- clear errors


def test_too_wide_to_fit_says_what_to_lower():
    with pytest.raises(MemoryError, match="--examples"):
        build.check_fits(32768, 16, 8, 4, 2048, world=8, free=2**30)
    assert build.check_fits(2048, 6, 8, 4, 192, world=1, free=2**30) < 2**30


def test_output_folder_is_never_overwritten_silently(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="other files"):
        site.check_out(tmp_path)
    (tmp_path / "notes.txt").unlink()
    (tmp_path / site.MANIFEST).write_text(json.dumps({"format": site.FORMAT}))
    with pytest.raises(FileExistsError, match="--overwrite"):
        site.check_out(tmp_path)
    assert site.check_out(tmp_path, overwrite=True) == tmp_path
    f = tmp_path / "file"
    f.write_text("")
    with pytest.raises(FileExistsError, match="is a file"):
        site.check_out(f)


def test_cli_rejects_a_missing_layer(tmp_path, capsys):
    from saehelpers.atlas.cli import main

    assert main(["--preset", "mini", "--layers", "5", "--tokens", "10", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "No SAE for layer 5" in err and "layers" in err
    assert not (tmp_path / "x").exists()


# ---------------------------------------------------------------- the command on mini, one process and two


@pytest.fixture(scope="session")
def texts_file(tmp_path_factory):
    from saehelpers.text import iter_texts

    path = tmp_path_factory.mktemp("atlas-texts") / "texts.jsonl"
    texts = [*HOSTILE, *iter_texts("mini", "heldout", limit=6)]
    path.write_text("".join(json.dumps(t) + "\n" for t in texts))
    return path


def _atlas(out: Path, texts: Path, torchrun: bool = False) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "saehelpers", "atlas", *ARGS, "--texts", str(texts), "--out", str(out)]
    if torchrun:
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            "2",
            *cmd[1:],
        ]
    r = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


@pytest.fixture(scope="session")
def atlas(tmp_path_factory, texts_file):
    out = tmp_path_factory.mktemp("atlas") / "site"
    r = _atlas(out, texts_file)
    assert f"wrote {out / 'index.html'}" in r.stdout
    return out


def test_command_writes_every_latent(atlas):
    from saehelpers import get_release

    rel = get_release("mini")
    meta = json.loads((atlas / "atlas.json").read_text())
    assert meta["format"] == site.FORMAT and [x["layer"] for x in meta["layers"]] == [LAYER]
    assert meta["layers"][0]["n_tokens"] == 320
    layer, rows = read_js(atlas / "data" / f"L{LAYER}-rows.js")
    assert layer == LAYER and [r[0] for r in rows] == list(range(rel.d_sae))
    panels = []
    for s in range(meta["layers"][0]["shards"]):
        panels += read_js(atlas / "data" / f"L{LAYER}-p{s}.js")[2]
    assert len(panels) == rel.d_sae
    fired = 0
    for row, p in zip(rows, panels):
        _, group, count, freq, vmax = row[:5]
        assert rel.groups[group][0] <= row[0] < rel.groups[group][1]
        assert sum(c for _, c in p["hist"]) == count and freq == pytest.approx(count / 320, rel=1e-3)
        values = [e[0] for e in p["top"]]
        assert values == sorted(values, reverse=True) and len(p["top"]) == min(count, 6)
        if count:
            fired += 1
            assert values[0] == vmax and p["top"][0][3][p["top"][0][1]] == 100  # the centre is the max
            assert all(e[0] <= vmax for e in p["sample"]) and len(p["sample"]) == min(count, 6)
        assert len(p["up"]) == len(p["down"]) == site.N_LENS and len(p["near"]) == site.N_NEAR
        if p[
            "parent"
        ]:  # in an earlier group, and it lists this latent among its children (or has a full list)
            parent, cos = p["parent"]
            assert parent < rel.groups[group][0] and cos >= site.MIN_PARENT_COSINE
            kids = panels[parent]["children"]
            assert [row[0], cos] in kids or (len(kids) == site.N_CHILDREN and kids[-1][1] >= cos)
    assert fired > rel.d_sae // 4
    # every corpus text is JSON-escaped: no markup survives in any data file
    for f in (atlas / "data").iterdir():
        text = f.read_text()
        assert "<" not in text and ">" not in text and "&" not in text.replace("\\u0026", ""), f.name
    assert any("onerror" in r[8] for r in rows)  # the hostile text is in the atlas (as data)


def test_existing_atlas_needs_overwrite(atlas, capsys):
    from saehelpers.__main__ import main

    before = {p: p.read_bytes() for p in atlas.rglob("*") if p.is_file()}
    assert main(["atlas", *ARGS, "--out", str(atlas)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert before == {p: p.read_bytes() for p in atlas.rglob("*") if p.is_file()}


@pytest.mark.heavy
def test_torchrun_two_processes_write_the_same_bytes(atlas, texts_file, tmp_path):
    out = tmp_path / "site2"
    _atlas(out, texts_file, torchrun=True)
    files = sorted(p.relative_to(atlas) for p in atlas.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    for f in files:
        assert (atlas / f).read_bytes() == (out / f).read_bytes(), f


# ---------------------------------------------------------------- the site in Chromium


def _rare_word(rows):
    """A word of some latent's top context that few rows match (search is a substring match on lens + context)."""
    hay = [(r[7] + " \x00 " + r[8]).lower() for r in rows]
    best = None
    for r in rows:
        for w in re.findall(r"[a-z]{6,}", r[8].lower()):
            n = sum(w in h for h in hay)
            if best is None or n < best[0]:
                best = (n, w, r[0])
    return best


@pytest.mark.heavy
def test_site_in_the_browser(atlas):
    from tests import browser as B

    B.need_browser("the atlas's browser test")
    from playwright.sync_api import sync_playwright

    _, rows = read_js(atlas / "data" / f"L{LAYER}-rows.js")
    panels = read_js(atlas / "data" / f"L{LAYER}-p0.js")[2]
    errors = []
    with sync_playwright() as pw:
        chromium = B.launch_browser(pw)
        try:
            page = chromium.new_page()
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto((atlas / "index.html").resolve().as_uri())
            page.wait_for_selector("#rows tr")
            assert page.locator("#count").inner_text().endswith(f"of {len(rows)} latents")
            assert page.locator("#rows tr").count() == 100  # paged

            n, word, latent = _rare_word(rows)
            page.fill("#q", word)
            shown = page.eval_on_selector_all("#rows tr", "trs => trs.map(t => +t.dataset.latent)")
            assert latent in shown and len(shown) == min(n, 100)

            page.locator(f'#rows tr[data-latent="{latent}"]').click()
            page.wait_for_selector(f'#latent[data-latent="{latent}"]')
            assert page.locator("#latent .top .ex").count() == len(panels[latent]["top"]) > 0
            assert page.locator("#latent .sample .ex").count() == len(panels[latent]["sample"])
            assert page.locator("#latent svg.hist rect").count() == len(panels[latent]["hist"])
            assert word in page.locator("#latent .top").inner_text().lower()

            # parent and children links lead to the right latents
            child = next(i for i, p in enumerate(panels) if p["parent"])
            parent = panels[child]["parent"][0]
            page.goto((atlas / "index.html").resolve().as_uri() + f"#L{LAYER}/{child}")
            page.wait_for_selector(f'#latent[data-latent="{child}"]')
            page.locator("#latent .parent a").click()
            page.wait_for_selector(f'#latent[data-latent="{parent}"]')
            kids = page.eval_on_selector_all("#latent .children a", "as => as.map(a => +a.dataset.latent)")
            assert kids == [c for c, _ in panels[parent]["children"]]
            assert child in kids or len(kids) == site.N_CHILDREN
            page.locator("#latent .children a").first.click()
            page.wait_for_selector(f'#latent[data-latent="{kids[0]}"]')
            assert page.locator("#latent .parent a").inner_text() == f"#{parent}"

            # a hostile context renders as text
            for marker in ("<img src=x onerror", "</script><script>"):
                page.fill("#q", marker)
                bad = page.eval_on_selector_all("#rows tr", "trs => trs.map(t => +t.dataset.latent)")
                assert bad, marker
                page.locator(f'#rows tr[data-latent="{bad[0]}"]').click()
                page.wait_for_selector(f'#latent[data-latent="{bad[0]}"]')
                assert marker in page.locator("#latent .top").inner_text()
            assert page.locator("img").count() == 0
            assert not page.evaluate("[...document.scripts].some(s => s.text.includes('__pwned'))")
            assert page.evaluate("window.__pwned") is None
        finally:
            chromium.close()
    assert errors == []
