// Elementwise kernels: broadcasting binary ops, unary ops, GELU, Clip, Where, Cast, scaling.
// Op codes are defined by `runtime/src/cuda/ops/codes.rs`; keep both in sync.

__device__ float ts_binary_f32(int op, float a, float b) {
    switch (op) {
        case 0: return a + b;
        case 1: return a - b;
        case 2: return a * b;
        case 3: return a / b;
        case 4: return powf(a, b);
        case 5: return fmaxf(a, b);
        case 6: return fminf(a, b);
        case 7: return fmodf(a, b);
        case 8: {
            float r = fmodf(a, b);
            if (r != 0.0f && ((r < 0.0f) != (b < 0.0f))) r += b;
            return r;
        }
        default: return 0.0f;
    }
}

__device__ long long ts_binary_i64(int op, long long a, long long b) {
    switch (op) {
        case 0: return a + b;
        case 1: return a - b;
        case 2: return a * b;
        case 3: return b == 0 ? 0 : a / b;
        case 4: {
            if (b < 0) return a == 1 ? 1 : (a == -1 ? ((b & 1) ? -1 : 1) : 0);
            long long r = 1;
            for (long long k = 0; k < b; ++k) r *= a;
            return r;
        }
        case 5: return a > b ? a : b;
        case 6: return a < b ? a : b;
        case 7: return b == 0 ? 0 : a % b;
        case 8: {
            if (b == 0) return 0;
            long long r = a % b;
            if (r != 0 && ((r < 0) != (b < 0))) r += b;
            return r;
        }
        default: return 0;
    }
}

// Comparison codes: 0 ==, 1 <, 2 <=, 3 >, 4 >=.
__device__ __forceinline__ unsigned char ts_compare(int op, double a, double b) {
    switch (op) {
        case 0: return a == b;
        case 1: return a < b;
        case 2: return a <= b;
        case 3: return a > b;
        case 4: return a >= b;
        default: return 0;
    }
}

extern "C" __global__ void binary_f32(int op, BcastMeta m, const float* a, const float* b,
                                      float* out) {
    TS_FOR_EACH(i, m.n) {
        float x = a[ts_offset(i, m.ndim, m.shape, m.stride[0])];
        float y = b[ts_offset(i, m.ndim, m.shape, m.stride[1])];
        out[i] = ts_binary_f32(op, x, y);
    }
}

extern "C" __global__ void binary_i64(int op, BcastMeta m, const long long* a,
                                      const long long* b, long long* out) {
    TS_FOR_EACH(i, m.n) {
        long long x = a[ts_offset(i, m.ndim, m.shape, m.stride[0])];
        long long y = b[ts_offset(i, m.ndim, m.shape, m.stride[1])];
        out[i] = ts_binary_i64(op, x, y);
    }
}

extern "C" __global__ void compare_f32(int op, BcastMeta m, const float* a, const float* b,
                                       unsigned char* out) {
    TS_FOR_EACH(i, m.n) {
        float x = a[ts_offset(i, m.ndim, m.shape, m.stride[0])];
        float y = b[ts_offset(i, m.ndim, m.shape, m.stride[1])];
        out[i] = ts_compare(op, (double)x, (double)y);
    }
}

extern "C" __global__ void compare_i64(int op, BcastMeta m, const long long* a,
                                       const long long* b, unsigned char* out) {
    TS_FOR_EACH(i, m.n) {
        long long x = a[ts_offset(i, m.ndim, m.shape, m.stride[0])];
        long long y = b[ts_offset(i, m.ndim, m.shape, m.stride[1])];
        unsigned char r;
        switch (op) {
            case 0: r = x == y; break;
            case 1: r = x < y; break;
            case 2: r = x <= y; break;
            case 3: r = x > y; break;
            default: r = x >= y; break;
        }
        out[i] = r;
    }
}

// Logical codes on bools: 0 and, 1 or, 2 xor, 3 equal.
extern "C" __global__ void logical_u8(int op, BcastMeta m, const unsigned char* a,
                                      const unsigned char* b, unsigned char* out) {
    TS_FOR_EACH(i, m.n) {
        unsigned char x = a[ts_offset(i, m.ndim, m.shape, m.stride[0])] != 0;
        unsigned char y = b[ts_offset(i, m.ndim, m.shape, m.stride[1])] != 0;
        unsigned char r;
        switch (op) {
            case 0: r = x & y; break;
            case 1: r = x | y; break;
            case 2: r = x ^ y; break;
            default: r = x == y; break;
        }
        out[i] = r;
    }
}

__device__ float ts_unary_f32(int op, float x) {
    switch (op) {
        case 0: return x;
        case 1: return -x;
        case 2: return fabsf(x);
        case 3: return sqrtf(x);
        case 4: return 1.0f / x;
        case 5: return expf(x);
        case 6: return logf(x);
        case 7: return erff(x);
        case 8: return tanhf(x);
        case 9: return 1.0f / (1.0f + expf(-x));
        case 10: return x > 0.0f ? x : 0.0f;
        case 11: return floorf(x);
        case 12: return ceilf(x);
        case 13: return rintf(x);
        case 14: return sinf(x);
        case 15: return cosf(x);
        case 16: return x > 0.0f ? 1.0f : (x < 0.0f ? -1.0f : x);
        case 17: return x > 20.0f ? x : log1pf(expf(x));
        case 18: return x / (1.0f + expf(-x));
        case 19: return tanf(x);
        case 20: return asinf(x);
        case 21: return acosf(x);
        case 22: return atanf(x);
        case 23: return sinhf(x);
        case 24: return coshf(x);
        case 25: return asinhf(x);
        case 26: return acoshf(x);
        case 27: return atanhf(x);
        default: return x;
    }
}

extern "C" __global__ void unary_f32(int op, long long n, const float* x, float* out) {
    TS_FOR_EACH(i, n) { out[i] = ts_unary_f32(op, x[i]); }
}

// Integer unary codes: 0 identity, 1 neg, 2 abs, 16 sign (same codes as the float ops).
extern "C" __global__ void unary_i64(int op, long long n, const long long* x, long long* out) {
    TS_FOR_EACH(i, n) {
        long long v = x[i];
        long long r;
        switch (op) {
            case 1: r = -v; break;
            case 2: r = v < 0 ? -v : v; break;
            case 16: r = (v > 0) - (v < 0); break;
            default: r = v; break;
        }
        out[i] = r;
    }
}

extern "C" __global__ void not_u8(long long n, const unsigned char* x, unsigned char* out) {
    TS_FOR_EACH(i, n) { out[i] = x[i] == 0; }
}

extern "C" __global__ void isnan_f32(long long n, const float* x, unsigned char* out) {
    TS_FOR_EACH(i, n) { out[i] = x[i] != x[i]; }
}

extern "C" __global__ void gelu_f32(int tanh_approx, long long n, const float* x, float* out) {
    TS_FOR_EACH(i, n) {
        float v = x[i];
        if (tanh_approx) {
            float u = 0.7978845608028654f * (v + 0.044715f * v * v * v);
            out[i] = 0.5f * v * (1.0f + tanhf(u));
        } else {
            out[i] = 0.5f * v * (1.0f + erff(v * 0.7071067811865476f));
        }
    }
}

extern "C" __global__ void clip_f32(long long n, float lo, float hi, const float* x,
                                    float* out) {
    TS_FOR_EACH(i, n) {
        float v = x[i];
        v = v < lo ? lo : v;
        out[i] = v > hi ? hi : v;
    }
}

extern "C" __global__ void scale_f32(long long n, float s, const float* x, float* out) {
    TS_FOR_EACH(i, n) { out[i] = x[i] * s; }
}

// out = a + b elementwise (same shape): the virtual-rank all-reduce accumulates with it.
extern "C" __global__ void add_f32(long long n, const float* a, const float* b, float* out) {
    TS_FOR_EACH(i, n) { out[i] = a[i] + b[i]; }
}

extern "C" __global__ void add_i64(long long n, const long long* a, const long long* b,
                                   long long* out) {
    TS_FOR_EACH(i, n) { out[i] = a[i] + b[i]; }
}

#define TS_WHERE(NAME, T)                                                            \
    extern "C" __global__ void NAME(BcastMeta m, const unsigned char* c, const T* x, \
                                    const T* y, T* out) {                            \
        TS_FOR_EACH(i, m.n) {                                                        \
            unsigned char k = c[ts_offset(i, m.ndim, m.shape, m.stride[0])];         \
            out[i] = k ? x[ts_offset(i, m.ndim, m.shape, m.stride[1])]               \
                       : y[ts_offset(i, m.ndim, m.shape, m.stride[2])];              \
        }                                                                            \
    }
TS_WHERE(where_b1, unsigned char)
TS_WHERE(where_b4, unsigned int)
TS_WHERE(where_b8, unsigned long long)

#define TS_CAST(NAME, FROM, TO, EXPR)                                         \
    extern "C" __global__ void NAME(long long n, const FROM* x, TO* out) {    \
        TS_FOR_EACH(i, n) {                                                   \
            FROM v = x[i];                                                    \
            out[i] = (EXPR);                                                  \
        }                                                                     \
    }
TS_CAST(cast_f32_i64, float, long long, (v != v) ? 0LL : (long long)v)
TS_CAST(cast_i64_f32, long long, float, (float)v)
TS_CAST(cast_f32_u8, float, unsigned char, v != 0.0f)
TS_CAST(cast_u8_f32, unsigned char, float, v ? 1.0f : 0.0f)
TS_CAST(cast_i64_u8, long long, unsigned char, v != 0)
TS_CAST(cast_u8_i64, unsigned char, long long, v ? 1LL : 0LL)

// Wraps i64 values to a narrower integer type: bits 8/16/32, is_unsigned 0/1.
extern "C" __global__ void wrap_i64(int bits, int is_unsigned, long long n,
                                    const long long* x, long long* out) {
    TS_FOR_EACH(i, n) {
        long long v = x[i];
        long long r;
        if (bits == 8) r = is_unsigned ? (long long)(unsigned char)v : (long long)(signed char)v;
        else if (bits == 16) r = is_unsigned ? (long long)(unsigned short)v : (long long)(short)v;
        else if (bits == 32) r = is_unsigned ? (long long)(unsigned int)v : (long long)(int)v;
        else r = v;
        out[i] = r;
    }
}

// Rounds f32 values to f16 (mode 0) or bf16 (mode 1) precision, round-to-nearest-even,
// keeping f32 storage (floats are stored as f32 on the device, as on the host).
__device__ float ts_round_f16(float f) {
    unsigned int x = __float_as_uint(f);
    unsigned int sign = x & 0x80000000u;
    unsigned int absx = x & 0x7fffffffu;
    if (absx >= 0x7f800000u) return f;                       // inf / nan
    if (absx >= 0x477ff000u) return __uint_as_float(sign | 0x7f800000u);  // overflow
    if (absx < 0x33000000u) return __uint_as_float(sign);   // underflow to zero
    int e = (int)(absx >> 23) - 127;
    // Number of mantissa bits to drop: 13 for normal halves, more for subnormals.
    int drop = e < -14 ? 13 + (-14 - e) : 13;
    unsigned int mant = (absx & 0x7fffffu) | 0x800000u;
    unsigned int half_ulp = 1u << (drop - 1);
    unsigned int mask = (1u << drop) - 1u;
    unsigned int rem = mant & mask;
    mant &= ~mask;
    if (rem > half_ulp || (rem == half_ulp && (mant & (1u << drop)))) mant += 1u << drop;
    // mant now holds the rounded significand with the implicit bit; rebuild the float.
    float r = (float)mant * __uint_as_float((unsigned int)(e - 23 + 127) << 23);
    return sign ? -r : r;
}

__device__ float ts_round_bf16(float f) {
    unsigned int x = __float_as_uint(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return f;  // nan
    unsigned int lsb = (x >> 16) & 1u;
    x += 0x7fffu + lsb;
    return __uint_as_float(x & 0xffff0000u);
}

extern "C" __global__ void round_f32(int mode, long long n, const float* x, float* out) {
    TS_FOR_EACH(i, n) { out[i] = mode == 0 ? ts_round_f16(x[i]) : ts_round_bf16(x[i]); }
}
