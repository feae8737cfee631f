"""Text and token ids: checked texts, BOS-first rows, one right-padded batch, and tokens as readable strings.

Every helper that turns texts into a batch goes through `pad_rows`, so padding is the same everywhere:
on the right, with the tokenizer's pad token (0 if it has none), attention mask 0.
"""

from __future__ import annotations

import re

import torch

from .checks import as_int, check_int


def check_texts(texts, name: str = "texts", allow_empty: bool = False) -> list[str]:
    """`texts` (a string or an iterable of strings) as a non-empty list of encodable strings, else ValueError.

    allow_empty: whether a text may be "" (e.g. a generation that stopped at once); the list never may.
    """
    if isinstance(texts, str):
        texts = [texts]
    if texts is None or not hasattr(texts, "__iter__") or isinstance(texts, (bytes, dict)):
        raise ValueError(
            f"{name} must be a string or a list of strings, got {texts!r} ({type(texts).__name__})."
        )
    texts = list(texts)
    if not texts:
        raise ValueError(f"{name} is empty: give at least one text (a string or a list of strings).")
    what = "a string" if allow_empty else "a non-empty string"
    for i, t in enumerate(texts):
        if not isinstance(t, str) or not (t or allow_empty):
            raise ValueError(f"{name}[{i}] is {t!r} ({type(t).__name__}): every text must be {what}.")
        check_text(t, f"{name}[{i}]")
    return texts


def check_text(text, name: str = "text") -> str:
    """`text` if it is a string the tokenizer can encode (no lone surrogate such as '\\ud800'), else ValueError."""
    if not isinstance(text, str):
        raise ValueError(f"{name} must be a string, got {text!r} ({type(text).__name__}).")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(
            f"{name} holds {text[e.start : e.end]!r} at index {e.start}, half of a UTF-16 surrogate pair, "
            "which is no character: remove it, or decode the text's bytes with errors='replace'."
        ) from None
    return text


def check_token_ids(ids, vocab_size: int, name: str = "token_ids") -> list[int]:
    """`ids` (an id, or a list / 1-D tensor / array of ids) as a list of ints in 0..vocab_size-1, else ValueError."""
    if as_int(ids) is not None:
        ids = [as_int(ids)]
    valid = f"token ids are ints in 0..{vocab_size - 1}"
    try:
        t = torch.as_tensor(ids)
    except (TypeError, ValueError, RuntimeError):  # strings, ragged lists, ints beyond int64
        raise ValueError(f"{name} must be a list of token ids ({valid}), got {ids!r}.") from None
    if t.numel() == 0:
        return []
    if t.dim() != 1 or t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise ValueError(
            f"{name} must be a list of token ids ({valid}), got {t.dim()}-D {t.dtype} values: {ids!r:.80}."
        )
    bad = t[(t < 0) | (t >= vocab_size)]
    if len(bad):
        raise ValueError(f"{name} holds {bad[0].item()}, which is no token: {valid}.")
    return t.tolist()


def tokenize(tokenizer, text: str, max_len: int | None = None) -> list[int]:
    """BOS + the tokens of a non-empty `text`, cut to `max_len` ids in all (None: no cut)."""
    if max_len is not None:
        max_len = check_int(max_len, "max_len", low=2, hint="max_len counts BOS and at least one token.")
    ids = tokenizer(check_text(text), add_special_tokens=False)["input_ids"]
    ids = ids[: None if max_len is None else max_len - 1]
    if not ids:
        raise ValueError(f"The text {text!r} has no tokens: give a non-empty text.")
    return [tokenizer.bos_token_id, *ids]


def pad_rows(tokenizer, rows, length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of token ids as one right-padded batch: `(input_ids, attention_mask)`, LongTensors [rows, length].

    length: the batch's width (None: the longest row). Padding is the tokenizer's pad token, or 0.
    """
    rows = [list(r) for r in rows]
    if not rows:
        raise ValueError("No rows to pad: give at least one row of token ids.")
    longest = max(map(len, rows))
    n = (
        longest
        if length is None
        else check_int(length, "length", low=longest, hint="A batch is as wide as its longest row.")
    )
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = torch.full((len(rows), n), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), n), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1
    return ids, mask


def text_batches(tokenizer, texts, batch_size: int = 8, max_len: int = 256):
    """Batches with one row per text (BOS + its tokens, cut at max_len), right-padded: for short text lists.

    The texts are checked and tokenized at the call, so a bad one fails here, not in the loop.
    """
    batch_size = check_int(batch_size, "batch_size", low=1)
    rows = [tokenize(tokenizer, t, max_len) for t in check_texts(texts)]
    return (
        dict(zip(("input_ids", "attention_mask"), pad_rows(tokenizer, rows[i : i + batch_size])))
        for i in range(0, len(rows), batch_size)
    )


BYTE_TOKEN = re.compile(r"<0x([0-9A-Fa-f]{2})>")  # Gemma's byte-fallback tokens, e.g. <0xE8>


def token_bytes(tokenizer, ids) -> list[bytes]:
    """Each token's UTF-8 bytes: a byte-fallback token is its one byte, any other token its decoded text."""
    ids = check_token_ids(ids, len(tokenizer), "ids")
    pieces = tokenizer.convert_ids_to_tokens(ids)
    return [
        bytes([int(m[1], 16)]) if (m := BYTE_TOKEN.fullmatch(p or "")) else tokenizer.decode([i]).encode()
        for p, i in zip(pieces, ids)
    ]


def byte_chars(data: bytes):
    """(text, n_bytes) per character of `data`; a byte that makes no whole character reads ⟨0xE8⟩, not �."""
    for c in data.decode("utf-8", "surrogateescape"):  # such a byte decodes to a lone surrogate U+DC80..DCFF
        yield (f"⟨0x{ord(c) - 0xDC00:02X}⟩", 1) if "\udc80" <= c <= "\udcff" else (c, len(c.encode()))


def token_strings(tokenizer, ids) -> list[str]:
    """Each token id, on its own, as the text it stands for (spaces and newlines included).

    For unrelated tokens (a logit-lens list). A byte-fallback token alone is no character, so it reads
    ⟨0xE8⟩. For consecutive tokens of a text use `context_strings`.
    """
    return ["".join(c for c, _ in byte_chars(b)) for b in token_bytes(tokenizer, ids)]


def context_strings(tokenizer, ids) -> list[str]:
    """Consecutive tokens as texts that join to the decoded text, each token's activation still its own.

    Gemma spells a rare character as byte tokens (譫 = <0xE8><0xAD><0xAB>), each a � when decoded alone.
    Here a character goes to the token holding its last byte, where the model has seen all of it; the
    tokens before that show "". A byte whose character is cut off by the context's edge reads ⟨0xAD⟩.
    """
    parts = token_bytes(tokenizer, ids)
    owner = [t for t, b in enumerate(parts) for _ in b]  # the token each byte came from
    out, pos = [""] * len(parts), 0
    for text, n in byte_chars(b"".join(parts)):
        pos += n
        out[owner[pos - 1]] += text
    return out


__all__ = [
    "check_text",
    "check_texts",
    "check_token_ids",
    "context_strings",
    "pad_rows",
    "text_batches",
    "token_strings",
    "tokenize",
]
