//! The fused attention's two products per head, `Q·Kᵀ` and `P·V`, on the unpacked GEMM's
//! register tiles (`gemm_unpacked.rs`), which read Q, P and V where they lie. The `gemm`
//! crate packs both operands and takes a thread-local workspace on every call: for CLIP's
//! 17 × 17 × 16 heads and for the blocks of 32 rows of a causal mask that costs more than
//! the arithmetic. Kᵀ is copied once per key-value head (a `[D, Sk]` row-major matrix, the
//! tiles' B). Measured from 16 to 512 queries and head sizes 16 to 128, the tiles are
//! faster or equal; above [`TILED_MAX_MACS`] per head (unmeasured) the crate serves.
use crate::gemm_unpacked::gemm_unpacked;
use crate::KResult;

/// Multiply-adds of one head's `Q·Kᵀ` (all rows, all keys) up to which the tiles serve
/// (512 queries × 512 keys × 128).
const TILED_MAX_MACS: usize = 1 << 25;

/// Whether a head of `sq` queries, `sk` keys and head size `d` runs its products on the
/// tiles: on CPUs with the tiles' instruction sets, up to [`TILED_MAX_MACS`].
pub(super) fn tiled(sq: usize, sk: usize, d: usize) -> bool {
    crate::lanes16::lanes_isa().is_some() && sq * sk * d <= TILED_MAX_MACS
}

/// `kt[e·sk + j] = k[base + j·rs + e] · c`: the head's keys transposed to `[d, sk]`, each
/// times the pre-product scale `c` (the unfused `Mul` of Kᵀ; 1 without one).
pub(super) fn transpose_keys(
    kt: &mut Vec<f32>,
    k: &[f32],
    (base, rs): (usize, usize),
    sk: usize,
    d: usize,
    c: f32,
) {
    kt.resize(d * sk, 0.0);
    for j in 0..sk {
        let row = &k[base + j * rs..base + j * rs + d];
        for (e, &x) in row.iter().enumerate() {
            kt[e * sk + j] = x * c;
        }
    }
}

/// `scores[i·keys + j] = Σ_e q[base + i·rs + e] · kt[e·sk + j]` for `i < rows`,
/// `j < keys`: a block of rows' scores against the first `keys` keys.
#[allow(clippy::too_many_arguments)]
pub(super) fn scores(
    rows: usize,
    keys: usize,
    d: usize,
    (q, base, rs): (&[f32], usize, usize),
    kt: &[f32],
    sk: usize,
    cols: &[u32],
    scores: &mut [f32],
) -> KResult<()> {
    gemm_unpacked(
        (rows, keys, d),
        &q[base..],
        rs,
        &cols[..d],
        kt,
        sk,
        scores,
        keys,
        false,
    )
}

/// `out[i·d + e] = Σ_j p[i·keys + j] · v[base + j·rs + e]` for `i < rows`, `e < d`: the
/// probabilities of a block of rows times the first `keys` values.
#[allow(clippy::too_many_arguments)]
pub(super) fn context(
    rows: usize,
    keys: usize,
    d: usize,
    p: &[f32],
    (v, base, rs): (&[f32], usize, usize),
    cols: &[u32],
    out: &mut [f32],
) -> KResult<()> {
    gemm_unpacked(
        (rows, d, keys),
        p,
        keys,
        &cols[..keys],
        &v[base..],
        rs,
        out,
        d,
        false,
    )
}
