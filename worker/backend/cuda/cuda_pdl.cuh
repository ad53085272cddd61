/*
 * cuda_pdl: programmatic dependent launch (PDL, sm_90+) helpers shared by the kernel files
 * (internal to worker/backend/cuda). See wk_cuda_ops_set_pdl in cuda_ops.h.
 *
 * Device side: every decode-path kernel calls pdl_trigger() first (lets the next kernel in the
 * stream be scheduled once all of this grid's blocks are running) and pdl_wait() before it
 * reads anything an earlier kernel wrote (returns once the previous grid has completed and
 * its writes are visible). Both are no-ops when the kernel was launched without the PDL
 * attribute or compiled for sm < 90. Because the trigger fires only after every block of the
 * current grid has started, waiting blocks of the next grid can never starve it.
 */
#ifndef WK_CUDA_PDL_CUH
#define WK_CUDA_PDL_CUH

#include <cuda_runtime.h>

#include <utility>

__device__ __forceinline__ void pdl_trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

extern "C" int wk_cuda_ops_pdl(void);

/* Launches kernel with the PDL attribute when wk_cuda_ops_pdl() is on, plainly otherwise. */
template <typename... KArgs, typename... Args>
static cudaError_t launch_maybe_pdl(void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem,
                                    cudaStream_t stream, Args &&...args) {
    if (!wk_cuda_ops_pdl()) {
        kernel<<<grid, block, smem, stream>>>(std::forward<Args>(args)...);
        return cudaGetLastError();
    }
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = stream;
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = attr;
    cfg.numAttrs = 1;
    return cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...);
}

#endif /* WK_CUDA_PDL_CUH */
