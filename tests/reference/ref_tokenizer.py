"""An independent byte-level BPE tokenizer built from a GGUF file's vocabulary and merges.

Ground truth for the C tokenizer's tests. It follows the Hugging Face `tokenizers` pipeline
for byte-level BPE models (pre-tokenizer regex with the `regex` module, GPT-2 byte-to-unicode
mapping, merges applied lowest rank first) and shares no code with worker/tokenizer.c.
Supported pre-tokenizers: smollm (Digits(individual) + ByteLevel), gpt2, llama-bpe, qwen2.
"""
from __future__ import annotations

import regex

GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
LLAMA3_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"""
    r"""| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
QWEN2_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"""
    r"""| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)


def bytes_to_unicode() -> dict[int, str]:
    """The GPT-2 table: printable bytes stand for themselves, the rest move to U+0100.."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(
        range(0xAE, 0xFF + 1)
    )
    table = {}
    extra = 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def _split_keep(pattern: "regex.Pattern[str]", text: str) -> list[str]:
    """Like HF's Split(behavior=Isolated): matches and the text between them."""
    out = []
    pos = 0
    for m in pattern.finditer(text):
        if m.start() > pos:
            out.append(text[pos : m.start()])
        out.append(m.group(0))
        pos = m.end()
    if pos < len(text):
        out.append(text[pos:])
    return out


class RefBPE:
    def __init__(self, tokens: list[str], token_types: list[int], merges: list[str], pre: str):
        self.tokens = tokens
        self.token_types = token_types
        self.vocab = {}
        for i, t in enumerate(tokens):
            self.vocab.setdefault(t, i)
        self.ranks = {}
        for r, m in enumerate(merges):
            a, b = m.split(" ", 1)
            self.ranks.setdefault((a, b), r)
        self.specials = sorted(
            (t for t, ty in zip(tokens, token_types) if ty in (3, 4) and t),
            key=lambda s: -len(s),
        )
        self.byte_map = bytes_to_unicode()
        self.unbyte = {c: b for b, c in self.byte_map.items()}
        self.pre = pre
        self.ignore_merges = pre == "llama-bpe"
        if pre in ("smollm",):
            self.splits = [regex.compile(r"\p{N}"), regex.compile(GPT2_PATTERN)]
        elif pre in ("gpt2", "default"):
            self.splits = [regex.compile(GPT2_PATTERN)]
        elif pre == "llama-bpe":
            self.splits = [regex.compile(LLAMA3_PATTERN)]
        elif pre == "qwen2":
            self.splits = [regex.compile(QWEN2_PATTERN)]
        else:
            raise ValueError(f"pre-tokenizer {pre!r} not supported by the reference")
        self.cache: dict[str, list[int]] = {}

    @classmethod
    def from_gguf(cls, reader) -> "RefBPE":
        f = reader.fields
        tokens = [bytes(f["tokenizer.ggml.tokens"].parts[i]).decode("utf-8") for i in
                  f["tokenizer.ggml.tokens"].data]
        tt = f["tokenizer.ggml.token_type"]
        types = [int(tt.parts[i][0]) for i in tt.data]
        mf = f["tokenizer.ggml.merges"]
        merges = [bytes(mf.parts[i]).decode("utf-8") for i in mf.data]
        pre = bytes(f["tokenizer.ggml.pre"].parts[-1]).decode() if "tokenizer.ggml.pre" in f else "gpt2"
        return cls(tokens, types, merges, pre)

    def pretokenize(self, text: str) -> list[str]:
        pieces = [text]
        for pat in self.splits:
            nxt = []
            for p in pieces:
                nxt.extend(_split_keep(pat, p))
            pieces = nxt
        return pieces

    def _bpe(self, word: str) -> list[int]:
        if word in self.cache:
            return self.cache[word]
        mapped = "".join(self.byte_map[b] for b in word.encode("utf-8"))
        if self.ignore_merges and mapped in self.vocab:
            return [self.vocab[mapped]]
        # Characters the vocabulary lacks are dropped (HF BPE without an unk token).
        parts = [c for c in mapped if c in self.vocab]
        while len(parts) > 1:
            best = None
            for i in range(len(parts) - 1):
                r = self.ranks.get((parts[i], parts[i + 1]))
                if r is not None and (best is None or r < best[0]):
                    best = (r, i)
            if best is None:
                break
            i = best[1]
            parts[i : i + 2] = [parts[i] + parts[i + 1]]
        ids = [self.vocab[p] for p in parts]
        self.cache[word] = ids
        return ids

    def encode(self, text: str, parse_special: bool = False) -> list[int]:
        out: list[int] = []
        frags: list[tuple[bool, str]] = []
        if parse_special and self.specials:
            pos = 0
            start = 0
            while pos < len(text):
                hit = next((s for s in self.specials if text.startswith(s, pos)), None)
                if hit is None:
                    pos += 1
                    continue
                if pos > start:
                    frags.append((False, text[start:pos]))
                frags.append((True, hit))
                pos += len(hit)
                start = pos
            if start < len(text):
                frags.append((False, text[start:]))
        else:
            frags = [(False, text)]
        for special, frag in frags:
            if special:
                out.append(self.vocab[frag])
                continue
            for word in self.pretokenize(frag):
                out.extend(self._bpe(word))
        return out

    def decode_bytes(self, ids: list[int]) -> bytes:
        out = bytearray()
        for i in ids:
            if self.token_types[i] in (3, 4):
                out.extend(self.tokens[i].encode("utf-8"))
            else:
                out.extend(bytes(self.unbyte[c] for c in self.tokens[i]))
        return bytes(out)
