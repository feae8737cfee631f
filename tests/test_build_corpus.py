"""The mini corpus builder's parts (scripts/build_corpus.py) and the build's floors check."""

from __future__ import annotations

import gzip
import json
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import build_corpus as bc  # noqa: E402
import build_mini_release as bm  # noqa: E402

from saehelpers.text import SOURCES, read_jsonl_gz  # noqa: E402


def test_every_capped_source_has_a_licence():
    names = set(bc.CAPS) | {"project-numbers", "project-dialogue", "project-tables"}
    assert names <= set(SOURCES)
    for name in names:
        description, licence = SOURCES[name]
        assert description and licence


def test_round_robin_takes_one_of_each_kind_in_turn():
    docs = [{"kind": k, "i": i} for i, k in enumerate("aaaabbc")]
    out = bc.round_robin(docs, key="kind")
    assert [d["kind"] for d in out] == list("abcabaa")
    assert [d["i"] for d in out if d["kind"] == "a"] == [0, 1, 2, 3]  # each kind keeps its order
    assert bc.round_robin([], key="kind") == []


def test_english_share_tells_a_translation_from_the_original():
    en = "The package manager can install the software that you need, and it resolves dependencies."
    fr = "Le gestionnaire de paquets installe les logiciels dont vous avez besoin et résout les dépendances."
    de = "Die Paketverwaltung installiert die Software, die Sie brauchen, und löst Abhängigkeiten auf."
    assert bc.english_share(en) > 0.15
    assert bc.english_share(fr) < 0.05
    assert bc.english_share(de) < 0.05
    assert bc.english_share("") == 0


def test_handbook_parser_keeps_content_and_drops_navigation():
    page = (
        '<html><head><title>t</title></head><body><ul class="docnav top"><li>Précédent</li></ul>'
        '<div class="toc"><dl><dt>6.1. Table entry</dt></dl></div>'
        "<h1>6. Les outils APT</h1><p>APT est un   outil\n de gestion.</p>"
        "<pre>apt-get install\n  paquet</pre><ul><li>premier point</li></ul></body></html>"
    )
    p = bc._Blocks()
    p.feed(page)
    assert p.blocks == [
        "6. Les outils APT",
        "APT est un outil de gestion.",
        "apt-get install\n  paquet",
        "premier point",
    ]


def test_tables_are_deterministic_and_add_up():
    a = bc.tables_docs(random.Random(1), n_docs=30)
    b = bc.tables_docs(random.Random(1), n_docs=30)
    assert a == b
    assert {d["kind"] for d in a} == {"tables"}
    rows = [ln for d in a for ln in d["text"].splitlines() if ln.startswith("| ") and ln[2].isalpha()]
    rows = [r for r in rows if not r.startswith("| product")]
    assert rows
    for r in rows:
        _, q, u, total = [c.strip() for c in r.strip("|").split("|")]
        assert float(total) == pytest.approx(int(q) * float(u), abs=0.01)


@pytest.mark.skipif(shutil.which("man") is None or shutil.which("col") is None, reason="needs man-db")
def test_manual_pages_render_to_plain_text(tmp_path):
    page = tmp_path / "usr/share/man/de/man1/demo.1"
    page.parent.mkdir(parents=True)
    page.write_text(
        '.TH DEMO 1 "2026" "demo" "Benutzerbefehle"\n.SH BEZEICHNUNG\ndemo \\- ein Beispiel\n'
        ".SH BESCHREIBUNG\n.B demo\nzeigt einen sehr langen Satz, der nicht getrennt und nicht "
        "im Blocksatz gesetzt werden soll, damit er als ein einziger Absatz erhalten bleibt.\n"
    )
    subprocess.run(["gzip", str(page)], check=True)
    docs = bc.man_docs(tmp_path, "de")
    assert len(docs) == 1
    d = docs[0]
    assert (d["source"], d["lang"], d["kind"], d["group"]) == (
        "manpages-l10n",
        "de",
        "manual",
        "manpages/demo.1",
    )
    assert "demo - ein Beispiel" in d["text"]
    # One line per paragraph: no hyphenation, no justification, no bold overstrike.
    assert "demo zeigt einen sehr langen Satz, der nicht getrennt und nicht im Blocksatz gesetzt" in d["text"]
    assert "\b" not in d["text"] and "DEMO(1)" not in d["text"]


def test_corpus_texts_reads_a_split_and_filters_by_kind(tmp_path):
    rows = [{"text": f"t{i}", "kind": k} for i, k in enumerate(["code", "prose", "code"])]
    bc.write_jsonl_gz(tmp_path / "heldout.jsonl.gz", rows)
    assert list(bm.corpus_texts(tmp_path, "heldout")) == ["t0", "t1", "t2"]
    assert list(bm.corpus_texts(tmp_path, "heldout", "code")) == ["t0", "t2"]
    with gzip.open(tmp_path / "heldout.jsonl.gz", "rt") as f:
        assert json.loads(f.readline())["kind"] == "code"


def test_sample_only_writes_the_shipped_sample_from_a_built_corpus(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    docs = [
        {"id": f"d{i}", "source": "fortunes-en", "kind": "quote", "text": "x" * 300_000} for i in range(4)
    ]
    bc.write_jsonl_gz(corpus / "heldout.jsonl.gz", docs)
    sources = {"fortunes-en": {"licence": "BSD-3-Clause", "documents": 4}}
    (corpus / "manifest.json").write_text(json.dumps({"version": 7, "sources": sources}))
    out = tmp_path / "release"
    script = Path(bc.__file__)
    subprocess.run([sys.executable, script, "--out", corpus, "--sample-only", out], check=True)
    info = json.loads((out / "heldout_manifest.json").read_text())
    # Whole documents up to SAMPLE_CHARS (640k): three of 300k, the version and licences carried over.
    assert (info["version"], info["documents"], info["characters"]) == (7, 3, 900_000)
    assert info["sources"] == sources
    assert [d["id"] for d in read_jsonl_gz(out / "heldout.jsonl.gz")] == ["d0", "d1", "d2"]


def test_heldout_id_names_the_text_a_cache_was_built_from(tmp_path, monkeypatch):
    from saehelpers import text

    monkeypatch.setenv("SAEHELPERS_CACHE", str(tmp_path))
    monkeypatch.delenv("SAEHELPERS_TEXT", raising=False)
    v = text.corpus_version()
    assert text.heldout_id("mini") == f"heldout-mini-v{v}-sample"
    text.corpus_dir().mkdir(parents=True)
    bc.write_jsonl_gz(text.corpus_dir() / "heldout.jsonl.gz", [{"text": "a"}])
    assert text.heldout_id("mini") == f"heldout-mini-v{v}-corpus"  # building the corpus changes the text
    assert text.heldout_id("gemma-3-1b") == "heldout-gemma-3-1b"
    monkeypatch.setenv("SAEHELPERS_TEXT", "mini")
    assert text.heldout_id("gemma-3-1b") == f"heldout-mini-v{v}-corpus"


def test_mini_dir_env_tries_a_rebuilt_release_and_its_corpus_version(tmp_path, monkeypatch):
    from saehelpers import get_release, text
    from saehelpers.release import MINI_DIR_ENV, mini_dir

    shipped = mini_dir()
    monkeypatch.setenv("SAEHELPERS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv(MINI_DIR_ENV, str(tmp_path / "nope"))
    with pytest.raises(
        FileNotFoundError, match="SAEHELPERS_MINI_DIR=.*nope.* holds no release.json.*unset it"
    ):
        get_release("mini")
    new = tmp_path / "v9"
    new.mkdir()
    meta = json.loads((shipped / "release.json").read_text()) | {"layers": [3], "d_sae": 4096}
    (new / "release.json").write_text(json.dumps(meta))
    (new / "heldout_manifest.json").write_text(json.dumps({"version": 9}))
    monkeypatch.setenv(MINI_DIR_ENV, str(new))
    assert mini_dir() == new
    assert (get_release("mini").layers, get_release("mini").d_sae) == ((3,), 4096)
    assert text.corpus_version() == 9 and text.corpus_dir() == tmp_path / "cache" / "corpus" / "v9"
    assert text.shipped_sample_path() == new / "heldout.jsonl.gz"
    monkeypatch.delenv(MINI_DIR_ENV)
    assert mini_dir() == shipped


def good(**over):
    m = {
        "explained_variance": 0.9,
        "l0_mean": 40.0,
        "dead_fraction": 0.01,
        "delta_loss": 0.5,
        "ev_per_prefix": [0.3, 0.5, 0.7, 0.85, 0.9],
    }
    return {**m, **over}


def test_floors_pass_and_name_each_miss():
    layers, k, widths = [2, 6, 10, 14], 40, [8, 32, 128, 512, 2048]
    ok = {layer: good() for layer in layers}
    ok[14] = good(explained_variance=0.76)  # the last layer's floor is 0.75
    ok[2] = good(delta_loss=1.4)  # the first layer is exempt from the loss floor
    assert bm.check_floors(ok, layers, k, widths) == {"floors": bm.FLOORS, "met": True, "misses": []}

    bad = {
        2: good(l0_mean=47.0),
        6: good(explained_variance=0.84, dead_fraction=0.06),
        10: good(delta_loss=1.2, ev_per_prefix=[0.3, 0.5, 0.5, 0.85, 0.9]),
        14: good(explained_variance=0.74),
    }
    got = bm.check_floors({str(k): v for k, v in bad.items()}, layers, k, widths)
    assert not got["met"]
    assert got["misses"] == [
        "layer 2: mean L0 47.0 is not within 15% of k=40",
        "layer 6: explained variance 0.840 < 0.85",
        "layer 6: 6.0% dead latents > 5%",
        "layer 10: next-token loss +1.20 nats > 1.0",
        "layer 10: prefix EVs [0.3, 0.5, 0.5, 0.85, 0.9] are not strictly increasing",
        "layer 14: explained variance 0.740 < 0.75",
    ]
