"""Build the mini preset's offline text corpus (train + held-out) into the user cache.

    python scripts/build_corpus.py            # full corpus -> $SAEHELPERS_CACHE/corpus/v2 (a few minutes)
    python scripts/build_corpus.py --sample   # also rewrite the shipped held-out sample
    python scripts/build_corpus.py --sample-only releases/mini-v2   # just the sample, from the built corpus

Sources and licences are listed in `saehelpers.text.SOURCES`: code (Python, Go, Perl), technical
prose in 11 languages (Python's docs, the Debian Reference, the Debian Administrator's Handbook),
manual pages in 8 languages, quotations in 8 languages (fortunes), and project-written dialogues,
numbers and tables. Debian text is read from the installed packages when present, else fetched with `apt-get download`
and unpacked with `dpkg -x` into the cache (no root needed). On a machine without apt those
sources are skipped with a warning and the manifest says so.

The output is deterministic for the same inputs: documents are built in sorted order, long
sources are capped by a seeded sample, and the train / held-out split is a hash of each
document's group id (`saehelpers.text.split_of`), so a module, a book section or a run of
fortunes is never split across train and held-out. Translations share their group (a handbook page,
a manual page), so held-out German text is never the translation of a trained English page.
"""

from __future__ import annotations

import argparse
import ast
import gzip
import hashlib
import json
import random
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import unicodedata
from html.parser import HTMLParser
from pathlib import Path

from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from saehelpers.loading import cache_dir  # noqa: E402
from saehelpers.release import mini_dir  # noqa: E402
from saehelpers.text import SOURCES, split_of  # noqa: E402

SEED = 20250101
# The version this script builds. saehelpers reads the version the shipped release was built from
# (`text.corpus_version()`, from its held-out sample); the two differ only while a new release is built.
VERSION = 2
DOC_CHARS = 2000  # target document size: ~500 tokens, i.e. a few 128-token rows per document
DEBREF_LANGS = ("en", "de", "fr", "es", "it", "ja")
HANDBOOK_LANGS = (
    "en-US",
    "fr-FR",
    "de-DE",
    "es-ES",
    "it-IT",
    "pt-BR",
    "nl-NL",
    "pl-PL",
    "ru-RU",
    "ja-JP",
    "zh-CN",
)
MAN_LANGS = ("de", "fr", "es", "it", "pl", "ru", "nl", "pt_BR")
# Character caps per source (per language where it says so), so that no one source dominates:
# ~21M characters, ~6M tokens in all, of which the mini build trains on the first 3M+.
CAPS = {
    "python-stdlib": 1_800_000,
    "go-stdlib": 1_200_000,
    "perl-core": 600_000,
    "python-docs": 1_800_000,
    "debian-reference": 400_000,  # per language
    "debian-handbook": 500_000,  # per language
    "manpages-l10n": 300_000,  # per language
    "fortunes-en": 1_500_000,
    "fortunes-de": 600_000,
    "fortunes-es": 600_000,
    "fortunes-ru": 500_000,
    "fortunes-cs": 400_000,
    "fortunes-pl": 400_000,
    "fortunes-zh": 300_000,
}
# Learners browse top-activating examples, so the crudest files stay out (and the ASCII pictures).
FORTUNES_EN_SKIP = {"ascii-art", "ethnic", "men-women", "drugs", "LICENSE.txt"}
FORTUNES_DE_SKIP = {"asciiart"}
# The Russian package has many undated-forum dumps and adult files: take the topical ones only.
FORTUNES_RU_KEEP = {
    "art", "book", "citates", "computer", "conscience", "do_you_know", "education", "freewill", "friendship",
    "future", "genious", "haiku", "happy", "human_being", "if", "innocence", "knowledge", "life", "murphy",
    "programming", "success", "sympathy", "time", "truth", "truth_and_lie", "war", "wealth", "work",
}  # fmt: skip
SAMPLE_CHARS = 640_000  # raw size of the shipped held-out sample (~200 KB gzipped)
# A file each package installs: its presence says the package is there (installed or unpacked).
PROBES = {
    **{
        f"debian-reference-{lang}": f"usr/share/debian-reference/debian-reference.{lang}.txt.gz"
        for lang in DEBREF_LANGS
    },
    "fortunes": "usr/share/games/fortunes/wisdom",
    **{f"fortunes-{lang}": f"usr/share/games/fortunes/{lang}" for lang in ("de", "es", "ru", "cs", "pl")},
    "fortunes-zh": "usr/share/games/fortunes/tang300",
    "debian-handbook": "usr/share/doc/debian-handbook/html/en-US/apt.html",
    "python3.11-doc": "usr/share/doc/python3.11/html/_sources/tutorial/index.rst.txt",
    "golang-1.19-src": "usr/share/go-1.19/src/fmt/print.go",
    **{f"manpages-{lang.lower().replace('_', '-')}": f"usr/share/man/{lang}/man1" for lang in MAN_LANGS},
}


# ---------------------------------------------------------------- Debian packages


def package_root(pkg: str, debs: Path) -> tuple[Path | None, str | None]:
    """Root under which the package's files lie ('/' when installed), and its version."""
    probe = PROBES[pkg]
    version = None
    try:
        out = subprocess.run(
            ["dpkg-query", "-W", "-f=${Status} ${Version}", pkg], capture_output=True, text=True, check=False
        )
        if out.returncode == 0 and out.stdout.startswith("install ok installed"):
            version = out.stdout.split()[-1]
            if (Path("/") / probe).exists():
                return Path("/"), version
    except FileNotFoundError:
        pass
    root = debs / pkg
    if (root / probe).exists():
        return root, (root / "VERSION").read_text().strip() if (root / "VERSION").exists() else None
    if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
        return None, None
    with tempfile.TemporaryDirectory() as tmp:
        got = subprocess.run(["apt-get", "download", pkg], cwd=tmp, capture_output=True, text=True)
        files = list(Path(tmp).glob(f"{pkg}_*.deb"))
        if got.returncode != 0 or not files:
            print(f"  could not fetch {pkg}: {got.stderr.strip()[:200]}", file=sys.stderr)
            return None, None
        root.mkdir(parents=True, exist_ok=True)
        subprocess.run(["dpkg", "-x", str(files[0]), str(root)], check=True)
        version = files[0].name.split("_")[1].replace("%3a", ":")
        (root / "VERSION").write_text(version)
    return root, version


# ---------------------------------------------------------------- documents


def doc(source: str, lang: str, kind: str, group: str, text: str) -> dict:
    text = unicodedata.normalize("NFC", text).strip()
    return {"source": source, "lang": lang, "kind": kind, "group": group, "text": text}


def pack(pieces: list[str], limit: int = DOC_CHARS, sep: str = "\n\n") -> list[str]:
    """Join consecutive pieces into documents of about `limit` characters (a long piece stays whole)."""
    docs, cur = [], ""
    for p in pieces:
        if cur and len(cur) + len(p) > limit:
            docs.append(cur)
            cur = ""
        cur = f"{cur}{sep}{p}" if cur else p
    if cur:
        docs.append(cur)
    return docs


def capped(docs: list[dict], cap: int, rng: random.Random) -> list[dict]:
    """A seeded sample of whole groups totalling about `cap` characters, in the original order."""
    groups: dict[str, list[int]] = {}
    for i, d in enumerate(docs):
        groups.setdefault(d["group"], []).append(i)
    names = sorted(groups)
    rng.shuffle(names)
    keep, total = set(), 0
    for g in names:
        if total >= cap:
            break
        keep.update(groups[g])
        total += sum(len(docs[i]["text"]) for i in groups[g])
    return [d for i, d in enumerate(docs) if i in keep]


def python_stdlib_docs() -> list[dict]:
    """Top-level blocks (functions, classes, statements) of stdlib modules, grouped per module."""
    root = Path(sysconfig.get_paths()["stdlib"])
    # Tests, vendored tools, generated codec tables and the pydoc topic dump are not typical code.
    skip = {
        "test",
        "tests",
        "idle_test",
        "site-packages",
        "lib2to3",
        "ensurepip",
        "turtledemo",
        "__pycache__",
    }
    skip |= {"encodings", "pydoc_data"}
    out = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if skip & set(rel.parts):
            continue
        try:
            src = path.read_text(encoding="utf-8")
            tree = ast.parse(src)
        except (UnicodeDecodeError, SyntaxError, ValueError):
            continue
        lines = src.splitlines()
        blocks, prev = [], 0
        for node in tree.body:
            # Each block runs from the end of the previous one, so comments between blocks stay.
            end = node.end_lineno
            if end - prev > 0:
                blocks.append("\n".join(lines[prev:end]).strip("\n"))
            prev = end
        blocks = [b for b in blocks if b.strip()]
        group = f"python-stdlib/{rel.as_posix()}"
        for text in pack(blocks, sep="\n\n\n"):
            out.append(doc("python-stdlib", "code-python", "code", group, f"# {rel.as_posix()}\n{text}"))
    return out


HEADING = re.compile(r"^(\d+(\.\d+)*\.|[A-Z]\.\d+(\.\d+)*\.)\s+\S")
CJK = re.compile(r"[\u3000-\u9fff\uff00-\uffef]")


def unwrap(par: list[str]) -> str:
    """Re-flow a prose paragraph wrapped at ~70 columns; keep code, tables and prompts as they are."""
    body = [ln[4:] if ln.startswith("    ") else ln for ln in par]
    looks_code = any(
        ln.startswith((" ", "$", "#", "|", "+-", "*")) or "  " in ln.strip() or ln.strip().endswith("\\")
        for ln in body
    )
    if looks_code or len(body) == 1:
        return "\n".join(ln.rstrip() for ln in body)
    text = body[0].strip()
    for ln in body[1:]:
        ln = ln.strip()
        # Japanese is wrapped without spaces between words: join CJK lines without one.
        glue = "" if CJK.search(text[-1:]) and CJK.search(ln[:1]) else " "
        text += glue + ln
    return text


def debian_reference_docs(root: Path, lang: str) -> list[dict]:
    path = root / f"usr/share/debian-reference/debian-reference.{lang}.txt.gz"
    raw = gzip.open(path, "rt", encoding="utf-8").read().splitlines()
    sections: list[tuple[str, list[str]]] = []
    title, buf = "front", []
    for ln in raw:
        if HEADING.match(ln):
            sections.append((title, buf))
            title, buf = ln.strip(), []
        else:
            buf.append(ln)
    sections.append((title, buf))
    out = []
    for title, body in sections:
        pars, cur = [], []
        for ln in body + [""]:
            if ln.strip():
                cur.append(ln)
            elif cur:
                pars.append(unwrap(cur))
                cur = []
        pars = [p for p in pars if p.strip()]
        if not pars:
            continue
        # The section number is language-independent, so every translation of a section shares a
        # split (held-out German text is never the translation of a trained English section).
        number = title.split()[0] if title != "front" else "front"
        for text in pack([title, *pars]):
            out.append(doc("debian-reference", lang, "prose", f"debian-reference/{number}", text))
    return out


def fortune_docs(files: list[Path], source: str, lang: str) -> list[dict]:
    out, seen = [], set()
    for path in files:
        try:
            raw = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            continue
        items = []
        for item in re.split(r"\r?\n%\r?\n", raw.replace("\r\n", "\n")):
            item = item.strip("\n%").rstrip()
            key = hashlib.sha1(item.encode()).hexdigest()
            if len(item.strip()) < 20 or key in seen:
                continue
            seen.add(key)
            items.append(item)
        for j, text in enumerate(pack(items, limit=1200)):
            # Runs of ~8 documents share a group, so one file is spread over both splits.
            out.append(doc(source, lang, "quotes", f"{source}/{path.name}/{j // 8}", text))
    return out


def fortune_files(root: Path, sub: str, skip=(), keep=None) -> list[Path]:
    d = root / "usr/share/games/fortunes" / sub
    return sorted(
        p
        for p in d.iterdir()
        if p.is_file()
        and not p.is_symlink()
        and p.suffix not in (".dat", ".u8")
        and p.name not in skip
        and (keep is None or p.name in keep)
    )


# ---------------------------------------------------------------- project-written text

NAMES = {
    "en": ["Alice", "Ben", "Chloe", "David", "Emma", "Farid", "Grace", "Hiro", "Ines", "Jack"],
    "de": ["Anna", "Bernd", "Clara", "Dieter", "Eva", "Felix", "Greta", "Hans", "Ilse", "Jonas"],
    "fr": ["Amélie", "Bruno", "Camille", "Denis", "Élise", "François", "Gaëlle", "Hugo", "Inès", "Jules"],
    "es": ["Ana", "Bruno", "Carmen", "Diego", "Elena", "Fernando", "Gloria", "Hugo", "Isabel", "Javier"],
}
CITIES = ["Lisbon", "Oslo", "Lyon", "Munich", "Kyoto", "Toronto", "Nairobi", "Lima", "Perth", "Tallinn"]
ITEMS = {
    "en": [("coffee", 3.2), ("tea", 2.8), ("croissant", 2.5), ("sandwich", 6.9), ("orange juice", 4.1)],
    "de": [("Kaffee", 3.2), ("Tee", 2.8), ("Brezel", 1.9), ("Apfelstrudel", 4.5), ("Wasser", 2.1)],
    "fr": [("café", 2.2), ("thé", 2.8), ("croissant", 1.4), ("crêpe", 4.5), ("jus d'orange", 3.9)],
    "es": [("café", 1.8), ("té", 2.0), ("churros", 3.5), ("tortilla", 4.2), ("zumo de naranja", 3.3)],
}
DIALOGUE = {
    "en": [
        (
            "At the café",
            [
                "{a}: Good morning! Could I have a {item}, please?",
                "{b}: Of course. Anything else?",
                "{a}: Yes, {n} {item2}s as well.",
                "{b}: That's {total} euros altogether.",
                "{a}: Here you are. Keep the change.",
                "{b}: Thank you, have a nice day!",
            ],
        ),
        (
            "Asking the way",
            [
                "{a}: Excuse me, how do I get to the station?",
                "{b}: Go straight on for {n} blocks, then turn left at the bank.",
                "{a}: Is it far?",
                "{b}: About {m} minutes on foot.",
                "{a}: Thanks a lot!",
            ],
        ),
        (
            "Tech support",
            [
                "{a}: My laptop will not start since this morning.",
                "{b}: Did you try holding the power button for {n} seconds?",
                "{a}: Yes, twice. The light blinks {m} times and then nothing.",
                "{b}: That usually means the battery is empty. Plug it in for an hour.",
                "{a}: Oh. I will try that, thank you.",
            ],
        ),
        (
            "Planning a trip",
            [
                '{a}: "Shall we go to {city} in {month}?"',
                '{b}: "Only if the train is not too expensive. How much is it?"',
                '{a}: "{price} euros return, and it takes {m} hours."',
                '{b}: "Fine, let\'s book it tonight."',
            ],
        ),
    ],
    "de": [
        (
            "Im Café",
            [
                "{a}: Guten Morgen! Einen {item}, bitte.",
                "{b}: Gern. Sonst noch etwas?",
                "{a}: Ja, noch {n} Mal {item2}.",
                "{b}: Das macht zusammen {total} Euro.",
                "{a}: Bitte schön, stimmt so.",
                "{b}: Danke, einen schönen Tag noch!",
            ],
        ),
        (
            "Nach dem Weg fragen",
            [
                "{a}: Entschuldigung, wie komme ich zum Bahnhof?",
                "{b}: Gehen Sie {n} Straßen geradeaus und dann links an der Bank.",
                "{a}: Ist das weit?",
                "{b}: Etwa {m} Minuten zu Fuß.",
                "{a}: Vielen Dank!",
            ],
        ),
        (
            "Beim Arzt",
            [
                "{b}: Was fehlt Ihnen denn?",
                "{a}: Ich habe seit {n} Tagen Kopfschmerzen und Fieber.",
                "{b}: Wie hoch war das Fieber?",
                "{a}: Gestern Abend {temp} Grad.",
                "{b}: Bleiben Sie {m} Tage zu Hause und trinken Sie viel.",
            ],
        ),
    ],
    "fr": [
        (
            "Au café",
            [
                "{a} : Bonjour ! Un {item}, s'il vous plaît.",
                "{b} : Bien sûr. Et avec ceci ?",
                "{a} : {n} {item2} aussi, merci.",
                "{b} : Ça fait {total} euros en tout.",
                "{a} : Voilà, gardez la monnaie.",
                "{b} : Merci, bonne journée !",
            ],
        ),
        (
            "Demander son chemin",
            [
                "{a} : Pardon, pour aller à la gare, s'il vous plaît ?",
                "{b} : Continuez tout droit pendant {n} rues, puis tournez à gauche.",
                "{a} : C'est loin ?",
                "{b} : À peu près {m} minutes à pied.",
                "{a} : Merci beaucoup !",
            ],
        ),
        (
            "Réserver une table",
            [
                "{b} : Restaurant du Port, bonsoir.",
                "{a} : Bonsoir, je voudrais réserver une table pour {n} personnes samedi.",
                "{b} : À quelle heure ?",
                "{a} : Vers {hour} heures, si possible.",
                "{b} : C'est noté, au nom de {a}.",
            ],
        ),
    ],
    "es": [
        (
            "En la cafetería",
            [
                "{a}: ¡Buenos días! Un {item}, por favor.",
                "{b}: Claro. ¿Algo más?",
                "{a}: Sí, {n} de {item2} también.",
                "{b}: Son {total} euros en total.",
                "{a}: Aquí tiene. Quédese con el cambio.",
                "{b}: ¡Gracias, que tenga un buen día!",
            ],
        ),
        (
            "Preguntar el camino",
            [
                "{a}: Perdone, ¿cómo llego a la estación?",
                "{b}: Siga recto {n} calles y luego gire a la izquierda.",
                "{a}: ¿Está lejos?",
                "{b}: Unos {m} minutos a pie.",
                "{a}: ¡Muchas gracias!",
            ],
        ),
    ],
}
MONTHS = ["January", "March", "May", "July", "September", "November"]


def dialogue_docs(rng: random.Random, n_docs: int = 700) -> list[dict]:
    out = []
    for i in range(n_docs):
        lang = sorted(DIALOGUE)[i % len(DIALOGUE)]
        scenes = []
        for _ in range(rng.randint(2, 4)):
            title, lines = rng.choice(DIALOGUE[lang])
            a, b = rng.sample(NAMES[lang], 2)
            (item, p1), (item2, p2) = rng.sample(ITEMS[lang], 2)
            n = rng.randint(2, 5)
            slots = dict(
                a=a, b=b, item=item, item2=item2, n=n, m=rng.randint(3, 25), total=f"{p1 + n * p2:.2f}",
                city=rng.choice(CITIES), month=rng.choice(MONTHS), price=rng.randint(40, 180),
                temp=f"{rng.uniform(37.5, 39.9):.1f}".replace(".", ","), hour=rng.choice([19, 20, 21]),
            )  # fmt: skip
            scenes.append(f"{title}\n\n" + "\n".join(line.format(**slots) for line in lines))
        out.append(
            doc("project-dialogue", lang, "dialogue", f"project-dialogue/{i // 10}", "\n\n".join(scenes))
        )
    return out


def numbers_docs(rng: random.Random, n_docs: int = 700) -> list[dict]:
    out = []
    for i in range(n_docs):
        parts = []
        for _ in range(rng.randint(3, 5)):
            kind = rng.randrange(6)
            if kind == 0:
                rows = [
                    (rng.choice(CITIES), rng.randint(-5, 35), rng.randint(0, 120))
                    for _ in range(rng.randint(4, 8))
                ]
                parts.append("city,temperature_c,rain_mm\n" + "\n".join(f"{c},{t},{r}" for c, t, r in rows))
            elif kind == 1:
                xs = [(rng.randint(1, 999), rng.randint(1, 999)) for _ in range(rng.randint(3, 6))]
                ops = [(a, "+", a + b) if rng.random() < 0.5 else (a, "*", a * b) for a, b in xs]
                parts.append("\n".join(f"{a} {op} {b} = {r}" for (a, op, r), (_, b) in zip(ops, xs)))
            elif kind == 2:
                y, mth, d = rng.randint(1900, 2030), rng.randint(1, 12), rng.randint(1, 28)
                parts.append(
                    f"On {y}-{mth:02d}-{d:02d} at {rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}, "
                    f"{rng.randint(2, 900)} people attended, {rng.randint(10, 95)}% more than in {y - 1}."
                )
            elif kind == 3:
                start, step = rng.randint(1, 50), rng.randint(2, 9)
                seq = [start + step * j for j in range(rng.randint(6, 12))]
                base = rng.randint(1, 4)
                geo = [base * 2**j for j in range(rng.randint(5, 10))]
                parts.append(f"Sequence: {', '.join(map(str, seq))}\nDoubling: {', '.join(map(str, geo))}")
            elif kind == 4:
                lines = [
                    (rng.choice(ITEMS["en"])[0], rng.randint(1, 6), rng.uniform(0.5, 20))
                    for _ in range(rng.randint(3, 6))
                ]
                body = "\n".join(f"{q} x {name:<14} {p:7.2f}" for name, q, p in lines)
                parts.append(
                    f"RECEIPT #{rng.randint(10000, 99999)}\n{body}\nTOTAL {sum(q * p for _, q, p in lines):.2f}"
                )
            else:
                km, kg = rng.randint(1, 500), rng.randint(1, 30)
                parts.append(
                    f"{km} km is {km * 0.621371:.1f} miles; {kg} kg is {kg * 2.20462:.2f} lb; "
                    f"pi is about {3.14159265358979:.{rng.randint(2, 8)}f}."
                )
        out.append(doc("project-numbers", "en", "numbers", f"project-numbers/{i // 10}", "\n\n".join(parts)))
    return out


# ---------------------------------------------------------------- v2 sources


class _Blocks(HTMLParser):
    """Text of an XHTML page's paragraphs, headings, list items and code blocks, in order."""

    KEEP = {"p", "h1", "h2", "h3", "h4", "li", "pre", "td", "th", "dt"}
    SKIP = {"script", "style", "head"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.blocks: list[str] = []
        self.depth, self.skip, self.buf, self.pre = 0, 0, [], False

    def handle_starttag(self, tag, attrs):
        cls = dict(attrs).get("class") or ""
        if tag in self.SKIP or (
            tag in ("ul", "div", "p") and ("docnav" in cls or "toc" in cls or cls == "title")
        ):
            self.skip += 1
            self._skip_tag = tag
        if tag in self.KEEP and not self.skip:
            self._flush()
            self.pre = tag == "pre"

    def handle_endtag(self, tag):
        if self.skip and tag == getattr(self, "_skip_tag", None):
            self.skip -= 1
        if tag in self.KEEP and not self.skip:
            self._flush()

    def handle_data(self, data):
        if not self.skip:
            self.buf.append(data)

    def _flush(self):
        text = "".join(self.buf)
        self.buf = []
        text = text.strip("\n") if self.pre else " ".join(text.split())
        if text.strip():
            self.blocks.append(text)
        self.pre = False


def handbook_docs(root: Path, lang: str) -> list[dict]:
    """The Debian Administrator's Handbook, one page per group (a page shares its group across languages)."""
    out = []
    for path in sorted((root / "usr/share/doc/debian-handbook/html" / lang).glob("*.html")):
        if path.name in ("index.html", "ix01.html") or path.name.startswith(("pr", "ap", "go")):
            continue
        parser = _Blocks()
        parser.feed(path.read_text(encoding="utf-8"))
        # Drop the navigation leftovers: very short blocks that are only links or numbers.
        blocks = [b for b in parser.blocks if len(b) > 2 and b != "Download the ebook"]
        if sum(map(len, blocks)) < 500:
            continue
        for text in pack(blocks):
            # Half the translations are partial: untranslated parts are the English original.
            if lang != "en-US" and english_share(text) > 0.05:
                continue
            out.append(
                doc("debian-handbook", lang.split("-")[0], "prose", f"debian-handbook/{path.stem}", text)
            )
    return out


ENGLISH = {"the", "and", "of", "that", "with", "this", "which", "are", "you", "be", "from", "can"}


def english_share(text: str) -> float:
    """Share of words that are common English words: ~0.2 in English prose, under 0.02 in a translation."""
    words = text.lower().split()
    return sum(w in ENGLISH for w in words) / max(len(words), 1)


def python_docs(root: Path) -> list[dict]:
    """Python's documentation (reStructuredText sources): tutorial, how-tos, library reference."""
    base = root / "usr/share/doc/python3.11/html/_sources"
    out = []
    for path in sorted(base.rglob("*.rst.txt")):
        rel = path.relative_to(base).as_posix()
        if rel.startswith(("whatsnew/changelog", "includes/")) or "genindex" in rel:
            continue
        text = path.read_text(encoding="utf-8")
        pars = [p.strip("\n") for p in re.split(r"\n\s*\n", text) if p.strip()]
        for piece in pack(pars):
            out.append(doc("python-docs", "en", "prose", f"python-docs/{rel}", piece))
    return out


def man_docs(root: Path, lang: str) -> list[dict]:
    """Translated manual pages rendered to plain text by man-db (no hyphenation or justification)."""
    if shutil.which("man") is None or shutil.which("col") is None:
        print("WARNING: skipping manual pages: man-db (man, col) is not installed", file=sys.stderr)
        return []
    out = []
    env = {"MANWIDTH": "1000", "LC_ALL": "C.UTF-8", "PATH": "/usr/bin:/bin"}
    for path in sorted((root / "usr/share/man" / lang).rglob("*.gz")):
        got = subprocess.run(
            ["man", "--nh", "--nj", "-l", str(path)], capture_output=True, env=env, timeout=30, check=False
        )
        if got.returncode != 0:
            continue
        text = subprocess.run(["col", "-bx"], input=got.stdout, capture_output=True, check=False).stdout
        lines = [ln.rstrip() for ln in text.decode("utf-8", "replace").splitlines()]
        lines = [ln[7:] if ln.startswith("       ") else ln for ln in lines[1:-1]]  # header, footer
        pars = [p.strip("\n") for p in re.split(r"\n\s*\n", "\n".join(lines)) if p.strip()]
        name = path.name.removesuffix(".gz")
        for piece in pack(pars):
            out.append(doc("manpages-l10n", lang.split("_")[0], "manual", f"manpages/{name}", piece))
    return out


def go_docs(root: Path) -> list[dict]:
    """Go's standard library source, top-level declarations packed per file, grouped per package."""
    base = root / "usr/share/go-1.19/src"
    out = []
    for path in sorted(base.rglob("*.go")):
        rel = path.relative_to(base)
        if {"testdata", "vendor", "internal", "cmd"} & set(rel.parts) or path.name.endswith("_test.go"):
            continue
        try:
            src = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        if "Code generated" in src[:500]:
            continue
        # Split before each top-level declaration (a line starting with func/type/var/const or a doc comment).
        blocks = [
            b.strip("\n")
            for b in re.split(r"\n(?=(?://[^\n]*\n)*(?:func|type|var|const) )", src)
            if b.strip()
        ]
        for piece in pack(blocks, sep="\n\n"):
            out.append(
                doc(
                    "go-stdlib",
                    "code-go",
                    "code",
                    f"go-stdlib/{rel.parent.as_posix()}",
                    f"// {rel.as_posix()}\n{piece}",
                )
            )
    return out


def perl_docs() -> list[dict]:
    """Perl's core modules (code with their POD documentation), as installed with perl."""
    base = Path("/usr/share/perl") / sorted(p.name for p in Path("/usr/share/perl").iterdir())[-1]
    out = []
    for path in sorted(base.rglob("*.pm")):
        rel = path.relative_to(base)
        if {"unicore", "Unicode"} & set(rel.parts):
            continue
        try:
            src = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        pars = [p.strip("\n") for p in re.split(r"\n\s*\n", src) if p.strip()]
        for piece in pack(pars):
            out.append(
                doc(
                    "perl-core",
                    "code-perl",
                    "code",
                    f"perl-core/{rel.as_posix()}",
                    f"# {rel.as_posix()}\n{piece}",
                )
            )
    return out


PRODUCTS = [
    "laptop",
    "monitor",
    "keyboard",
    "mouse",
    "printer",
    "router",
    "headphones",
    "webcam",
    "tablet",
    "charger",
]
COUNTRIES = {"France": "Paris", "Japan": "Tokyo", "Kenya": "Nairobi", "Peru": "Lima", "Norway": "Oslo",
             "Canada": "Ottawa", "India": "New Delhi", "Egypt": "Cairo", "Chile": "Santiago", "Poland": "Warsaw"}  # fmt: skip


def tables_docs(rng: random.Random, n_docs: int = 600) -> list[dict]:
    """Markdown tables, JSON records and key-value listings with consistent numbers."""
    out = []
    for i in range(n_docs):
        parts = []
        for _ in range(rng.randint(2, 4)):
            kind = rng.randrange(4)
            if kind == 0:
                rows = [
                    (p, rng.randint(1, 40), round(rng.uniform(5, 1500), 2))
                    for p in rng.sample(PRODUCTS, rng.randint(3, 7))
                ]
                body = "\n".join(f"| {p} | {q} | {u:.2f} | {q * u:.2f} |" for p, q, u in rows)
                parts.append(f"| product | quantity | unit price | total |\n|---|---:|---:|---:|\n{body}")
            elif kind == 1:
                recs = [
                    {"id": rng.randint(1000, 9999), "country": c, "capital": COUNTRIES[c],
                     "population_m": round(rng.uniform(1, 300), 1), "visited": rng.random() < 0.5}
                    for c in rng.sample(sorted(COUNTRIES), rng.randint(2, 4))
                ]  # fmt: skip
                parts.append(json.dumps(recs, indent=2))
            elif kind == 2:
                year = rng.randint(2010, 2030)
                vals = [rng.randint(100, 999) for _ in range(4)]
                lines = [f"Q{q + 1} {year}: {v} units" for q, v in enumerate(vals)]
                parts.append(
                    "\n".join(lines)
                    + f"\nTotal: {sum(vals)} units; best quarter: Q{vals.index(max(vals)) + 1}."
                )
            else:
                keys = rng.sample(
                    ["name", "version", "port", "timeout", "retries", "user", "path", "debug"], 5
                )
                vals = {"name": "server", "version": f"{rng.randint(1, 9)}.{rng.randint(0, 20)}", "port": rng.randint(1024, 65535),
                        "timeout": rng.randint(1, 120), "retries": rng.randint(0, 9), "user": rng.choice(NAMES["en"]).lower(),
                        "path": f"/srv/{rng.choice(PRODUCTS)}", "debug": rng.choice(["true", "false"])}  # fmt: skip
                parts.append("[settings]\n" + "\n".join(f"{k} = {vals[k]}" for k in keys))
        out.append(doc("project-tables", "en", "tables", f"project-tables/{i // 10}", "\n\n".join(parts)))
    return out


# ---------------------------------------------------------------- build


def build(out_dir: Path, write_sample: bool) -> dict:
    debs = out_dir.parent / "debs"
    rng = random.Random(SEED)
    docs: list[dict] = []
    used: dict[str, dict] = {}

    def add(source: str, new: list[dict], cap: int | None, note: str = "") -> None:
        if cap is not None:
            new = capped(new, cap, random.Random(f"{SEED}/{source}/{note}"))
        docs.extend(new)
        u = used.setdefault(source, {"documents": 0, "characters": 0, "packages": {}})
        u["documents"] += len(new)
        u["characters"] += sum(len(d["text"]) for d in new)

    def from_package(source: str, pkg: str, make, note: str = "") -> None:
        root, version = package_root(pkg, debs)
        if root is None:
            print(f"WARNING: skipping {pkg}: neither installed nor downloadable", file=sys.stderr)
            return
        add(source, make(root), CAPS[source], note)
        used[source]["packages"][pkg] = version

    fortune_sets = {
        "fortunes-en": ("fortunes", "", FORTUNES_EN_SKIP, None),
        "fortunes-de": ("fortunes-de", "de", FORTUNES_DE_SKIP, None),
        "fortunes-es": ("fortunes-es", "es", (), None),
        "fortunes-ru": ("fortunes-ru", "ru", (), FORTUNES_RU_KEEP),
        "fortunes-cs": ("fortunes-cs", "cs", (), None),
        "fortunes-pl": ("fortunes-pl", "pl", (), None),
        "fortunes-zh": ("fortunes-zh", "", (), {"chinese", "tang300", "song100"}),
    }
    steps = ["code", "python-docs", "debian-reference", "debian-handbook", "manpages", "fortunes", "project"]
    for step in tqdm(steps, desc="corpus sources"):
        if step == "code":
            add("python-stdlib", python_stdlib_docs(), CAPS["python-stdlib"])
            used["python-stdlib"]["packages"]["python"] = sys.version.split()[0]
            add("perl-core", perl_docs(), CAPS["perl-core"])
            used["perl-core"]["packages"]["perl"] = sorted(p.name for p in Path("/usr/share/perl").iterdir())[
                -1
            ]
            from_package("go-stdlib", "golang-1.19-src", go_docs)
        elif step == "python-docs":
            from_package("python-docs", "python3.11-doc", python_docs)
        elif step == "debian-reference":
            for lang in DEBREF_LANGS:
                from_package(
                    step,
                    f"debian-reference-{lang}",
                    lambda r, lang=lang: debian_reference_docs(r, lang),
                    lang,
                )
        elif step == "debian-handbook":
            for lang in HANDBOOK_LANGS:
                from_package(step, "debian-handbook", lambda r, lang=lang: handbook_docs(r, lang), lang)
        elif step == "manpages":
            for lang in MAN_LANGS:
                pkg = f"manpages-{lang.lower().replace('_', '-')}"
                from_package("manpages-l10n", pkg, lambda r, lang=lang: man_docs(r, lang), lang)
        elif step == "fortunes":
            for source, (pkg, sub, skip, keep) in fortune_sets.items():
                lang = source.split("-")[1]
                from_package(
                    source,
                    pkg,
                    lambda r, sub=sub, skip=skip, keep=keep, source=source, lang=lang: fortune_docs(
                        fortune_files(r, sub, skip, keep), source, lang
                    ),
                )
        else:
            add("project-numbers", numbers_docs(rng), None)
            add("project-dialogue", dialogue_docs(rng), None)
            add("project-tables", tables_docs(rng), None)

    for i, d in enumerate(docs):
        d["id"] = f"{d['group']}#{i}"
    splits = {"train": [], "heldout": []}
    for d in docs:
        splits[split_of(d["group"])].append(d)
    # Interleave sources within each split (seeded), so any prefix of a split is a fair mix. The
    # training split keeps the sources' natural proportions (mostly prose and code); the held-out split
    # takes one document of each kind in turn, so its first rows weigh dialogue, numbers, tables,
    # quotes and manuals as much as prose and code, which training does not.
    for name in splits:
        random.Random(f"{SEED}/{name}").shuffle(splits[name])
    splits["heldout"] = round_robin(splits["heldout"], key="kind")

    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name, rows in splits.items():
        write_jsonl_gz(tmp / f"{name}.jsonl.gz", rows)
    manifest = {
        "version": VERSION,
        "seed": SEED,
        "heldout_rule": "sha256(group) % 100 < 5 -> heldout",
        "heldout_order": "one document of each kind in turn (seeded order within a kind)",
        "splits": {
            k: {"documents": len(v), "characters": sum(len(d["text"]) for d in v)} for k, v in splits.items()
        },
        "sources": {
            k: {"description": SOURCES[k][0], "licence": SOURCES[k][1], **used.get(k, {"documents": 0})}
            for k in SOURCES
        },
    }
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False))
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    if write_sample:
        write_sample_files(splits["heldout"], manifest, mini_dir())
    return manifest


def round_robin(docs: list[dict], key: str) -> list[dict]:
    """One document of each `key` value in turn (sorted values), keeping each value's own order."""
    by: dict[str, list[dict]] = {}
    for d in docs:
        by.setdefault(d[key], []).append(d)
    out, queues = [], [by[k] for k in sorted(by)]
    for i in range(max(map(len, queues), default=0)):
        out.extend(q[i] for q in queues if i < len(q))
    return out


def write_jsonl_gz(path: Path, rows: list[dict]) -> None:
    # mtime=0 keeps the gzip bytes identical across rebuilds.
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, compresslevel=9) as gz:
        for r in rows:
            gz.write((json.dumps(r, ensure_ascii=False) + "\n").encode("utf-8"))


def write_sample_files(heldout: list[dict], manifest: dict, dest: Path) -> None:
    """Ship the first held-out documents (already a seeded mix of sources), up to SAMPLE_CHARS."""
    sample, total = [], 0
    for d in heldout:
        if total >= SAMPLE_CHARS:
            break
        sample.append(d)
        total += len(d["text"])
    dest.mkdir(parents=True, exist_ok=True)
    write_jsonl_gz(dest / "heldout.jsonl.gz", sample)
    counts: dict[str, int] = {}
    for d in sample:
        counts[d["source"]] = counts.get(d["source"], 0) + len(d["text"])
    info = {
        "what": "The first held-out documents of the mini corpus (scripts/build_corpus.py --sample)",
        "version": manifest["version"],
        "documents": len(sample),
        "characters": total,
        "characters_per_source": counts,
        "sources": {k: v for k, v in manifest["sources"].items() if k in counts},
    }
    (dest / "heldout_manifest.json").write_text(json.dumps(info, indent=1, ensure_ascii=False))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=None, help="output folder (default: the user cache)")
    ap.add_argument("--sample", action="store_true", help="also rewrite the shipped held-out sample")
    ap.add_argument(
        "--sample-only",
        type=Path,
        metavar="DIR",
        help="write only the held-out sample, from the corpus already built, into DIR (a new release's folder)",
    )
    args = ap.parse_args()
    out = args.out or cache_dir() / "corpus" / f"v{VERSION}"
    if args.sample_only:
        manifest = json.loads((out / "manifest.json").read_text())
        heldout = [json.loads(line) for line in gzip.open(out / "heldout.jsonl.gz", "rt", encoding="utf-8")]
        write_sample_files(heldout, manifest, args.sample_only)
        print(f"wrote the held-out sample of {out} into {args.sample_only}")
        return
    manifest = build(out, args.sample)
    print(json.dumps(manifest["splits"], indent=1))
    for k, v in manifest["sources"].items():
        print(
            f"  {k:18s} {v.get('documents', 0):6d} docs {v.get('characters', 0):10,d} chars  [{v['licence']}]"
        )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
