// cuBLAS and cuSOLVER, loaded on first use (dlopen) instead of linked. Their load-time initialisation (cuBLASLt
// alone ~0.3 s; cuSOLVER with cuSPARSE and nvJitLink another ~0.1-0.3 s) would otherwise be paid at every process
// start, before main, even by runs that never touch them (the CPU backend, FP8 without a solve). Loaded this way,
// the first user -- the CUDA warm-up thread of `quantize --device cuda` -- pays it while the checkpoint, tokenizer
// and calibration set load. Only the functions this project calls.
#pragma once
#include <cublas_v2.h>
#include <cusolverDn.h>

namespace angelslim::cuda {

struct CublasApi {
  decltype(&cublasCreate) create;
  decltype(&cublasDestroy) destroy;
  decltype(&cublasSetStream) set_stream;
  decltype(&cublasSetMathMode) set_math_mode;
  decltype(&cublasSetWorkspace) set_workspace;
  decltype(&cublasGetStatusString) get_status_string;
  decltype(&cublasSgemm) sgemm;
  decltype(&cublasSgemmStridedBatched) sgemm_strided_batched;
  // The exported (cublasComputeType_t) forms; the header also has C++ inline overloads taking a cudaDataType.
  cublasStatus_t (*gemm_ex)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int, const void*,
                            const void*, cudaDataType, int, const void*, cudaDataType, int, const void*, void*,
                            cudaDataType, int, cublasComputeType_t, cublasGemmAlgo_t);
  cublasStatus_t (*gemm_strided_batched_ex)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int,
                                            const void*, const void*, cudaDataType, int, long long, const void*,
                                            cudaDataType, int, long long, const void*, void*, cudaDataType, int,
                                            long long, int, cublasComputeType_t, cublasGemmAlgo_t);
  decltype(&cublasSsyrk) ssyrk;
};

struct CusolverApi {
  decltype(&cusolverDnCreate) create;
  decltype(&cusolverDnDestroy) destroy;
  decltype(&cusolverDnSetStream) set_stream;
  decltype(&cusolverDnDpotrf_bufferSize) dpotrf_buffer_size;
  decltype(&cusolverDnDpotrf) dpotrf;
  decltype(&cusolverDnXtrtri_bufferSize) xtrtri_buffer_size;
  decltype(&cusolverDnXtrtri) xtrtri;
};

// The functions of libcublas.so.<major> / libcusolver.so.<major>, loaded once (thread-safe: a second caller waits
// for the first). Throw Unsupported naming the library and the loader's message when it cannot be loaded or lacks
// a function; the next call tries again.
const CublasApi& cublas();
const CusolverApi& cusolver();

}  // namespace angelslim::cuda
