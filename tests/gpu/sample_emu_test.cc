/*
 * sample_emu_test: the device sampler's kernel (worker/backend/cuda/cuda_sample.cu, compiled
 * here as C++ over cuda_emu.h) run on the CPU against wk_sampler_sample on the cases of
 * sample_cases.h, so its logic (candidate order, heap replay, buckets, edge sort, walks,
 * reductions, barriers) is checked on every machine before a GPU ever runs it. The emulation
 * uses the host's expf/logf, so tokens must agree exactly; only the order of double sums
 * differs. Exit 0 pass, 1 fail.
 */
#include "sample_cases.h" /* first: the CUDA headers must not see cuda_emu.h's macros */

#include "cuda_emu.h"

#define WK_CUDA_SAMPLE_EMU 1
#include "backend/cuda/cuda_sample.cu"

static int run_cases(int n, int n_vocab, unsigned n_work, uint64_t seed) {
    gu_rng r = {seed};
    sc_cases c;
    sc_cases_make(&r, n, n_vocab, &c);
    const size_t slot = pow2_at_least(n_vocab);
    std::vector<uint8_t> work(slot * 8 * n_work);
    std::vector<float> logits(c.logits, c.logits + (size_t)n * n_vocab);
    std::vector<wk_cuda_sample_out> out((size_t)n);
    memset(out.data(), 0xFF, sizeof(wk_cuda_sample_out) * out.size());
    const unsigned grid = (unsigned)n < n_work ? (unsigned)n : n_work;
    double t0 = gu_now();
    bool ran = emu::launch(grid, kThreads, [&] {
        sample_kernel(logits.data(), n_vocab, c.seqs, n, c.bias, c.pen, work.data(), slot,
                      out.data());
    });
    char detail[200] = "";
    int ok = ran && sc_cases_check(&c, out.data(), 0, detail, sizeof(detail));
    printf("emulated kernel, vocab %d, %u blocks: %s (%.1f s)  %s\n", n_vocab, grid, detail,
           gu_now() - t0, ok ? "PASS" : "FAIL");
    sc_cases_free(&c);
    return ok;
}

int main() {
    int ok = 1;
    ok &= run_cases(24, 3000, 5, 0x5eed0001ULL);  /* several chunks per row, blocks reused */
    ok &= run_cases(12, 1000, 12, 0x5eed0002ULL); /* under one chunk of kThreads + tail */
    ok &= run_cases(12, 20000, 4, 0x5eed0003ULL); /* many chunks in every pass */
    return ok ? 0 : 1;
}
