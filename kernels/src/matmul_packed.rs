//! MatMul of a few rows by a weight packed once when the plan is loaded
//! ([`PackedMatMulWeight`]): `Y [rows, n] = X [rows, k] · W [k, n]`.
//!
//! With few rows the product streams the weight from memory once and does little else. Read
//! where it lies (`[k, n]` row-major), the `gemm` crate's kernel walks a block of columns
//! down all k rows, a row `n · 4` bytes after the last: a Linear `[768, 3072]` over 8 rows
//! took 760 µs (12 GB/s) where onnxruntime, whose weights are packed at session start, took
//! 480. Packed, the weight is laid out in the order the kernel reads it — per block of
//! [`KC`] rows of k, per panel of [`NR`] columns, the block's rows of the panel — so one
//! product reads it front to back.
//!
//! The tiles are the unpacked GEMM's (`gemm_unpacked.rs`: [`MR`] rows by a panel, AVX-512
//! or AVX2 sub-tiles); each output is the sum over each block of `KC` rows of k in order,
//! from zero, added to the sum of the blocks before it.
use super::gemm_unpacked::{KC, MR, NR};
use super::KResult;
use rayon::prelude::*;

/// Multiply-adds below which one thread does the whole product while the pool's other
/// threads sleep ([`crate::split_min`]).
const PARALLEL_MIN_MACS: usize = 1 << 21;

/// Rows of X up to which a product is served packed (a Linear layer over a few positions:
/// ConvNeXt's and Swin's last stages, a decoder's one new token per step).
pub const PACKED_MAX_ROWS: usize = 64;

/// A MatMul weight `[k, n]` laid out panel of columns by panel.
#[derive(Debug, Clone, PartialEq)]
pub struct PackedMatMulWeight {
    k: usize,
    n: usize,
    /// Per panel of [`NR`] columns (the last one narrower), its `k` rows (`k · cols`
    /// values): the weight's values, reordered. The product reads each panel's blocks of
    /// [`KC`] rows one after the other, so a weight streaming from memory is read in
    /// order (VGG's `[25088, 4096]` classifier over two rows, one thread: 24.0 ms read
    /// block by block across the panels, 13.8 ms panel by panel; the unpacked kernel
    /// 17.8, onnxruntime 18.7).
    data: Vec<f32>,
}

impl PackedMatMulWeight {
    /// Packs `w` (`[k, n]` row-major).
    pub fn pack(k: usize, n: usize, w: &[f32]) -> KResult<PackedMatMulWeight> {
        if w.len() != k * n {
            return Err(format!("a weight of {} values is not [{k}, {n}]", w.len()));
        }
        Ok(Self::packed_by(k, n, |l, cols, data| {
            data.extend_from_slice(&w[l * n..][cols]);
        }))
    }

    /// Packs the `[k, n]` weight whose transpose `wt` (`[n, k]` row-major: a `Gemm`'s B
    /// with `transB`) holds, without a transposed copy first.
    pub fn pack_transposed(k: usize, n: usize, wt: &[f32]) -> KResult<PackedMatMulWeight> {
        if wt.len() != k * n {
            return Err(format!("a weight of {} values is not [{n}, {k}]", wt.len()));
        }
        Ok(Self::packed_by(k, n, |l, cols, data| {
            data.extend(cols.map(|j| wt[j * k + l]));
        }))
    }

    /// The packed layout, panel by panel: `row(l, cols, data)` appends row `l` of the
    /// weight over the panel's columns `cols`.
    fn packed_by(
        k: usize,
        n: usize,
        mut row: impl FnMut(usize, std::ops::Range<usize>, &mut Vec<f32>),
    ) -> PackedMatMulWeight {
        let mut data = Vec::with_capacity(k * n);
        for c0 in (0..n).step_by(NR) {
            let cols = c0..c0 + NR.min(n - c0);
            for l in 0..k {
                row(l, cols.clone(), &mut data);
            }
        }
        PackedMatMulWeight { k, n, data }
    }

    /// The weight's shape, `[k, n]`.
    pub fn shape(&self) -> [usize; 2] {
        [self.k, self.n]
    }

    /// Bytes held (the weight's own: no padding).
    pub fn bytes(&self) -> usize {
        self.data.len() * std::mem::size_of::<f32>()
    }

    /// Rows `k0..k0 + kc` of the panel starting at column `c0`, `min(NR, n − c0)` wide.
    fn block(&self, k0: usize, c0: usize) -> &[f32] {
        let kc = KC.min(self.k - k0);
        let cols = NR.min(self.n - c0);
        &self.data[c0 * self.k + k0 * cols..][..kc * cols]
    }
}

/// Weight values (`k · n`) from which a product is served packed: smaller weights stay in
/// the caches, where the crate reads them as fast.
pub const PACKED_MIN_WEIGHTS: usize = 1 << 14;

/// True where the packed product serves `rows` rows by a `[k, n]` weight on this CPU
/// (x86-64 with AVX-512F, or AVX2 and FMA). One Linear with a bias, one thread, min of
/// 3 × 100 runs, against the `gemm` crate over the weight where it lies (onnxruntime in
/// brackets), µs: `[768, 3072]`
/// over 8 rows 757 → 485 (483), over 2 rows 370 → 275 (193); `[3072, 768]` over 8 rows
/// 597 → 496 (482); `[384, 1536]` over 32 rows 477 → 424 (410); `[192, 768]` over 64 rows
/// 210 → 209 (201). One row is a product by a vector, which the crate streams faster
/// (`[768, 3072]`: 178 against 272; the tiles of four rows compute three for nothing).
pub fn packed_matmul_suits(rows: usize, k: usize, n: usize) -> bool {
    (2..=PACKED_MAX_ROWS).contains(&rows)
        && k * n >= PACKED_MIN_WEIGHTS
        && super::lanes16::lanes_isa().is_some()
}

/// `x [rows, k] · w`, row-major `[rows, n]`.
pub(crate) fn matmul_packed(x: &[f32], rows: usize, w: &PackedMatMulWeight) -> KResult<Vec<f32>> {
    let (k, n) = (w.k, w.n);
    if x.len() != rows * k {
        return Err(format!("X of {} values is not [{rows}, {k}]", x.len()));
    }
    if super::lanes16::lanes_isa().is_none() {
        return Err("the packed MatMul needs AVX-512F, or AVX2 and FMA".to_string());
    }
    let mut out = vec![0f32; rows * n];
    if rows == 0 || n == 0 {
        return Ok(out);
    }
    let map: Vec<u32> = (0..k as u32).collect();
    let panels = n.div_ceil(NR);
    let dst = OutPtr(out.as_mut_ptr());
    let run = |p: usize| {
        for k0 in (0..k).step_by(KC) {
            for r0 in (0..rows).step_by(MR) {
                // SAFETY: panel p's columns of every row belong to this call alone (tasks
                // take distinct panels); the operands are in bounds (`tile`'s checks).
                unsafe { tile(x, &map, w, (k0, p, r0), rows, dst) };
            }
        }
    };
    if crate::pool_threads() > 1 && rows * k * n >= crate::split_min(PARALLEL_MIN_MACS) {
        (0..panels).into_par_iter().for_each(run);
    } else {
        (0..panels).for_each(run);
    }
    Ok(out)
}

/// The output's start, shared by the tasks that write its disjoint panels.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: the tasks holding copies write disjoint columns ([`matmul_packed`]).
unsafe impl Send for OutPtr {}
// SAFETY: as above.
unsafe impl Sync for OutPtr {}

/// Rows `r0..r0 + MR` (those below `rows`) of X by block `k0` of panel `p`, added into the
/// output (written, for the first block).
///
/// # Safety
/// `x` is `[rows, k]`, `out` the `[rows, n]` output, `map` the identity over `0..k`; the
/// caller holds panel p's columns of the output.
unsafe fn tile(
    x: &[f32],
    map: &[u32],
    w: &PackedMatMulWeight,
    (k0, p, r0): (usize, usize, usize),
    rows: usize,
    out: OutPtr,
) {
    #[cfg(target_arch = "x86_64")]
    {
        use super::gemm_unpacked::{tile_avx2, tile_fitted, Tile};
        use super::lanes16::{lanes_isa, LanesIsa};
        let (k, n) = (w.k, w.n);
        let kc = KC.min(k - k0);
        let rr = MR.min(rows - r0);
        let cols = NR.min(n - p * NR);
        let block = w.block(k0, p * NR);
        // SAFETY (pointers): rows r0..r0 + rr of X (the last repeated past rr) with the map's
        // columns k0..k0 + kc, below k; the block's kc rows of `cols`; the output's rows r0..r0
        // + rr, columns p·NR..p·NR + cols, below n.
        let t = Tile {
            k: kc,
            arows: std::array::from_fn(|r| x.as_ptr().add((r0 + r.min(rr - 1)) * k)),
            map: map.as_ptr().add(k0),
            rows: rr,
            b: block.as_ptr(),
            ldb: cols,
            c: out.0.add(r0 * n + p * NR),
            ldc: n,
            cols,
            load: k0 > 0,
            prefetch: true,
        };
        // SAFETY: the instruction set is present (checked by `matmul_packed`); the tile's
        // operands are in bounds (above) and 16·(NV − 1) < cols ≤ 16·NV ≤ NR.
        match (lanes_isa(), cols.div_ceil(16)) {
            (Some(LanesIsa::Avx2), _) => tile_avx2(&t),
            (_, 3) => tile_fitted::<3>(&t),
            (_, 2) => tile_fitted::<2>(&t),
            _ => tile_fitted::<1>(&t),
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (x, map, w, k0, p, r0, rows, out);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against a product summed in f64, over column tails, row counts past a tile and k past
    /// a block.
    #[test]
    fn packed_products_match_a_direct_loop() {
        if super::super::lanes16::lanes_isa().is_none() {
            eprintln!("skipped: no AVX-512F or AVX2 and FMA");
            return;
        }
        let cases = [
            (1, 5, 3),
            (8, 200, 50),
            (13, 130, 97),
            (3, 257, 48),
            (2, 140, 70),
            (12, 33, 16),
        ];
        for (rows, k, n) in cases {
            let x: Vec<f32> = (0..rows * k)
                .map(|i| ((i * 37) % 23) as f32 / 7.0 - 1.5)
                .collect();
            let w: Vec<f32> = (0..k * n)
                .map(|i| ((i * 53) % 29) as f32 / 9.0 - 1.5)
                .collect();
            let packed = PackedMatMulWeight::pack(k, n, &w).unwrap();
            let got = matmul_packed(&x, rows, &packed).unwrap();
            for i in 0..rows {
                for j in 0..n {
                    let want: f64 = (0..k)
                        .map(|l| x[i * k + l] as f64 * w[l * n + j] as f64)
                        .sum();
                    let g = got[i * n + j] as f64;
                    assert!(
                        (g - want).abs() <= 1e-4 * (1.0 + want.abs()),
                        "{rows}x{k}x{n} ({i}, {j})"
                    );
                }
            }
        }
        // The transposed weight packs to the same layout.
        let w: Vec<f32> = (0..7 * 50).map(|i| i as f32).collect();
        let wt: Vec<f32> = (0..50 * 7).map(|i| w[(i % 7) * 50 + i / 7]).collect();
        assert_eq!(
            PackedMatMulWeight::pack_transposed(7, 50, &wt),
            PackedMatMulWeight::pack(7, 50, &w)
        );
        assert!(matmul_packed(
            &[0.0; 3],
            2,
            &PackedMatMulWeight::pack(2, 2, &[0.0; 4]).unwrap()
        )
        .is_err());
    }
}
