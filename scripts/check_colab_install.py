"""Would installing saehelpers on Colab replace Colab's own torch, transformers or ipywidgets?

Builds a throwaway venv holding stand-ins for the packages Colab preinstalls (metadata only, at the
versions in scripts/colab_constraints.txt), asks pip what `pip install 'saehelpers[mini]'` would
then install (`--dry-run`, which downloads metadata, not wheels), and fails if the answer includes
any of them. A pip that would replace torch there would download a multi-GB CUDA build on Colab.

    python scripts/check_colab_install.py
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONSTRAINTS = ROOT / "scripts" / "colab_constraints.txt"
# Replacing one of these costs a Colab user gigabytes or breaks its front end; the rest is reported.
MUST_KEEP = ("torch", "transformers", "ipywidgets")


def pins() -> dict[str, str]:
    lines = [line.split("#")[0].strip() for line in CONSTRAINTS.read_text().splitlines()]
    return dict(line.split("==") for line in lines if line)


def stand_in(site: Path, name: str, version: str) -> None:
    """An installed distribution with no files but its metadata: enough for pip's resolver."""
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "INSTALLER").write_text("colab-stand-in\n")
    (info / "RECORD").write_text("")


def main() -> int:
    want = pins()
    with tempfile.TemporaryDirectory() as tmp:
        env = Path(tmp) / "venv"
        venv.create(env, with_pip=False)
        site = next(env.glob("lib/python*/site-packages"))
        for name, version in want.items():
            stand_in(site, name, version)
        report = Path(tmp) / "report.json"
        cmd = [sys.executable, "-m", "pip", "--python", str(env / "bin" / "python"), "install", "--dry-run",
               "--quiet", "--report", str(report), f"{ROOT}[mini]"]  # fmt: skip
        subprocess.run(cmd, check=True)
        install = {
            item["metadata"]["name"].lower().replace("_", "-"): item["metadata"]["version"]
            for item in json.loads(report.read_text())["install"]
        }
    kept = {n: v for n, v in want.items() if n.lower().replace("_", "-") not in install}
    replaced = {n: install[n.lower().replace("_", "-")] for n in want if n not in kept}
    print(
        f"pip would install {len(install)} packages: "
        + ", ".join(f"{n}=={v}" for n, v in sorted(install.items()))
    )
    print("kept as Colab has them: " + ", ".join(f"{n}=={v}" for n, v in kept.items()))
    if replaced:
        print("replaced: " + ", ".join(f"{n} -> {v}" for n, v in replaced.items()))
    return 1 if any(n in MUST_KEEP for n in replaced) else 0


if __name__ == "__main__":
    sys.exit(main())
