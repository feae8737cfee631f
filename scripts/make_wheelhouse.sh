#!/usr/bin/env bash
# Build a wheelhouse for an offline classroom (WORKSHOP.md): torch's CPU build, this project as a wheel,
# every dependency of saehelpers[mini,lab], and setuptools (so `pip install -e .` also works offline).
#
#   scripts/make_wheelhouse.sh [FOLDER]        (default: ./wheelhouse)
#
# Then on each learner's machine, with no network:
#   pip install --no-index --find-links FOLDER torch 'saehelpers[mini,lab]'
#
# Wheels fit one Python version, OS and CPU architecture: run this with the same ones as the learners'
# machines (build once per kind of machine). TORCH_FROM says where torch's CPU build comes from: an index
# URL (default https://download.pytorch.org/whl/cpu) or a folder that holds the wheel. TORCH_SPEC picks
# the version (default: the newest, `torch`). PYTHON picks the interpreter (default: python3).
set -euo pipefail
out="${1:-wheelhouse}"
root="$(cd "$(dirname "$0")/.." && pwd)"
py="${PYTHON:-python3}"
torch_from="${TORCH_FROM:-https://download.pytorch.org/whl/cpu}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"

# 1. torch's CPU build, alone (PyPI's Linux torch is a multi-GB CUDA build).
if [ -d "$torch_from" ]; then
  "$py" -m pip download --no-deps --no-index --find-links "$torch_from" -d "$out" "${TORCH_SPEC:-torch}"
else
  "$py" -m pip download --no-deps --index-url "$torch_from" -d "$out" "${TORCH_SPEC:-torch}"
fi
torch_wheel="$(ls -t "$out"/torch-*.whl | head -n 1)"
torch_version="$(basename "$torch_wheel" | cut -d- -f2)"  # e.g. 2.13.0+cpu

# 2. This project as a wheel, then everything it needs with [mini,lab], torch pinned to the CPU build
#    above so that pip never fetches the CUDA one.
"$py" -m pip wheel --no-deps -w "$out" "$root"
project_wheel="$(ls -t "$out"/saehelpers-*.whl | head -n 1)"
constraints="$(mktemp)"
trap 'rm -f "$constraints"' EXIT
echo "torch==$torch_version" >"$constraints"
"$py" -m pip download -d "$out" --find-links "$out" -c "$constraints" "${project_wheel}[mini,lab]" "setuptools>=68"

# 3. A few dependencies come as source only (e.g. py2store): build them into wheels now, so that the
#    offline install builds nothing.
for sdist in "$out"/*.tar.gz "$out"/*.zip; do
  [ -e "$sdist" ] || continue
  "$py" -m pip wheel --no-deps -w "$out" "$sdist"
  rm "$sdist"
done

echo "wheelhouse: $out ($(ls "$out" | wc -l) files, $(du -sh "$out" | cut -f1)); torch $torch_version"
echo "install with: pip install --no-index --find-links $out torch 'saehelpers[mini,lab]'"
