"""The C tokenizer (through `sluice-generate --tokenize`) against an independent Python BPE
built from the same GGUF vocabulary and merges, on a corpus with emoji, CJK, combining marks,
right-to-left scripts and odd whitespace; plus round trips and invalid UTF-8.

Invalid UTF-8 policy (stated): the C tokenizer rejects it with CM_ERR_UTF8 and the CLI exits
non-zero naming UTF-8; the gateway rejects such a body with 400 before it reaches a worker.
Nothing is silently replaced on the way in; only the streaming detokenizer emits U+FFFD, for
byte sequences the model itself generates that can never become valid.
"""
import pytest

CORPUS = [
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog. 1234567890",
    "I'm sure they'll say it's fine; DON'T you think?",
    "Emoji: 😀 😂 👍🏽 ❤️ 🇫🇷 👨‍👩‍👧‍👦 🧑🏿‍🚀",
    "CJK: 日本語のテキストです。中文文本。한국어 텍스트.",
    "Combining: e\u0301 n\u0303 a\u0308\u0301 Z\u0351\u035b\u0353 (decomposed é ñ)",
    "Precomposed: café naïve façade Ångström",
    "RTL: مرحبا بالعالم — שלום עולם",
    "Indic & Thai: नमस्ते दुनिया สวัสดีชาวโลก",
    "Math: ∀x∈ℝ, x² ≥ 0; ∑ᵢ aᵢ ≈ π ½ ⅓ Ⅻ",
    "Digits: ٠١٢٣ ０１２ 3.14159 1,000,000",
    "Whitespace:\ttab  two spaces\u00a0nbsp\u3000ideographic\n\nblank line\r\nCRLF   ",
    "code:\n    def f(x):\n        return x ** 2  # square\n\n\tif (a && b) { c++; }\n",
    "URLs: https://example.com/path?q=1&r=two#frag <tag attr=\"v\">",
    "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n",
    "   leading and trailing   ",
    "a",
    "ZWJ\u200dZWNJ\u200cBOM\ufeffend",
]

INVALID = [
    b"bad \xff byte",
    b"overlong \xc0\xaf slash",
    b"surrogate \xed\xa0\x80 half",
    b"truncated \xe6\x97",
    b"lone continuation \x80",
    b"beyond U+10FFFF \xf4\x90\x80\x80",
]


@pytest.mark.parametrize("text", CORPUS, ids=[c[:12] for c in CORPUS])
def test_matches_reference_bpe(gen, ref_tok, text):
    got = gen.tokenize(text)
    want = ref_tok.encode(text, parse_special=True)
    assert got == want
    # Round trip: the ids decode back to exactly the input bytes.
    assert ref_tok.decode_bytes(got) == text.encode("utf-8")


def test_special_tokens_are_single_ids(gen, ref_tok):
    ids = gen.tokenize("<|im_start|>user\nx<|im_end|>")
    assert ids[0] == ref_tok.vocab["<|im_start|>"]
    assert ids[-1] == ref_tok.vocab["<|im_end|>"]


def test_bytes_missing_from_vocab_are_dropped(gen, ref_tok):
    # SmolLM2's byte-level vocabulary has no token for byte 0x04 (nor for 0xF5..0xFF, which
    # valid UTF-8 never contains); like HF tokenizers, such bytes are dropped.
    text = "ctl\x04x"
    ids = gen.tokenize(text)
    assert ids == ref_tok.encode(text)
    assert ref_tok.decode_bytes(ids) == b"ctlx"


@pytest.mark.parametrize("raw", INVALID, ids=[r.decode("latin-1")[:10] for r in INVALID])
def test_invalid_utf8_is_rejected(gen, raw):
    p = gen.run(raw, "--tokenize", check=False)
    assert p.returncode != 0
    assert b"utf" in p.stderr.lower()


def test_chat_prompt_matches_the_models_template(gen, ref_tok):
    # SmolLM2's Jinja template, rendered by hand: the default system prompt is inserted when
    # the conversation has none, then ChatML turns and the assistant opener.
    import json

    user = "What is the tallest mountain? 🏔️"
    want_text = (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
        "Face<|im_end|>\n<|im_start|>user\n" + user + "<|im_end|>\n<|im_start|>assistant\n"
    )
    got = json.loads(gen.run_args("--chat", user, "--tokenize").stdout)["token_ids"]
    assert got == ref_tok.encode(want_text, parse_special=True)
    sys_text = "<|im_start|>system\nBe terse.<|im_end|>\n<|im_start|>user\n" + user
    sys_text += "<|im_end|>\n<|im_start|>assistant\n"
    got = json.loads(gen.run_args("--system", "Be terse.", "--chat", user, "--tokenize").stdout)
    assert got["token_ids"] == ref_tok.encode(sys_text, parse_special=True)


def test_random_strings_match_reference(gen, ref_tok):
    # Random mixes of the characters the pre-tokenizer treats differently: letters, digits,
    # contractions, whitespace kinds, punctuation, marks, non-ASCII digits, specials.
    import random

    rnd = random.Random(20261127)
    alphabet = list("abcXYZ019 '\n\t\r.,!?-_<>|") + [
        "  ", "'s", "'re", "'LL", "<|im_start|>", "<|im_end|>", "é", "e\u0301", "日本",
        "😀", "\u00a0", "\u3000", "½", "٣", "Ⅻ", "\u2003", "  \n", "ll", "\x85", "\u200b",
    ]
    for _ in range(120):
        # Leading "x": sluice-generate drops a second BOS at the start of a prompt, and
        # SmolLM2's BOS is <|im_start|>, so a prompt may not start with two of them.
        text = "x" + "".join(rnd.choice(alphabet) for _ in range(rnd.randint(1, 40)))
        assert gen.tokenize(text) == ref_tok.encode(text, parse_special=True), repr(text)
