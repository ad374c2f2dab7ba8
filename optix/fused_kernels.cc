// Single-pass optimizer steps for XLA's CPU backend, called through the XLA FFI
// (see optix/fused.py; setup.py builds this file when optix is installed).
//
// XLA's CPU backend emits one kernel per output array, so an AdamW step is three
// loops (m, v, then p), each streaming the gradient and the arrays it needs:
// ten arrays' worth of memory traffic where reading p, g, m, v once and writing
// p, m, v once (seven) suffices. Each handler here does the whole step in one
// loop over every leaf it is given, in place (the outputs alias the inputs), on
// XLA's intra-op thread pool.
//
// The arithmetic is the XLA path's, operation for operation, so results are bit
// for bit those of the unfused chain: XLA multiplies by the reciprocal of a
// scalar divisor (the bias corrections arrive as reciprocals) and its LLVM
// backend, which compiles for the CPU it runs on, contracts `a * b + c` into a
// fused multiply-add where that CPU has one. The Fma<true> calls below sit
// exactly where it does; Fma<false> is `a * b + c`, as XLA computes it on a CPU
// without FMA. Built with -ffp-contract=off so that the compiler adds no
// contraction of its own.
//
// The library is built portably (no -march=native): each loop is compiled for
// the architecture's baseline and, on x86-64, once more for AVX2 + FMA (x86-64-v3),
// and the variant is picked at call time from the CPU's features (RunLoop):
//   x86-64 with AVX2 and FMA: the AVX2 build, with fused multiply-adds;
//   x86-64 with FMA but no AVX2: the baseline build with fused multiply-adds
//     (std::fma, which the C library runs on the FMA unit);
//   x86-64 without FMA: the baseline build, no fused multiply-adds;
//   aarch64: the baseline (NEON) build, with fused multiply-adds, which every
//     aarch64 CPU has and XLA always uses there;
//   elsewhere: fused multiply-adds where the compiler says they are fast.

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

#if defined(__GNUC__) || defined(__clang__)
#define OPTIX_INLINE inline __attribute__((always_inline))
#else
#define OPTIX_INLINE inline
#endif

// a * b + c, fused (one rounding) when kFma.
template <bool kFma>
OPTIX_INLINE float Fma(float a, float b, float c) {
  if constexpr (kFma) {
    return std::fma(a, b, c);
  } else {
    return a * b + c;
  }
}

inline float Sign(float x) { return x > 0.0f ? 1.0f : (x < 0.0f ? -1.0f : x); }

// The loop variants (see the top of the file). A loop is a struct whose
// template<bool kFma> Run(lo, hi) is always inlined, so each variant below is
// compiled whole for its own target.
template <typename Loop>
void RunBase(const Loop& loop, int64_t lo, int64_t hi) { loop.template Run<false>(lo, hi); }
template <typename Loop>
void RunBaseFma(const Loop& loop, int64_t lo, int64_t hi) { loop.template Run<true>(lo, hi); }

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define OPTIX_X86_DISPATCH 1
template <typename Loop>
__attribute__((target("avx2,fma"))) void RunAvx2Fma(const Loop& loop, int64_t lo, int64_t hi) {
  loop.template Run<true>(lo, hi);
}
#endif

enum class Variant { kBase, kBaseFma, kAvx2Fma };

// This CPU's variant, detected once.
Variant HostVariant() {
#ifdef OPTIX_X86_DISPATCH
  static const Variant variant = [] {
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("fma")) return Variant::kBase;
    return __builtin_cpu_supports("avx2") ? Variant::kAvx2Fma : Variant::kBaseFma;
  }();
  return variant;
#elif defined(__aarch64__) || defined(__ARM_FEATURE_FMA) || defined(__FP_FAST_FMAF)
  return Variant::kBaseFma;
#else
  return Variant::kBase;
#endif
}

template <typename Loop>
void RunLoop(const Loop& loop, int64_t lo, int64_t hi) {
  switch (HostVariant()) {
#ifdef OPTIX_X86_DISPATCH
    case Variant::kAvx2Fma:
      return RunAvx2Fma(loop, lo, hi);
#endif
    case Variant::kBaseFma:
      return RunBaseFma(loop, lo, hi);
    default:
      return RunBase(loop, lo, hi);
  }
}

// The leaves of one call: leaf k has n[k] elements; arrays[j][k] is its j-th
// array (inputs first, then outputs).
struct Leaves {
  std::vector<int64_t> n, start;  // sizes and prefix sums
  std::vector<std::vector<float*>> arrays;
  int64_t total = 0;
};

// Runs body(leaf, lo, hi) over every element of every leaf, in contiguous
// chunks of the concatenated index space. Chunks are claimed from a shared
// counter by the calling thread and by tasks put on XLA's thread pool, so the
// caller never waits on a task that has no thread to run it (another custom
// call may hold the pool's other threads): whatever is left, it runs itself.
// A thread gets at least 2^18 elements (below that the handoff costs more than
// it saves), and each takes chunks of it one at a time (up to 8 a thread, of at
// least 2^16 elements), so a thread that starts late or is preempted (on a
// machine with as many cores as pool threads, by the Python thread) takes
// fewer chunks instead of keeping the others waiting.
template <typename Body>
void ParallelFor(ffi::ThreadPool& pool, const Leaves& leaves, Body body) {
  constexpr int64_t kMinPerThread = 1 << 18, kMinPerChunk = 1 << 16, kChunksPerThread = 8;
  const int64_t threads = std::clamp<int64_t>(leaves.total / kMinPerThread, 1,
                                              std::max<int64_t>(1, pool.num_threads()));
  const int64_t chunks =
      threads == 1 ? 1
                   : std::clamp<int64_t>(leaves.total / kMinPerChunk, threads,
                                         kChunksPerThread * threads);
  auto run = [&](int64_t lo, int64_t hi) {
    auto k = std::upper_bound(leaves.start.begin(), leaves.start.end(), lo) -
             leaves.start.begin() - 1;
    for (; lo < hi; ++k) {
      const int64_t end = std::min(hi, leaves.start[k] + leaves.n[k]);
      if (end > lo) body(k, lo - leaves.start[k], end - leaves.start[k]);
      lo = std::max(lo, end);
    }
  };
  if (chunks == 1) {
    run(0, leaves.total);
    return;
  }
  const int64_t size = ((leaves.total + chunks - 1) / chunks + 15) & ~int64_t{15};
  struct Progress {
    std::atomic<int64_t> next{0}, done{0};
  };
  auto progress = std::make_shared<Progress>();
  // Claims and runs chunks until none is left. `run` (the caller's frame) is
  // touched only while a claimed chunk is not done, so the caller is waiting;
  // a task that starts late finds nothing left and touches only its captures.
  auto drain = [progress, chunks, size, total = leaves.total](const decltype(run)* run) {
    for (int64_t c; (c = progress->next.fetch_add(1)) < chunks;) {
      (*run)(std::min(total, c * size), std::min(total, (c + 1) * size));
      progress->done.fetch_add(1, std::memory_order_release);
    }
  };
  for (int64_t t = 1; t < std::min(threads, chunks); ++t) pool.Schedule([drain, &run] { drain(&run); });
  drain(&run);
  while (progress->done.load(std::memory_order_acquire) < chunks) std::this_thread::yield();
}

// Finds every leaf's arrays. Leaf k has sizes[k] elements; its array in role j
// (inputs: p, g, state...) starts at element where[2 (k roles + j) + 1] of
// operand where[2 (k roles + j)], so several leaves may share one operand (a
// packed state buffer) at their offsets. Every role but the gradient (j == 1) is
// written to the result that its operand aliases, result_of[operand], at the same
// offset. Every range is checked against its buffer.
ffi::ErrorOr<Leaves> Decode(ffi::RemainingArgs args, ffi::RemainingRets rets,
                            ffi::Span<const int64_t> sizes, ffi::Span<const int64_t> where,
                            ffi::Span<const int64_t> result_of, size_t roles) {
  auto fail = [](const char* what) {
    return ffi::Unexpected(ffi::Error::InvalidArgument(std::string("optix fused step: ") + what));
  };
  const size_t count = sizes.size();
  if (where.size() != 2 * roles * count || result_of.size() != args.size())
    return fail("wrong number of operand locations");
  Leaves leaves;
  leaves.arrays.assign(2 * roles - 1, std::vector<float*>(count));
  for (size_t k = 0; k < count; ++k) {
    const int64_t n = sizes[k];
    for (size_t j = 0; j < roles; ++j) {
      const int64_t op = where[2 * (k * roles + j)], at = where[2 * (k * roles + j) + 1];
      if (op < 0 || op >= static_cast<int64_t>(args.size())) return fail("operand out of range");
      auto in = args.get<ffi::Buffer<ffi::F32>>(op);
      if (in.has_error()) return ffi::Unexpected(in.error());
      if (n < 0 || at < 0 || at + n > static_cast<int64_t>(in->element_count()))
        return fail("leaf outside its operand");
      leaves.arrays[j][k] = in->typed_data() + at;
      if (j == 1) continue;  // the gradient is read only
      const int64_t res = result_of[op];
      if (res < 0 || res >= static_cast<int64_t>(rets.size())) return fail("no result for operand");
      auto out = rets.get<ffi::Buffer<ffi::F32>>(res);
      if (out.has_error()) return ffi::Unexpected(out.error());
      if ((*out)->element_count() != in->element_count()) return fail("result size differs");
      leaves.arrays[roles + j - (j > 1)][k] = (*out)->typed_data() + at;
    }
    leaves.start.push_back(leaves.total);
    leaves.n.push_back(n);
    leaves.total += n;
  }
  return leaves;
}

// Operands of every handler: scalars f32[S] (step-dependent values), decay
// f32[L, 2] (per leaf: weight decay, and 1 where the leaf decays), then the
// arrays that hold the leaves (see Decode); static hyperparameters are attributes.

// AdamW (Adam when no leaf decays):
//   m = (1-b1) g + b1 m;  v = (1-b2) g^2 + b2 v
//   u = m/(1-b1^t) / (sqrt(v/(1-b2^t) + eps_root) + eps) [+ wd p];  p = p - lr u
// scalars: 1/(1-b1^t), 1/(1-b2^t), -lr.
struct AdamLoop {
  const float *P, *G, *M, *V;
  float *PO, *MO, *VO;
  float b1, b2, c1, c2, eps, eps_root, inv_bc1, inv_bc2, neg_lr, wd;
  bool decays;

  template <bool kFma, bool kDecay>
  OPTIX_INLINE void Step(int64_t lo, int64_t hi) const {
#pragma omp simd
    for (int64_t i = lo; i < hi; ++i) {
      const float g = G[i], p = P[i];
      const float m = Fma<kFma>(g, c1, b1 * M[i]);
      const float v = Fma<kFma>(g * g, c2, b2 * V[i]);
      float u = (m * inv_bc1) / (std::sqrt(Fma<kFma>(v, inv_bc2, eps_root)) + eps);
      if constexpr (kDecay) u = Fma<kFma>(p, wd, u);
      PO[i] = Fma<kFma>(u, neg_lr, p);
      MO[i] = m;
      VO[i] = v;
    }
  }
  template <bool kFma>
  OPTIX_INLINE void Run(int64_t lo, int64_t hi) const {
    decays ? Step<kFma, true>(lo, hi) : Step<kFma, false>(lo, hi);
  }
};

ffi::Error Adam(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> scalars,
                ffi::Buffer<ffi::F32> decay, ffi::RemainingArgs args, ffi::RemainingRets rets,
                ffi::Span<const int64_t> sizes, ffi::Span<const int64_t> where,
                ffi::Span<const int64_t> result_of, float b1, float b2, float c1, float c2,
                float eps, float eps_root) {
  auto leaves = Decode(args, rets, sizes, where, result_of, 4);
  if (leaves.has_error()) return leaves.error();
  const float* s = scalars.typed_data();
  const float inv_bc1 = s[0], inv_bc2 = s[1], neg_lr = s[2];
  const float* d = decay.typed_data();
  const auto& a = leaves->arrays;
  ParallelFor(pool, *leaves, [&](int64_t k, int64_t lo, int64_t hi) {
    RunLoop(AdamLoop{a[0][k], a[1][k], a[2][k], a[3][k], a[4][k], a[5][k], a[6][k], b1, b2, c1,
                     c2, eps, eps_root, inv_bc1, inv_bc2, neg_lr, d[2 * k], d[2 * k + 1] != 0.0f},
            lo, hi);
  });
  return ffi::Error::Success();
}

// Lion: u = sign((1-b1) g + b1 m) [+ wd p];  m = (1-b2) g + b2 m;  p = p - lr u.
// scalars: -lr.
struct LionLoop {
  const float *P, *G, *M;
  float *PO, *MO;
  float b1, b2, c1, c2, neg_lr, wd;
  bool decays;

  template <bool kFma, bool kDecay>
  OPTIX_INLINE void Step(int64_t lo, int64_t hi) const {
#pragma omp simd
    for (int64_t i = lo; i < hi; ++i) {
      const float g = G[i], p = P[i], m = M[i];
      float u = Sign(Fma<kFma>(g, c1, b1 * m));
      if constexpr (kDecay) u = Fma<kFma>(p, wd, u);
      PO[i] = Fma<kFma>(u, neg_lr, p);
      MO[i] = Fma<kFma>(g, c2, b2 * m);
    }
  }
  template <bool kFma>
  OPTIX_INLINE void Run(int64_t lo, int64_t hi) const {
    decays ? Step<kFma, true>(lo, hi) : Step<kFma, false>(lo, hi);
  }
};

ffi::Error Lion(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> scalars,
                ffi::Buffer<ffi::F32> decay, ffi::RemainingArgs args, ffi::RemainingRets rets,
                ffi::Span<const int64_t> sizes, ffi::Span<const int64_t> where,
                ffi::Span<const int64_t> result_of, float b1, float b2, float c1, float c2) {
  auto leaves = Decode(args, rets, sizes, where, result_of, 3);
  if (leaves.has_error()) return leaves.error();
  const float neg_lr = scalars.typed_data()[0];
  const float* d = decay.typed_data();
  const auto& a = leaves->arrays;
  ParallelFor(pool, *leaves, [&](int64_t k, int64_t lo, int64_t hi) {
    RunLoop(LionLoop{a[0][k], a[1][k], a[2][k], a[3][k], a[4][k], b1, b2, c1, c2, neg_lr,
                     d[2 * k], d[2 * k + 1] != 0.0f},
            lo, hi);
  });
  return ffi::Error::Success();
}

// SGD with momentum: t = g + mu t;  u = t (Nesterov: g + mu t);  p = p - lr u.
// scalars: -lr. (No weight decay in the chain: `decay` is ignored.)
struct MomentumLoop {
  const float *P, *G, *T;
  float *PO, *TO;
  float mu, neg_lr;
  bool nesterov;

  template <bool kFma, bool kLookAhead>
  OPTIX_INLINE void Step(int64_t lo, int64_t hi) const {
#pragma omp simd
    for (int64_t i = lo; i < hi; ++i) {
      const float g = G[i];
      const float t = Fma<kFma>(mu, T[i], g);
      float u = t;
      if constexpr (kLookAhead) u = Fma<kFma>(mu, t, g);
      PO[i] = Fma<kFma>(u, neg_lr, P[i]);
      TO[i] = t;
    }
  }
  template <bool kFma>
  OPTIX_INLINE void Run(int64_t lo, int64_t hi) const {
    nesterov ? Step<kFma, true>(lo, hi) : Step<kFma, false>(lo, hi);
  }
};

ffi::Error Momentum(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> scalars,
                    ffi::Buffer<ffi::F32> decay, ffi::RemainingArgs args,
                    ffi::RemainingRets rets, ffi::Span<const int64_t> sizes,
                    ffi::Span<const int64_t> where, ffi::Span<const int64_t> result_of,
                    float mu, bool nesterov) {
  auto leaves = Decode(args, rets, sizes, where, result_of, 3);
  if (leaves.has_error()) return leaves.error();
  const float neg_lr = scalars.typed_data()[0];
  const auto& a = leaves->arrays;
  ParallelFor(pool, *leaves, [&](int64_t k, int64_t lo, int64_t hi) {
    RunLoop(MomentumLoop{a[0][k], a[1][k], a[2][k], a[3][k], a[4][k], mu, neg_lr, nesterov}, lo,
            hi);
  });
  return ffi::Error::Success();
}

// Every handler: the thread pool, scalars, decay, the arrays in and out, and
// where each leaf lives in them (see Decode).
auto StepBinding() {
  return ffi::Ffi::Bind()
      .Ctx<ffi::ThreadPool>()
      .Arg<ffi::Buffer<ffi::F32>>()
      .Arg<ffi::Buffer<ffi::F32>>()
      .RemainingArgs()
      .RemainingRets()
      .Attr<ffi::Span<const int64_t>>("sizes")
      .Attr<ffi::Span<const int64_t>>("where")
      .Attr<ffi::Span<const int64_t>>("result_of");
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(optix_fused_adam, Adam,
                              StepBinding()
                                  .Attr<float>("b1")
                                  .Attr<float>("b2")
                                  .Attr<float>("c1")
                                  .Attr<float>("c2")
                                  .Attr<float>("eps")
                                  .Attr<float>("eps_root"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(optix_fused_lion, Lion,
                              StepBinding()
                                  .Attr<float>("b1")
                                  .Attr<float>("b2")
                                  .Attr<float>("c1")
                                  .Attr<float>("c2"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(optix_fused_momentum, Momentum,
                              StepBinding().Attr<float>("mu").Attr<bool>("nesterov"));
