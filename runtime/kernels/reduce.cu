// Reductions over the trailing `len` elements of each row (the Rust side permutes the
// reduced axes to the back first), and CumSum along the middle axis of [outer, len, inner].
// Kind codes: 0 sum, 1 mean, 2 max, 3 min, 4 prod, 5 sum of squares, 6 L2.

extern "C" __global__ void reduce_rows_f32(int kind, long long rows, long long len,
                                           const float* x, float* out) {
    __shared__ float sh[1024];
    int how = kind == 2 ? TS_RED_MAX : (kind == 3 ? TS_RED_MIN : (kind == 4 ? TS_RED_PROD : TS_RED_SUM));
    float init = how == TS_RED_MAX ? -3.402823466e38f
               : (how == TS_RED_MIN ? 3.402823466e38f : (how == TS_RED_PROD ? 1.0f : 0.0f));
    for (long long row = blockIdx.x; row < rows; row += gridDim.x) {
        const float* xr = x + row * len;
        float acc = init;
        for (long long l = threadIdx.x; l < len; l += blockDim.x) {
            float v = xr[l];
            if (kind == 5 || kind == 6) v = v * v;
            acc = ts_combine(how, acc, v);
        }
        acc = ts_block_reduce(how, acc, sh);
        if (threadIdx.x == 0) {
            if (kind == 1) acc = acc / (float)len;
            if (kind == 6) acc = sqrtf(acc);
            out[row] = acc;
        }
    }
}

// One thread per (outer, inner) line; sequential scan along `len`.
extern "C" __global__ void cumsum_f32(long long outer, long long len, long long inner,
                                      int exclusive, int reverse, const float* x, float* out) {
    TS_FOR_EACH(line, outer * inner) {
        long long o = line / inner;
        long long in = line - o * inner;
        long long base = o * len * inner + in;
        float acc = 0.0f;
        for (long long s = 0; s < len; ++s) {
            long long l = reverse ? len - 1 - s : s;
            float v = x[base + l * inner];
            if (exclusive) {
                out[base + l * inner] = acc;
                acc += v;
            } else {
                acc += v;
                out[base + l * inner] = acc;
            }
        }
    }
}
