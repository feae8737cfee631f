import json
import os
import re
import subprocess
import sys

import pytest
import torch

import saehelpers
from saehelpers import loading


@pytest.mark.parametrize(
    "bad", ["gpu", "tpu", "cuda:x"] + (["cuda"] if not torch.cuda.is_available() else [])
)
def test_bad_device(bad):
    with pytest.raises(ValueError, match="cpu"):
        loading.pick_device(bad)


def test_device_and_dtype_defaults():
    assert loading.pick_device("cpu") == "cpu"
    want = torch.bfloat16 if loading.cpu_has_bf16() else torch.float32
    assert loading.pick_dtype(None, "cpu") == want
    assert loading.pick_dtype(None, "cuda") == torch.bfloat16
    assert loading.pick_dtype("bfloat16", "cpu") == torch.bfloat16
    assert loading.pick_dtype("torch.float16", "cpu") == torch.float16
    with pytest.raises(ValueError, match="float32, bfloat16, float16"):
        loading.pick_dtype("int8")


def test_a_capped_onednn_is_a_cpu_without_bfloat16(monkeypatch):
    # How benchmarks (and binder/start's choice) emulate CPUs without native bfloat16 on one that has it.
    monkeypatch.delenv("SAEHELPERS_DTYPE", raising=False)
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    native = loading.cpu_has_bf16()
    for cap in ("AVX2", "avx512_core", "AVX512_CORE_VNNI"):
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)
        assert not loading.cpu_has_bf16()
        assert loading.pick_dtype(None, "cpu") == torch.float32
    for cap in ("AVX512_CORE_BF16", "ALL", ""):  # no cap below bfloat16: the CPU decides
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)
        assert loading.cpu_has_bf16() == native


@pytest.mark.parametrize(
    ("value", "want"),
    [
        ("1", True),
        ("yes", True),
        (" On ", True),
        ("", False),
        ("0", False),
        ("off", False),
        (True, True),
        (False, False),
    ],
)
def test_pick_low_memory(monkeypatch, value, want):
    monkeypatch.delenv("SAEHELPERS_LOW_MEMORY", raising=False)
    assert loading.pick_low_memory(value) is want
    if isinstance(value, str):
        monkeypatch.setenv("SAEHELPERS_LOW_MEMORY", value)
        assert loading.pick_low_memory() is want


@pytest.mark.parametrize("bad", ["2", "maybe", 1.5])
def test_pick_low_memory_names_the_valid_values(bad):
    with pytest.raises(ValueError, match="1, true, yes, on") as e:
        loading.pick_low_memory(bad)
    assert "SAEHELPERS_LOW_MEMORY" in str(e.value)


def test_memory_guard_counts_the_bfloat16_embedding(monkeypatch):
    rel = saehelpers.get_release("gemma-3-1b")
    full = rel.n_params * 4 * 1.15
    low = (rel.n_params * 4 - rel.vocab * rel.d_model * 2) * 1.15
    monkeypatch.setattr(loading, "available_memory", lambda device: int((full + low) / 2))
    loading.check_memory("gemma-3-1b", "cpu", torch.float32, low_memory=True)  # fits
    with pytest.raises(RuntimeError, match="needs about"):
        loading.check_memory("gemma-3-1b", "cpu", torch.float32)


def test_memory_guard_refuses_before_loading(monkeypatch):
    monkeypatch.setattr(loading, "available_memory", lambda device: 2 * 1024**3)

    def must_not_load(*a, **k):
        raise AssertionError("loading started despite the memory check")

    import transformers

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", must_not_load)
    with pytest.raises(RuntimeError) as e:
        saehelpers.load_model("gemma-3-1b", device="cpu", dtype="float32")
    msg = str(e.value)
    assert "4.3 GB" in msg and "2.0 GB is free" in msg  # 1.0B params x 4 bytes x 1.15
    assert "bfloat16" in msg and "preset='mini'" in msg and "GPU" in msg
    # bfloat16 needs about 2.1 GB, which still does not fit: the bfloat16 fix is not offered again.
    with pytest.raises(RuntimeError, match="needs about 2.1 GB") as e:
        saehelpers.load_model("gemma-3-1b", device="cpu", dtype="bfloat16")
    assert "dtype='bfloat16'" not in str(e.value)


def test_mini_model_is_a_plain_cached_model(mini):
    model, tok = mini
    path = loading.mini_model_dir(model.dtype)
    cfg = json.loads((path / "config.json").read_text())
    assert "quantization_config" not in cfg  # saved as a plain model, not as a GGUF-quantized one
    assert cfg["hidden_size"] == 640 and cfg["num_hidden_layers"] == 18
    assert model.dtype == torch.float32 and not model.training  # as the session fixture asks
    assert not any(p.requires_grad for p in model.parameters())
    assert tok.bos_token_id == 2 and tok("hi").input_ids[0] == 2
    assert len(tok) == model.config.vocab_size == 262144


def test_mini_model_predicts_text(mini):
    model, tok = mini
    # A real language model, not random weights: it continues simple patterns.
    for prompt, expected in [("1, 2, 3, 4, 5, ", "6"), ("Monday, Tuesday, Wednesday,", " Thursday")]:
        ids = tok(prompt, return_tensors="pt").input_ids
        with torch.no_grad():
            nxt = model(ids).logits[0, -1].argmax().item()
        assert tok.decode(nxt) == expected


@pytest.mark.parametrize("bad", [-1, 25, "12", 3.5])
def test_load_sae_bad_layer_loads_nothing(bad):
    with pytest.raises(ValueError, match=r"layers 0\.\.24 have SAEs|SAEs for layers 0\.\.24"):
        saehelpers.load_sae(bad, "gemma-3-1b")


def test_offline_without_cache_says_what_to_do(tmp_path):
    # The real preset, offline, with an empty Hugging Face cache: a clear message, not a hub traceback.
    code = """
import saehelpers
for fn in (lambda: saehelpers.load_model("gemma-3-1b"), lambda: saehelpers.load_sae(3, "gemma-3-1b")):
    try:
        fn()
    except RuntimeError as e:
        print("ERR", e)
"""
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(tmp_path), HF_HOME=str(tmp_path))
    env.pop("HF_TOKEN", None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    errs = [line for line in out.stdout.splitlines() if line.startswith("ERR")]
    assert len(errs) == 2, out.stdout + out.stderr
    for line in errs:
        assert "not in the local Hugging Face cache" in line and "SAEHELPERS_PRESET=mini" in line


def _gated():
    import httpx
    from huggingface_hub import errors

    url = "https://huggingface.co/google/gemma-3-1b-pt/resolve/main/config.json"
    response = httpx.Response(403, request=httpx.Request("GET", url))
    return errors.GatedRepoError("403 Client Error: access to model is restricted", response=response)


def test_gated_error_message(monkeypatch):
    monkeypatch.setattr(loading, "hf_token", lambda: None)
    e = loading._hub_error(_gated(), "google/gemma-3-1b-pt")
    assert "no Hugging Face token is set" in str(e) and "accept the licence" in str(e)
    assert "SAEHELPERS_PRESET=mini" in str(e)
    monkeypatch.setattr(loading, "hf_token", lambda: "hf_x")
    e = loading._hub_error(_gated(), "google/gemma-3-1b-pt")
    assert "has not accepted the Gemma licence" in str(e)
    assert loading._hub_error(ZeroDivisionError(), "x") is None


def test_doctor_reports_without_leaking_token(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(tmp_path), HF_TOKEN="hf_do_not_print_me")
    env.pop("SAEHELPERS_PRESET", None)
    out = subprocess.run(
        [sys.executable, "-m", "saehelpers", "doctor"], env=env, capture_output=True, text=True, timeout=300
    )
    text = out.stdout
    assert "hf_do_not_print_me" not in text + out.stderr
    assert "HF token                set" in text
    assert "not reachable: HF_HUB_OFFLINE is set" in text
    assert "would use               preset 'mini'" in text
    shipped = all(
        (loading.sae_path(layer) / "cfg.json").exists() for layer in saehelpers.get_release("mini").layers
    )
    assert out.returncode == (0 if shipped else 1), text


def test_sae_path_is_for_the_shipped_mini_release_only():
    rel = saehelpers.get_release("mini")
    assert (loading.sae_path(rel.layers[0]) / "cfg.json").exists()
    with pytest.raises(ValueError, match="Only the 'mini' release ships SAE files.*load_sae"):
        loading.sae_path(rel.layers[0], "gemma-3-1b")
    with pytest.raises(ValueError, match="layer"):
        loading.sae_path(rel.layers[0] + 1)


def _in_two_processes(code: str, *args) -> list[subprocess.CompletedProcess]:
    """Run `code` (argv[1:] = args, then the process's number) in two Python processes started at once."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, *map(str, args), str(i)], stderr=subprocess.PIPE, text=True
        )
        for i in range(2)
    ]
    return [(p.wait(timeout=120), p.stderr.read()) for p in procs]


def test_two_processes_publishing_the_model_folder_keep_the_first_copy(tmp_path):
    """Two kernels converting at once: the first finished copy is published by one rename and never deleted
    or replaced under a reader (the old rmtree + rename deleted it); nothing temporary is left."""
    code = """if True:
        import sys, time
        from pathlib import Path
        from saehelpers.loading import publish_dir
        target, who = Path(sys.argv[1]), sys.argv[2]
        def build(tmp):
            time.sleep(0.5 if who == "0" else 3)  # process 1 finishes second
            (tmp / "weights").write_text(who * 1000)
            (tmp / "done.json").write_text(who)
        publish_dir(target, build)
        assert (target / "done.json").exists()
    """
    target = tmp_path / "float32"
    results = _in_two_processes(code, target)
    assert [rc for rc, _ in results] == [0, 0], results
    assert (target / "done.json").read_text() == "0" and (target / "weights").read_text() == "0" * 1000
    assert [p.name for p in tmp_path.iterdir()] == ["float32"]


def test_the_conversion_lock_lets_one_process_in_at_a_time(tmp_path):
    code = """if True:
        import sys, time
        from pathlib import Path
        from saehelpers.loading import file_lock
        log = Path(sys.argv[1])
        with file_lock(log.with_suffix(".lock")):
            with log.open("a") as f:
                f.write(f"{time.monotonic()} ")
            time.sleep(1)
            with log.open("a") as f:
                f.write(f"{time.monotonic()}\\n")
    """
    log = tmp_path / "log"
    assert [rc for rc, _ in _in_two_processes(code, log)] == [0, 0]
    (a0, a1), (b0, b1) = sorted(tuple(map(float, line.split())) for line in log.read_text().splitlines())
    assert a1 <= b0  # the second entered after the first left


def test_a_first_conversion_shows_a_moving_bar(tmp_path, monkeypatch, capsys):
    """Issue 35: the minutes of a first conversion are not silent: a bar names the work and counts seconds."""
    target = tmp_path / "float32"
    fake = f"import time, pathlib; time.sleep(2.5); p = pathlib.Path({str(target)!r}); p.mkdir(); (p / 'done.json').write_text('{{}}')"
    popen = subprocess.Popen
    monkeypatch.setattr(
        loading.subprocess, "Popen", lambda args, **kw: popen([sys.executable, "-c", fake], **kw)
    )
    loading._run_conversion("float32", target, progress=True)
    err = capsys.readouterr().err
    assert "Preparing the stand-in model once in float32" in err
    counts = {int(m) for m in re.findall(r"\| *(\d+)/\d+ \[", err)}
    assert {0, 2} <= counts or len(counts) >= 2, err  # it moved while the child worked
