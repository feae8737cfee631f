"""What the atlas shows per latent (`describe_layer`) and the static site that shows it (`write_site`).

The site is index.html (the app: no CDN, no fetch) and data files loaded with <script> tags, so it
opens from file://: data/atlas.js (the manifest), data/L<layer>-rows.js (the table: one short row per
latent) and data/L<layer>-p<i>.js (the panels of SHARD latents each, loaded when one is opened).
Every text is JSON with `<`, `>` and `&` escaped, and the page puts it in the DOM as text only.
Floats are written with fixed formatting and nothing depends on time or process, so the same
statistics give the same bytes.
"""

from __future__ import annotations

import json
import shutil
from importlib import resources
from pathlib import Path

import torch

from .. import lm
from ..features import HIST_EDGES
from ..matryoshka import latent_groups
from ..progress import progress_bar
from ..tokens import byte_chars, token_bytes, token_strings

FORMAT = "saehelpers-atlas/1"
MANIFEST = "atlas.json"
SHARD = 4096  # latents per panel file
N_LENS, N_NEAR, N_CHILDREN = 8, 6, 8
MIN_PARENT_COSINE = 0.2  # below this the nearest earlier-group latent is not called a parent
CHUNK = 256  # latents per logit-lens / cosine block


def fnum(x: float, digits: int = 4) -> float:
    """x rounded to `digits` significant digits (so the file holds 0.1234, not 0.12340000271797180)."""
    return float(f"{float(x):.{digits}g}")


def check_out(out, overwrite: bool = False) -> Path:
    """The output folder, if it is new, empty, or (with overwrite) an atlas written before; else a clear error."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out {out} is a file, not a folder: give a new folder's path.")
    if out.is_dir() and any(out.iterdir()):
        manifest = out / MANIFEST
        is_atlas = manifest.is_file() and json.loads(manifest.read_text()).get("format") == FORMAT
        if not is_atlas:
            raise FileExistsError(
                f"--out {out} already holds other files (no {MANIFEST} of an atlas): give a new or empty folder. "
                "Nothing was written."
            )
        if not overwrite:
            raise FileExistsError(
                f"--out {out} already holds an atlas: pass --overwrite to replace it, or give another folder."
            )
    return out


# ---------------------------------------------------------------- per latent


@torch.no_grad()
def lens_tables(model, W_dec, rank: int = 0, world: int = 1, progress: bool = True):
    """Logit lens of every decoder row: the N_LENS token ids it raises most, then the N_LENS it lowers most,
    and their logits, [d_sae, 2 * N_LENS] each. Process `rank` of `world` fills chunks rank, rank + world, ...
    (zeros elsewhere), so adding the processes' tables gives the whole."""
    d = len(W_dec)
    ids = torch.zeros(d, 2 * N_LENS, dtype=torch.long)
    vals = torch.zeros(d, 2 * N_LENS, dtype=torch.float32)
    mine = list(range(0, d, CHUNK))[rank::world]
    for a in progress_bar(mine, desc="logit lens", disable=not progress or rank):
        logits = lm.lens_logits(model, W_dec[a : a + CHUNK])
        up, down = logits.topk(N_LENS), logits.topk(N_LENS, largest=False)
        ids[a : a + CHUNK] = torch.cat([up.indices, down.indices], 1).cpu()
        vals[a : a + CHUNK] = torch.cat([up.values, down.values], 1).cpu()
    return ids, vals


class _Strings:
    """Token texts (`tokens.token_strings`, `tokens.context_strings`), each token id decoded once.

    `prefetch` decodes many ids in one call: the tokenizer's len(), which every call checks ids against,
    costs milliseconds with a large vocabulary."""

    def __init__(self, tokenizer):
        self.tokenizer, self.bytes, self.names = tokenizer, {}, {}

    def prefetch(self, ids) -> None:
        ids = sorted({int(i) for i in ids if i >= 0} - self.bytes.keys())
        if ids:
            self.bytes.update(zip(ids, token_bytes(self.tokenizer, ids)))
            self.names.update(zip(ids, token_strings(self.tokenizer, ids)))

    def name(self, i: int) -> str:
        if i not in self.names:
            self.prefetch([i])
        return self.names[i]

    def context(self, ids: list[int]) -> list[str]:
        # As tokens.context_strings (a character goes to the token holding its last byte), with a cache.
        self.prefetch(i for i in ids if i not in self.bytes)
        parts = [self.bytes[i] for i in ids]
        owner = [t for t, b in enumerate(parts) for _ in b]
        out, pos = [""] * len(parts), 0
        for text, n in byte_chars(b"".join(parts)):
            pos += n
            out[owner[pos - 1]] += text
        return out


@torch.no_grad()
def _cosines(W_dec, groups, release, progress):
    """Nearest decoder neighbours of every latent, and its parent: the most similar latent of an earlier group."""
    W = W_dec.float()
    W = W / W.norm(dim=1, keepdim=True).clamp_min(1e-8)
    starts = torch.tensor([a for a, _ in release.groups])
    near, parent = [], []
    for a in progress_bar(range(0, len(W), CHUNK), desc="decoder neighbours", disable=not progress):
        cos = W[a : a + CHUNK] @ W.T
        rows = torch.arange(a, min(a + CHUNK, len(W)))
        cos[rows - a, rows] = -torch.inf
        top = cos.topk(N_NEAR)
        near += [[[int(i), fnum(v, 3)] for i, v in zip(ix, vs)] for ix, vs in zip(top.indices.tolist(), top.values.tolist())]  # fmt: skip
        limit = starts[groups[rows]]  # a parent lives before the latent's group
        earlier = cos.masked_fill(torch.arange(len(W))[None, :] >= limit[:, None], -torch.inf)
        best = earlier.max(dim=1)
        for v, i, lim in zip(best.values.tolist(), best.indices.tolist(), limit.tolist()):
            parent.append([int(i), fnum(v, 3)] if lim > 0 and v >= MIN_PARENT_COSINE else None)
    children = [[] for _ in range(len(W))]
    for c, p in enumerate(parent):
        if p is not None:
            children[p[0]].append([c, p[1]])
    children = [sorted(ch, key=lambda e: (-e[1], e[0]))[:N_CHILDREN] for ch in children]
    return near, parent, children


def _examples(strings: _Strings, ex, row, vmax):
    """[value, centre, [token texts], [activation as % of the latent's max]] per example, best first."""
    out = []
    for e in ex.of(row):
        texts = strings.context(e["tokens"])
        pct = [round(100 * a / vmax) if vmax > 0 else 0 for a in e["acts"]]
        out.append([fnum(e["value"]), e["centre"], texts, pct])
    return out


def describe_layer(tokenizer, sae, release, layer, stats, lens, progress=True) -> dict:
    """Everything the site shows for one layer, as plain lists (rank 0, after the merge); lens from `lens_tables`."""
    d = stats.d_sae
    groups = latent_groups(release)
    counts = stats.hist.sum(1)
    top_value = stats.examples.value[:d]
    vmax = torch.where(stats.examples.index[:d] >= 0, top_value, 0.0).max(1).values
    strings = _Strings(tokenizer)
    strings.prefetch(lens[0].unique().tolist() + stats.examples.tokens.unique().tolist())
    lens = [[[strings.name(i), fnum(v, 3)] for i, v in zip(ix, vs)] for ix, vs in zip(lens[0].tolist(), lens[1].tolist())]  # fmt: skip
    ups, downs = [x[:N_LENS] for x in lens], [x[N_LENS:] for x in lens]
    near, parent, children = _cosines(sae.W_dec.detach(), groups, release, progress)
    rows, panels = [], []
    ex = stats.examples
    for f in progress_bar(range(d), desc=f"layer {layer} pages", disable=not progress, mininterval=1):
        m = float(vmax[f])
        top = _examples(strings, ex, f, m)
        sample = _examples(strings, ex, d + f, m)
        hist = [[b, int(c)] for b, c in enumerate(stats.hist[f].tolist()) if c]
        line = "".join(top[0][2]) if top else ""
        rows.append([f, int(groups[f]), int(counts[f]), fnum(counts[f] / max(stats.n_tokens, 1)), fnum(m),
                     fnum(stats.moments.mean[f]), fnum(stats.moments.std[f]),
                     " ".join(t for t, _ in ups[f][:3]), line])  # fmt: skip
        panels.append({"top": top, "sample": sorted(sample, key=lambda e: -e[0]), "hist": hist, "up": ups[f],
                       "down": downs[f], "parent": parent[f], "children": children[f], "near": near[f]})  # fmt: skip
    return {"layer": layer, "n_tokens": stats.n_tokens, "d_sae": d, "rows": rows, "panels": panels}


# ---------------------------------------------------------------- files


def js_data(call: str, *args) -> str:
    """`call(args...);` with the args as JSON that no HTML parser or JS string can be broken out of."""
    text = ",".join(json.dumps(a, ensure_ascii=True, separators=(",", ":"), allow_nan=False) for a in args)
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return f"{call}({text});\n"


def _write(path: Path, text: str) -> int:
    path.write_text(text, encoding="utf-8", newline="\n")
    return len(text.encode())


def write_site(out: Path, release, described: list[dict], settings: dict) -> Path:
    """Write index.html and the data files; replaces an earlier atlas's files there (check_out allowed it)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = out / "data"
    if data.exists():
        shutil.rmtree(data)
    data.mkdir()
    edges = [fnum(e, 4) for e in HIST_EDGES.tolist()]
    layers = []
    for lay in described:
        L = lay["layer"]
        shards = (lay["d_sae"] + SHARD - 1) // SHARD
        _write(data / f"L{L}-rows.js", js_data("ATLAS.rows", L, lay["rows"]))
        for s in range(shards):
            part = lay["panels"][s * SHARD : (s + 1) * SHARD]
            _write(data / f"L{L}-p{s}.js", js_data("ATLAS.panels", L, s, part))
        layers.append({"layer": L, "n_tokens": lay["n_tokens"], "d_sae": lay["d_sae"], "shards": shards})
    meta = {"format": FORMAT, "preset": release.name, "model": release.model_id, "layers": layers,
            "groups": [list(g) for g in release.groups], "shard": SHARD, "edges": edges, "settings": settings,
            "min_parent_cosine": MIN_PARENT_COSINE}  # fmt: skip
    _write(data / "atlas.js", js_data("ATLAS.meta", meta))
    page = resources.files("saehelpers.atlas").joinpath("index.html").read_text(encoding="utf-8")
    rows = "\n".join(f'<script src="data/L{x["layer"]}-rows.js"></script>' for x in layers)
    _write(out / "index.html", page.replace("<!-- ROWS -->", rows))
    _write(out / MANIFEST, json.dumps(meta, indent=1, sort_keys=True) + "\n")
    return out / "index.html"


def atlas_size(out) -> int:
    """Bytes of an atlas folder."""
    return sum(f.stat().st_size for f in Path(out).rglob("*") if f.is_file())


__all__ = ["FORMAT", "atlas_size", "check_out", "describe_layer", "js_data", "write_site"]
