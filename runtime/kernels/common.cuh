// Shared definitions prepended (by the Rust side, as text) to every Tessera kernel source
// before NVRTC compiles it. No system headers: NVRTC compiles these without include paths.
//
// The structs mirror `runtime/src/cuda/meta.rs` field for field (all 64-bit integers, so
// the C and Rust layouts agree without padding).

#define TS_MAX_DIMS 8

// A strided copy: out[out_offset + sum_d idx_d * out_stride[d]] =
//                  in[in_offset + sum_d idx_d * in_stride[d]] for every index of `shape`.
struct StridedMeta {
    long long ndim;
    long long n;
    long long shape[TS_MAX_DIMS];
    long long in_stride[TS_MAX_DIMS];
    long long out_stride[TS_MAX_DIMS];
    long long in_offset;
    long long out_offset;
};

// Broadcasting of up to three operands to a contiguous output of `shape`: operand k is read
// at sum_d idx_d * stride[k][d] (stride 0 on broadcast axes).
struct BcastMeta {
    long long ndim;
    long long n;
    long long shape[TS_MAX_DIMS];
    long long stride[3][TS_MAX_DIMS];
};

// Offset of linear (row-major) index `i` of `shape` under `stride`.
__device__ __forceinline__ long long ts_offset(long long i, long long ndim,
                                               const long long* shape,
                                               const long long* stride) {
    long long off = 0;
    for (long long d = ndim - 1; d >= 0; --d) {
        long long e = shape[d];
        long long q = i / e;
        off += (i - q * e) * stride[d];
        i = q;
    }
    return off;
}

// Grid-stride loop over [0, n).
#define TS_FOR_EACH(i, n)                                                     \
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;      \
         i < (n); i += (long long)blockDim.x * gridDim.x)

// Block-wide reductions over a power-of-two blockDim.x (<= 1024), result in every thread.
#define TS_RED_SUM 0
#define TS_RED_MAX 1
#define TS_RED_MIN 2
#define TS_RED_PROD 3

__device__ __forceinline__ float ts_combine(int how, float a, float b) {
    switch (how) {
        case TS_RED_MAX: return a > b ? a : b;
        case TS_RED_MIN: return a < b ? a : b;
        case TS_RED_PROD: return a * b;
        default: return a + b;
    }
}

__device__ float ts_block_reduce(int how, float v, float* sh) {
    unsigned t = threadIdx.x;
    sh[t] = v;
    __syncthreads();
    for (unsigned s = blockDim.x / 2; s > 0; s >>= 1) {
        if (t < s) sh[t] = ts_combine(how, sh[t], sh[t + s]);
        __syncthreads();
    }
    float r = sh[0];
    __syncthreads();
    return r;
}
