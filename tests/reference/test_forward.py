"""The C forward pass (through sluice-generate) against the numpy oracle on the bundled model.

Tolerance, and why. Both sides use the very same quantized weights (the oracle dequantizes
them with the gguf package), so any difference comes from arithmetic, not from the model:
the C kernels quantize activations to 8 bits before the quantized dot products (as ggml
does), keep the KV cache in f16, and sum in a different order, while the oracle is float32
throughout. Through 30 layers that noise moves individual logits by up to ~0.8 (about 2.5%
of the logit range; mean ~0.1) on SmolLM2-135M, and can shift all logits together by a few
tenths, which changes no probability. So the logits are compared after removing their mean
(softmax is shift-invariant). A real bug (wrong RoPE pairing, a missing norm, a GQA index
error) moves them by whole units and destroys the ranking. Hence, per prompt:
  * cosine similarity of the centered final-position logits >= 0.998 (measured >= 0.9992),
  * max |C - oracle| (centered) <= 4% of the oracle's logit range (measured 1.2-2.5%) and
    the mean |C - oracle| <= 0.25 (measured ~0.1),
  * the C top-1 token is the oracle top-1 or within FLIP_TOL logits of it (a near-tie that
    the noise above can flip; measured <= 0.22), and the top-5 sets share >= 3 tokens.
Greedy generation: 32 tokens are compared step by step with the oracle teacher-forced on the
C output (one KV-cached pass). The two sequences must be identical up to the first step where
the oracle's own top-2 margin is below FLIP_TOL; from there on the runs may part, and every
C token must still be the oracle's argmax within FLIP_TOL at its position.
"""
import numpy as np
import pytest

from conftest import checked_logits

FLIP_TOL = 0.75
COS_MIN = 0.998
REL_MAX = 0.04
MEAN_ABS_MAX = 0.25

SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
PROMPTS = [
    "Once upon a time, in a small village,",
    f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\nWrite a haiku about the sea.<|im_end|>\n"
    "<|im_start|>assistant\n",
    "The capital of France is",
]
LOGIT_PROMPTS = PROMPTS + ["def fibonacci(n):\n    "]


@pytest.mark.parametrize("prompt", LOGIT_PROMPTS, ids=["story", "chat", "france", "code"])
def test_prompt_logits(gen, oracle, tmp_path, prompt):
    d, info = checked_logits(gen, oracle, prompt, tmp_path, COS_MIN, REL_MAX, repr(prompt[:20]))
    assert d.meanabs <= MEAN_ABS_MAX, info
    assert d.r.max() - d.r[d.c_top] <= FLIP_TOL, info
    assert d.top5_shared() >= 3, info


@pytest.mark.parametrize("prompt", PROMPTS, ids=["story", "chat", "france"])
def test_greedy_32(gen, oracle, ref_tok, prompt):
    ids = gen.tokenize(prompt)
    out = gen.greedy(prompt, 32)
    c_ids = out["token_ids"]
    assert 0 < len(c_ids) <= 32
    eog = {ref_tok.vocab[t] for t in ("<|endoftext|>", "<|im_end|>")}
    cache = oracle.new_cache()
    logits = oracle.forward(ids, cache, 0)
    pos = len(ids)
    diverged_at = None
    report = []
    for step, tok in enumerate(c_ids):
        order = np.argsort(-logits)
        o_top, o_second = int(order[0]), int(order[1])
        gap = float(logits[o_top] - logits[tok])
        report.append((step, tok, o_top, round(gap, 3)))
        if diverged_at is None and tok != o_top:
            margin = float(logits[o_top] - logits[o_second])
            assert margin < FLIP_TOL, f"diverged at step {step} without a near-tie: {report}"
            diverged_at = step
        assert gap <= FLIP_TOL, f"C token far from the oracle's argmax: {report}"
        logits = oracle.forward([tok], cache, pos)
        pos += 1
    if len(c_ids) < 32 and c_ids[-1] not in eog:
        # C stopped at an end-of-generation token: the oracle must want one there as well.
        assert out["finish_reason"] == "stop"
        best_eog = max(float(logits[e]) for e in eog)
        assert logits.max() - best_eog <= FLIP_TOL, f"oracle does not end here: {report}"
    if diverged_at is None:
        assert len(c_ids) == 32 or out["finish_reason"] == "stop"
    print(f"{prompt[:20]!r}: {len(c_ids)} tokens, identical to the oracle's greedy run "
          + ("throughout" if diverged_at is None else f"up to step {diverged_at} (near-tie)"))


def test_oracle_sanity(oracle, ref_tok):
    # The oracle stands on its own: SmolLM2 completes this prompt with " Paris".
    ids = ref_tok.encode("The capital of France is")
    first = int(np.argmax(oracle.forward(ids)))
    assert ref_tok.decode_bytes([first]) == b" Paris"
