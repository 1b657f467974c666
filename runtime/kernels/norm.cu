// Row-wise normalisations: Softmax / LogSoftmax over one axis, LayerNorm and RMSNorm over
// trailing axes. One block per row (grid-stride over rows), blockDim.x a power of two.

// Softmax over the middle axis of [outer, len, inner]; rows = outer * inner.
extern "C" __global__ void softmax_f32(int log_mode, long long outer, long long len,
                                       long long inner, const float* x, float* out) {
    __shared__ float sh[1024];
    long long rows = outer * inner;
    for (long long row = blockIdx.x; row < rows; row += gridDim.x) {
        long long o = row / inner;
        long long in = row - o * inner;
        long long base = o * len * inner + in;
        float mx = -3.402823466e38f;
        for (long long l = threadIdx.x; l < len; l += blockDim.x) {
            float v = x[base + l * inner];
            mx = v > mx ? v : mx;
        }
        mx = ts_block_reduce(TS_RED_MAX, mx, sh);
        float s = 0.0f;
        for (long long l = threadIdx.x; l < len; l += blockDim.x) {
            s += expf(x[base + l * inner] - mx);
        }
        s = ts_block_reduce(TS_RED_SUM, s, sh);
        float logs = logf(s);
        for (long long l = threadIdx.x; l < len; l += blockDim.x) {
            float d = x[base + l * inner] - mx;
            out[base + l * inner] = log_mode ? d - logs : expf(d) / s;
        }
    }
}

// LayerNorm over rows of `len` elements: (x - mean) / sqrt(var + eps) * scale (+ bias).
// `bias` is read only when has_bias != 0 (pass any valid buffer otherwise).
extern "C" __global__ void layernorm_f32(long long rows, long long len, float eps,
                                         const float* x, const float* scale,
                                         const float* bias, int has_bias, float* out) {
    __shared__ float sh[1024];
    for (long long row = blockIdx.x; row < rows; row += gridDim.x) {
        const float* xr = x + row * len;
        float* orow = out + row * len;
        float s = 0.0f;
        for (long long l = threadIdx.x; l < len; l += blockDim.x) s += xr[l];
        float mean = ts_block_reduce(TS_RED_SUM, s, sh) / (float)len;
        float q = 0.0f;
        for (long long l = threadIdx.x; l < len; l += blockDim.x) {
            float d = xr[l] - mean;
            q += d * d;
        }
        float var = ts_block_reduce(TS_RED_SUM, q, sh) / (float)len;
        float inv = 1.0f / sqrtf(var + eps);
        for (long long l = threadIdx.x; l < len; l += blockDim.x) {
            float v = (xr[l] - mean) * inv * scale[l];
            orow[l] = has_bias ? v + bias[l] : v;
        }
    }
}

// RMSNorm over rows of `len` elements: x / sqrt(mean(x^2) + eps) * scale.
extern "C" __global__ void rmsnorm_f32(long long rows, long long len, float eps,
                                       const float* x, const float* scale, float* out) {
    __shared__ float sh[1024];
    for (long long row = blockIdx.x; row < rows; row += gridDim.x) {
        const float* xr = x + row * len;
        float* orow = out + row * len;
        float q = 0.0f;
        for (long long l = threadIdx.x; l < len; l += blockDim.x) q += xr[l] * xr[l];
        float ms = ts_block_reduce(TS_RED_SUM, q, sh) / (float)len;
        float inv = 1.0f / sqrtf(ms + eps);
        for (long long l = threadIdx.x; l < len; l += blockDim.x) orow[l] = xr[l] * inv * scale[l];
    }
}
