#include "angelslim/backend/cuda_libs.h"

#include <dlfcn.h>

#include <atomic>
#include <mutex>
#include <string>

#include "angelslim/core/error.h"

// The exported name of a function whose header name is a macro (cublasSgemm -> cublasSgemm_v2).
#define ANGELSLIM_SYMBOL_NAME2(x) #x
#define ANGELSLIM_SYMBOL_NAME(x) ANGELSLIM_SYMBOL_NAME2(x)

namespace angelslim::cuda {

namespace {

class Library {
 public:
  Library(std::string name, const char* what) : name_(std::move(name)) {
    handle_ = ::dlopen(name_.c_str(), RTLD_NOW | RTLD_LOCAL);  // stays loaded for the life of the process
    if (!handle_) {
      const char* why = ::dlerror();
      throw Unsupported(fmt::format("cannot load {} ({}): {}", name_, what, why ? why : "unknown error"));
    }
  }
  template <class F>
  void bind(F& f, const char* symbol) const {
    f = reinterpret_cast<F>(::dlsym(handle_, symbol));
    if (!f) throw Unsupported(fmt::format("{}: no symbol {} (older than this build expects?)", name_, symbol));
  }

 private:
  std::string name_;
  void* handle_ = nullptr;
};

#define ANGELSLIM_BIND(lib, field, fn) (lib).bind((field), ANGELSLIM_SYMBOL_NAME(fn))

CublasApi load_cublas() {
  const Library lib("libcublas.so." + std::to_string(CUBLAS_VER_MAJOR), "cuBLAS, needed by --device cuda");
  CublasApi a{};
  ANGELSLIM_BIND(lib, a.create, cublasCreate);
  ANGELSLIM_BIND(lib, a.destroy, cublasDestroy);
  ANGELSLIM_BIND(lib, a.set_stream, cublasSetStream);
  ANGELSLIM_BIND(lib, a.set_math_mode, cublasSetMathMode);
  ANGELSLIM_BIND(lib, a.set_workspace, cublasSetWorkspace);
  ANGELSLIM_BIND(lib, a.get_status_string, cublasGetStatusString);
  ANGELSLIM_BIND(lib, a.sgemm, cublasSgemm);
  ANGELSLIM_BIND(lib, a.sgemm_strided_batched, cublasSgemmStridedBatched);
  ANGELSLIM_BIND(lib, a.gemm_ex, cublasGemmEx);
  ANGELSLIM_BIND(lib, a.gemm_strided_batched_ex, cublasGemmStridedBatchedEx);
  ANGELSLIM_BIND(lib, a.ssyrk, cublasSsyrk);
  return a;
}

CusolverApi load_cusolver() {
  const Library lib("libcusolver.so." + std::to_string(CUSOLVER_VER_MAJOR), "cuSOLVER, needed by the GPU GPTQ solver");
  CusolverApi a{};
  ANGELSLIM_BIND(lib, a.create, cusolverDnCreate);
  ANGELSLIM_BIND(lib, a.destroy, cusolverDnDestroy);
  ANGELSLIM_BIND(lib, a.set_stream, cusolverDnSetStream);
  ANGELSLIM_BIND(lib, a.dpotrf_buffer_size, cusolverDnDpotrf_bufferSize);
  ANGELSLIM_BIND(lib, a.dpotrf, cusolverDnDpotrf);
  ANGELSLIM_BIND(lib, a.xtrtri_buffer_size, cusolverDnXtrtri_bufferSize);
  ANGELSLIM_BIND(lib, a.xtrtri, cusolverDnXtrtri);
  return a;
}

// Loads once; a failed load throws and is retried by the next call.
template <class Api, Api (*Load)()>
const Api& loaded() {
  static std::mutex mu;
  static Api api{};
  static std::atomic<bool> ready{false};
  if (ready.load(std::memory_order_acquire)) return api;
  std::lock_guard<std::mutex> lock(mu);
  if (!ready.load(std::memory_order_relaxed)) {
    api = Load();
    ready.store(true, std::memory_order_release);
  }
  return api;
}

}  // namespace

const CublasApi& cublas() { return loaded<CublasApi, load_cublas>(); }
const CusolverApi& cusolver() { return loaded<CusolverApi, load_cusolver>(); }

}  // namespace angelslim::cuda
