#!/usr/bin/env python3
"""Plain PyTorch eager baseline for scripts/gpu-check (issue 7).

A Llama forward at Llama-3-8B shape (n_embd 4096, 32 layers, 32 heads, 8 kv heads, head_dim
128, n_ff 14336, vocab 128256, rope base 500000), f16 random weights, written the obvious way
in eager PyTorch (matmuls, RMSNorm in f32, RoPE, a contiguous KV cache, GQA by
repeat_interleave, F.scaled_dot_product_attention). Same shapes and KV length as gpu_bench:

- decode, batch 1, 512 tokens of context already in the cache: tokens/s (each step ends with
  the next token on the host, as a serving loop needs); attention as matmul-softmax-matmul;
- prefill of a 2,048-token prompt: tokens/s (best of 3 after a warm-up).

Writes "key value" lines to --kv. Exit 77 when no CUDA device is visible to torch.
"""
import argparse
import math
import sys
import time


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kv", help="write key value lines here")
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--prefill", type=int, default=2048)
    ap.add_argument("--steps", type=int, default=30)
    args = ap.parse_args()

    import torch
    import torch.nn.functional as F

    if not torch.cuda.is_available():
        print("torch: no CUDA device")
        return 77
    dev, dt = "cuda", torch.float16
    E, H, KV, D, FF, V = 4096, 32, 8, 128, 14336, 128256
    L = args.layers
    torch.manual_seed(0)
    print(f"torch {torch.__version__} on {torch.cuda.get_device_name(0)}", flush=True)

    def w(rows, cols):
        return torch.randn(rows, cols, device=dev, dtype=dt) * (1.0 / math.sqrt(cols))

    t0 = time.time()
    layers = []
    for _ in range(L):
        layers.append(
            dict(wq=w(H * D, E), wk=w(KV * D, E), wv=w(KV * D, E), wo=w(E, H * D),
                 wg=w(FF, E), wu=w(FF, E), wd=w(E, FF),
                 an=torch.ones(E, device=dev, dtype=dt), fn=torch.ones(E, device=dev, dtype=dt)))
    emb = torch.randn(V, E, device=dev, dtype=dt)
    out_w = w(V, E)
    out_norm = torch.ones(E, device=dev, dtype=dt)
    max_ctx = max(args.ctx + args.steps + 8, args.prefill)
    kc = [torch.zeros(1, KV, max_ctx, D, device=dev, dtype=dt) for _ in range(L)]
    vc = [torch.zeros(1, KV, max_ctx, D, device=dev, dtype=dt) for _ in range(L)]
    inv_freq = 1.0 / (500000.0 ** (torch.arange(0, D, 2, device=dev, dtype=torch.float32) / D))
    torch.cuda.synchronize()
    print(f"weights ready in {time.time() - t0:.1f} s", flush=True)

    def rms(x, g):
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-5)).to(dt) * g

    def rope(x, pos):  # x: (1, heads, T, D); adjacent pairs (GGUF llama layout)
        ang = pos[:, None].float() * inv_freq[None, :]
        cos, sin = ang.cos(), ang.sin()
        x1, x2 = x[..., 0::2].float(), x[..., 1::2].float()
        return torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), -1).flatten(-2).to(dt)

    def forward(tokens, start):
        T = tokens.shape[0]
        x = emb[tokens]
        pos = torch.arange(start, start + T, device=dev)
        for i, ly in enumerate(layers):
            h = rms(x, ly["an"])
            q = (h @ ly["wq"].t()).view(T, H, D).transpose(0, 1)[None]
            k = (h @ ly["wk"].t()).view(T, KV, D).transpose(0, 1)[None]
            v = (h @ ly["wv"].t()).view(T, KV, D).transpose(0, 1)[None]
            q, k = rope(q, pos), rope(k, pos)
            kc[i][:, :, start:start + T] = k
            vc[i][:, :, start:start + T] = v
            kk = kc[i][:, :, :start + T].repeat_interleave(H // KV, dim=1)
            vv = vc[i][:, :, :start + T].repeat_interleave(H // KV, dim=1)
            if T == 1:
                # decode: plain matmul-softmax-matmul. SDPA here made every step a new key
                # length, and on the first device run (H200) that cost ~96 ms per step (backend
                # plan per shape), which would make the baseline unfairly slow.
                sc = (q @ kk.transpose(-1, -2)).float() * (1.0 / math.sqrt(D))
                a = (torch.softmax(sc, dim=-1).to(dt)) @ vv
            else:
                a = F.scaled_dot_product_attention(q, kk, vv, is_causal=(start == 0))
            x = x + a[0].transpose(0, 1).reshape(T, H * D) @ ly["wo"].t()
            h = rms(x, ly["fn"])
            x = x + (F.silu(h @ ly["wg"].t()) * (h @ ly["wu"].t())) @ ly["wd"].t()
        h = rms(x[-1:], out_norm)
        return (h @ out_w.t()).float()

    results = {}
    with torch.inference_mode():
        tok = torch.tensor([1], device=dev)
        for i in range(3):
            tok = forward(tok, args.ctx + i).argmax(-1)
            tok = torch.tensor([int(tok.item())], device=dev)
        torch.cuda.synchronize()
        t0 = time.time()
        for i in range(args.steps):
            nxt = int(forward(tok, args.ctx + 3 + i).argmax(-1).item())
            tok = torch.tensor([nxt], device=dev)
        ms = (time.time() - t0) * 1e3 / args.steps
        results["decode_b1_ms"] = ms
        results["decode_b1_tok_s"] = 1e3 / ms
        print(f"torch eager decode batch 1: {ms:.3f} ms/step, {1e3 / ms:.1f} tok/s", flush=True)

        prompt = torch.randint(0, V, (args.prefill,), device=dev)
        best = float("inf")
        for i in range(4):
            torch.cuda.synchronize()
            t0 = time.time()
            forward(prompt, 0).argmax(-1).item()
            el = (time.time() - t0) * 1e3
            if i > 0:
                best = min(best, el)
        results["prefill_ms"] = best
        results["prefill_tok_s"] = args.prefill * 1e3 / best
        print(f"torch eager prefill {args.prefill}: {best:.1f} ms, "
              f"{args.prefill * 1e3 / best:.0f} tok/s", flush=True)

    if args.kv:
        with open(args.kv, "w") as f:
            for k, v in results.items():
                f.write(f"{k} {v:.6g}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
