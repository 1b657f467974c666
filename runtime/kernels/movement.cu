// Data movement by element size (1, 4 or 8 bytes), whatever the element type:
// generic strided copy (Transpose, Slice, Expand, Concat, Split, layout changes),
// Gather (plain and vocabulary-sharded) and Trilu.

#define TS_STRIDED_COPY(NAME, T)                                                  \
    extern "C" __global__ void NAME(StridedMeta m, const T* in, T* out) {         \
        TS_FOR_EACH(i, m.n) {                                                     \
            long long src = m.in_offset + ts_offset(i, m.ndim, m.shape, m.in_stride); \
            long long dst = m.out_offset + ts_offset(i, m.ndim, m.shape, m.out_stride); \
            out[dst] = in[src];                                                   \
        }                                                                         \
    }
TS_STRIDED_COPY(strided_copy_b1, unsigned char)
TS_STRIDED_COPY(strided_copy_b4, unsigned int)
TS_STRIDED_COPY(strided_copy_b8, unsigned long long)

// out[o, j, k] = data[o, idx[j] (wrapped by wrap_len if negative) - row_offset, k], or 0
// when that row is outside [0, rows_held) (another shard's row). data is
// [outer, rows_held, inner]. An index outside [-wrap_len, wrap_len) is an error, as on the
// CPU: it sets *bad (every writer stores 1) and gives 0; the host checks the flag after
// the kernel.
#define TS_GATHER(NAME, T)                                                              \
    extern "C" __global__ void NAME(long long outer, long long rows_held, long long inner, \
                                    long long nidx, long long wrap_len,                 \
                                    long long row_offset, const long long* idx,         \
                                    const T* data, unsigned int* bad, T* out) {         \
        TS_FOR_EACH(i, outer * nidx * inner) {                                          \
            long long k = i % inner;                                                    \
            long long j = (i / inner) % nidx;                                           \
            long long o = i / (inner * nidx);                                           \
            long long r = idx[j];                                                       \
            if (r < -wrap_len || r >= wrap_len) {                                       \
                *bad = 1u;                                                              \
                out[i] = (T)0;                                                          \
            } else {                                                                    \
                if (r < 0) r += wrap_len;                                               \
                r -= row_offset;                                                        \
                out[i] = (r < 0 || r >= rows_held)                                      \
                             ? (T)0                                                     \
                             : data[(o * rows_held + r) * inner + k];                   \
            }                                                                           \
        }                                                                               \
    }
TS_GATHER(gather_b1, unsigned char)
TS_GATHER(gather_b4, unsigned int)
TS_GATHER(gather_b8, unsigned long long)

// Keeps the upper (upper != 0: col - row >= k) or lower (col - row <= k) triangle of each
// rows x cols matrix, zeroing the rest.
#define TS_TRILU(NAME, T)                                                              \
    extern "C" __global__ void NAME(long long n, long long rows, long long cols,       \
                                    long long k, int upper, const T* in, T* out) {     \
        TS_FOR_EACH(i, n) {                                                            \
            long long c = i % cols;                                                    \
            long long r = (i / cols) % rows;                                           \
            int keep = upper ? (c - r >= k) : (c - r <= k);                            \
            out[i] = keep ? in[i] : (T)0;                                              \
        }                                                                              \
    }
TS_TRILU(trilu_b1, unsigned char)
TS_TRILU(trilu_b4, unsigned int)
TS_TRILU(trilu_b8, unsigned long long)
