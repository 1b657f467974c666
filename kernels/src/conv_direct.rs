//! Direct Conv over weights packed once: a 1-D or 2-D Conv with more than one input channel
//! per group as an implicit GEMM, `Y_g[pos, oc] = Σ_l X[pos, l] · Wt_g[l, oc]` with
//! `l = (ci, tap)`, where the weights were transposed into panels of 48 output channels when
//! the plan was loaded ([`PackedConvWeight`]) and the "column matrix" is never built: each
//! output position's row of it is read in place from the (zero-padded) input, through a
//! pointer to the position's window and one map from `l` to the tap's offset in the window.
//!
//! Against im2col and the `gemm` crate it saves the column matrix (written and read once per
//! call) and the crate's packing of the weights on every call, which dominate on the small
//! maps of late vision stages (SqueezeNet's classifier, `[1000, 512]` over 18 positions of
//! two images, packs 2 MB of weights per call for 18 columns); positions of all images form
//! the GEMM's rows, so a 3×3 map of two images is 18 rows rather than two products of 9.
//!
//! The inner tile is the unpacked GEMM's (`gemm_unpacked.rs`): 8 positions by 48 output
//! channels, per `l` three loads of the panel and eight broadcasts of input elements. Each
//! output is its bias plus, block by block of `KC` values of `l` in order, the block's
//! chain of fused multiply-adds from zero, whatever block of positions it falls in and
//! however blocks are split over threads: the result does not depend on the thread count.
//! AVX-512F, or AVX2 with FMA (`tile_avx2`: sub-tiles of 4 positions by 24 channels, the
//! same bits) ([`direct_available`]); elsewhere the im2col path serves. The thresholds
//! below were measured on AVX-512 unless they say otherwise.
use super::conv_depthwise_flat::FlatGeometry;
use super::conv_epilogue::Epilogue;
use super::gemm_unpacked::{KC, MR, NR};
use super::transpose2d::transpose_pitched;
use super::KResult;
use rayon::prelude::*;
use std::mem::MaybeUninit;
use tessera_ir::op::ConvAttrs;
use tessera_ir::spec::window_out_extent;

/// Output positions per block of work (16 tiles: the block's input windows and its
/// `[positions, 48]` result stay in the L1 and L2 caches while a panel of weights streams).
const BLOCK_POSITIONS: usize = 128;

/// Bytes of input one pass over a task's panels reads (in the L2 cache with the task's
/// accumulators).
const INPUT_BYTES: usize = 512 << 10;

/// Multiply-adds below which one thread does the whole Conv.
const PARALLEL_MIN_MACS: usize = 1 << 20;

/// True where the direct kernel runs (x86-64 with AVX-512F, or AVX2 with FMA).
pub fn direct_available() -> bool {
    super::lanes16::lanes_isa().is_some()
}

/// Output positions (of all images) up to which the direct kernel serves any Conv: on 3×3
/// maps of two images (18 positions) it ran 7–35 % faster than im2col and the `gemm` crate,
/// which packs all the weights for a handful of columns; on 4×4 maps of two (32) the crate
/// was 20 % faster in VGG-11 (`[512, 512, 3, 3]`, weights streaming from memory).
const FEW_POSITIONS: usize = 24;

/// Taps of all input channels (`C/g · K`) below which a Conv stays on im2col: VGG's
/// `[64, 3, 3, 3]` stem (27) ran 25 % slower on the direct kernel, whose transpose into
/// planes costs as much as its few multiply-adds per output.
const MIN_TAPS: usize = 64;

/// Input channels per group from which the direct kernel serves a 1×1 Conv of at most
/// [`FEW_POSITIONS`] positions: the `gemm` crate packs all the weights for a few columns
/// (SqueezeNet's `[1000, 512]` classifier over 18 positions 229 → 219 µs, `[160, 960]` 73
/// → 59, `[256, 1024]` over 16 positions 112 → 66); with fewer channels the transpose into
/// planes costs more than the packing saves (`[960, 160]` over 18 positions 74 → 95).
const POINTWISE_MIN_CHANNELS: usize = 256;

/// Output positions (of all images) from which the direct kernel serves a 1×1 Conv of at
/// most [`FEW_POSITIONS`] positions and fewer than [`POINTWISE_MIN_CHANNELS`] input
/// channels: alone, with SiLU, one thread, against the few-column product
/// (`matmul_few_cols.rs`), min of 300 runs, on AVX2: `[960, 160]` over two 3×3 maps 135 →
/// 102 µs, `[1152, 192]` over two 2×2 maps 80 → 71–76, `[576, 96]` and `[240, 40]` equal;
/// with ReLU, min of 2000 runs, on AVX-512 (Zen 4): `[960, 160]` over two 3×3 maps 110 →
/// 82, over two 2×2 maps 54 → 40, `[1152, 192]` over two 2×2 maps 70 → 55. Fewer positions
/// (a squeeze-excitation block's 1×1 maps) keep the narrow product.
const POINTWISE_MIN_POSITIONS: usize = 4;

/// True when the direct kernel serves a Conv of X `x`, W `w` and attributes `a` on this CPU:
/// one or two spatial axes, more than one input channel per group (depthwise Convs have
/// their own kernels), at least 16 output channels per group (a full vector: ResNeXt's
/// groups of 4 channels ran 31 % slower than on im2col), more than one kernel tap unless
/// few positions meet at least [`POINTWISE_MIN_CHANNELS`] input channels (a 1×1 Conv
/// multiplies X in place through the `gemm` crate, 30 % faster than the direct kernel and
/// its transpose into planes: 106 against 76 GFLOP/s on `[256, 64]` over two 15×15 maps),
/// every tap reading the input at some output (a dilated Conv on a small map,
/// DeepLabV3's ASPP, keeps its live taps only on the im2col path; here its padding taps
/// would cost their full share) and at least [`MIN_TAPS`] taps in all, on any plane.
///
/// Any plane on both instruction sets: 3×3 Convs of two images, one thread, direct against
/// im2col and the `gemm` crate, min of 2000 runs — on AVX2 (Zen 3, session 29) 0.56–0.94 of
/// the crate's time on 4×4 to 16×16 maps, none above 1.11; on AVX-512 (Zen 4, session 32)
/// 128 → 32 on 8×8 170 → 105 µs, 32 → 128 on 7×7 102 → 81, 64 → 64 on 16×16 436 → 361,
/// 256 → 256 on 14×14 4650 → 4179, 512 → 512 on 7×7 5009 → 4419 and on 4×4 1495 → 1376,
/// 1024 → 256 on 14×14 18.7 → 16.8 ms, FCN's 2048 → 512 on 8×8 23.2 → 22.7 ms (the crate
/// was 5–17 % faster there on the Intel AVX-512 machine of the first sessions), 64 → 64 on
/// 56×56 and 64 → 256 on 3×3 equal.
pub fn direct_suits(x: &[usize], w: &[usize], a: &ConvAttrs) -> bool {
    let s = x.len().saturating_sub(2);
    let group = if x.len() > 1 { a.groups(x[1]) } else { 0 };
    let shapes = direct_available()
        && (1..=2).contains(&s)
        && w.len() == x.len()
        && a.strides.len() == s
        && a.dilations.len() == s
        && a.pads.len() == 2 * s
        && group > 0
        && w[0].is_multiple_of(group)
        && w[0] / group >= 16
        && w[1] > 1
        && w[1] * group == x[1];
    if !shapes {
        return false;
    }
    let (mut plane, mut ow) = (1, 0);
    for i in 0..s {
        let (h, k, st, d, p) = (x[2 + i], w[2 + i], a.strides[i], a.dilations[i], a.pads[i]);
        let Some(out) = window_out_extent(h, k, st, d, (p, a.pads[s + i]), false) else {
            return false;
        };
        let live = |t: usize| super::conv_trim::tap_reads_input(t, (h, out), (st, d, p));
        if !(0..k).all(live) {
            return false;
        }
        plane *= out;
        ow = out;
    }
    let kl = w[2..].iter().product();
    if super::conv_few_channels::few_channels_suits(x[1], w[0], group, ow, kl) {
        // The few-channel kernel writes the planes directly (no transpose): faster on
        // every such Conv measured (`conv_few_channels.rs`).
        return false;
    }
    let (few, taps) = (
        x[0] * plane <= FEW_POSITIONS,
        w[1..].iter().product::<usize>(),
    );
    if w[2..].iter().product::<usize>() == 1 {
        return few && (w[1] >= POINTWISE_MIN_CHANNELS || x[0] * plane >= POINTWISE_MIN_POSITIONS);
    }
    taps >= MIN_TAPS
}

/// A Conv's weights `[M, C/g, kernel..]` (one or two spatial axes) transposed into panels:
/// per group, per block of 48 output channels, `C/g · K` rows of 48 floats (row `l = ci·K +
/// tap` holds the 48 channels' weights of input channel `ci` at kernel tap `tap`; channels
/// past the group's last are zero).
#[derive(Debug, Clone, PartialEq)]
pub struct PackedConvWeight {
    /// The weight's shape.
    shape: Vec<usize>,
    /// Groups.
    group: usize,
    /// The panels, group by group.
    data: Vec<f32>,
}

impl PackedConvWeight {
    /// Packs `w` (row-major, of `shape`) for a Conv of `group` groups.
    pub fn pack(shape: &[usize], w: &[f32], group: usize) -> KResult<PackedConvWeight> {
        if !(3..=4).contains(&shape.len()) || group == 0 || !shape[0].is_multiple_of(group) {
            return Err(format!(
                "a weight {shape:?} of group {group} cannot be packed for the direct Conv"
            ));
        }
        if shape.iter().product::<usize>() != w.len() {
            return Err(format!("weight {shape:?} has {} values", w.len()));
        }
        let mg = shape[0] / group;
        let kdim: usize = shape[1..].iter().product();
        let panels = mg.div_ceil(NR);
        let mut data = vec![0f32; group * panels * kdim * NR];
        for (gi, group_panels) in data.chunks_exact_mut(panels * kdim * NR).enumerate() {
            for (p, panel) in group_panels.chunks_exact_mut(kdim * NR).enumerate() {
                for j in 0..NR.min(mg - p * NR) {
                    let row = &w[(gi * mg + p * NR + j) * kdim..][..kdim];
                    for (l, &v) in row.iter().enumerate() {
                        panel[l * NR + j] = v;
                    }
                }
            }
        }
        Ok(PackedConvWeight {
            shape: shape.to_vec(),
            group,
            data,
        })
    }

    /// The packed weight's shape (the Conv's W).
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The group count it was packed for.
    pub fn group(&self) -> usize {
        self.group
    }

    /// Output channels per group.
    fn group_channels(&self) -> usize {
        self.shape[0] / self.group
    }

    /// Rows of every panel: input channels per group times kernel taps.
    fn rows(&self) -> usize {
        self.shape[1..].iter().product()
    }

    /// Panel `p` (output channels `48·p..` of the group) of group `gi`: `rows() × 48`.
    fn panel(&self, gi: usize, p: usize) -> &[f32] {
        let (rows, panels) = (self.rows(), self.group_channels().div_ceil(NR));
        &self.data[(gi * panels + p) * rows * NR..][..rows * NR]
    }

    /// Bytes held (the panels, channels padded to whole panels).
    pub fn bytes(&self) -> usize {
        self.data.len() * std::mem::size_of::<f32>()
    }
}

/// The geometry of a 1-D or 2-D Conv (1-D as one row: height 1) over `n` images of `c`
/// channels.
#[derive(Debug, Clone)]
pub(crate) struct DirectGeometry {
    /// Images.
    pub n: usize,
    /// Input channels.
    pub c: usize,
    /// The window (extents, kernel, strides, dilations, begin pads).
    pub win: FlatGeometry,
}

impl DirectGeometry {
    /// Output positions per image.
    fn plane(&self) -> usize {
        self.win.output[0] * self.win.output[1]
    }

    /// The extent of the (padded) input every window lies in, along axis `a`.
    fn window_extent(&self, a: usize) -> usize {
        (self.win.output[a].max(1) - 1) * self.win.strides[a]
            + (self.win.kernel[a].max(1) - 1) * self.win.dilations[a]
            + 1
    }
}

/// The input as the windows read it: X itself when nothing is padded (and every window lies
/// inside it), else a zero-padded copy; with its `[height, width]`.
fn padded_input<'a>(
    geo: &DirectGeometry,
    x: &'a [f32],
) -> (std::borrow::Cow<'a, [f32]>, [usize; 2]) {
    let [h, w] = geo.win.input;
    let ext = [geo.window_extent(0), geo.window_extent(1)];
    if geo.win.pads == [0, 0] && ext[0] <= h && ext[1] <= w {
        return (std::borrow::Cow::Borrowed(x), [h, w]);
    }
    let [hp, wp] = ext;
    let [pt, pl] = geo.win.pads;
    let mut xp = vec![0f32; geo.n * geo.c * hp * wp];
    let cols = w.min(wp.saturating_sub(pl));
    if cols > 0 {
        for (src, dst) in x.chunks_exact(h * w).zip(xp.chunks_exact_mut(hp * wp)) {
            for y in 0..h.min(hp.saturating_sub(pt)) {
                dst[(y + pt) * wp + pl..][..cols].copy_from_slice(&src[y * w..][..cols]);
            }
        }
    }
    (std::borrow::Cow::Owned(xp), [hp, wp])
}

/// The Conv `geo` with weights `w` into `out` (`[n, M, plane]`, uninitialised memory; when
/// this returns Ok every element has been written and none was read before: the bias, when
/// given, starts each sum), then `epi` on each block of output once final.
pub(crate) fn conv_direct(
    geo: &DirectGeometry,
    x: &[f32],
    w: &PackedConvWeight,
    bias: Option<&[f32]>,
    out: &mut [MaybeUninit<f32>],
    epi: Epilogue<'_>,
) -> KResult<()> {
    let (g, m) = (w.group, w.shape[0]);
    let (cg, mg) = (w.shape[1], m / g);
    let kernel = match w.shape[2..] {
        [kw] => [1, kw],
        [kh, kw] => [kh, kw],
        _ => return Err(format!("weight {:?} is not 1-D or 2-D", w.shape)),
    };
    let [h, wd] = geo.win.input;
    let plane = geo.plane();
    if kernel != geo.win.kernel
        || cg * g != geo.c
        || x.len() != geo.n * geo.c * h * wd
        || out.len() != geo.n * m * plane
        || bias.is_some_and(|b| b.len() != m)
        || [
            geo.win.input,
            geo.win.kernel,
            geo.win.output,
            geo.win.strides,
            geo.win.dilations,
        ]
        .iter()
        .flatten()
        .any(|&e| e == 0)
    {
        return Err(format!(
            "the packed weight {:?} (group {g}) does not fit the Conv {geo:?}",
            w.shape
        ));
    }
    if !direct_available() {
        return Err("the direct Conv needs AVX-512F or AVX2 with FMA".into());
    }
    if plane == 0 || geo.n == 0 || m == 0 {
        return Ok(());
    }
    let (xp, [hp, wp]) = padded_input(geo, x);
    let kl = kernel[0] * kernel[1];
    let kdim = cg * kl;
    let plane_in = hp * wp;
    if geo.c * plane_in > u32::MAX as usize {
        return Err(format!(
            "the Conv's input planes {geo:?} are too large to index"
        ));
    }
    // Offset of tap l = (ci, kh, kw) from a window's first element.
    let map: Vec<u32> = (0..kdim)
        .map(|l| {
            let (ci, tap) = (l / kl, l % kl);
            let (ky, kx) = (tap / kernel[1], tap % kernel[1]);
            (ci * plane_in + ky * geo.win.dilations[0] * wp + kx * geo.win.dilations[1]) as u32
        })
        .collect();
    // Offset of each output position's window (over all images) from group 0's input.
    let rows = geo.n * plane;
    let [_, ow] = geo.win.output;
    let starts: Vec<usize> = (0..rows)
        .map(|r| {
            let (img, q) = (r / plane, r % plane);
            let (oy, ox) = (q / ow, q % ow);
            img * geo.c * plane_in + oy * geo.win.strides[0] * wp + ox * geo.win.strides[1]
        })
        .collect();
    let panels = mg.div_ceil(NR);
    let threads = crate::pool_threads();
    let macs = rows * m * kdim;
    // Blocks of positions, and ranges of panels per task: at least two tasks per thread
    // when the Conv is split (positions first, then panels: DeepLab's and FCN's heads have
    // 128 positions and 11 panels).
    let split = threads > 1 && macs >= crate::split_min(PARALLEL_MIN_MACS);
    let mut block = BLOCK_POSITIONS.min(rows.next_multiple_of(MR));
    if split {
        while g * rows.div_ceil(block) < 2 * threads && block > 4 * MR {
            block = (block / 2).next_multiple_of(MR);
        }
    }
    let blocks = rows.div_ceil(block);
    let per_task = if split {
        let ranges = (2 * threads).div_ceil(g * blocks).min(panels);
        panels.div_ceil(ranges)
    } else {
        panels
    };
    let ranges = panels.div_ceil(per_task);
    // Rows of the panels per pass over them: the input those rows read (`kl` rows per
    // channel) stays in the L2 cache while every panel of the task streams past it.
    let channels = (INPUT_BYTES / (4 * (geo.n * plane_in).max(1))).max(1);
    let k_pass = (channels * kl).next_multiple_of(KC);
    let mut epi = epi;
    (epi.plane, epi.channels) = (plane, m);
    let job = Job {
        geo,
        xp: &xp,
        w,
        bias,
        map: &map,
        starts: &starts,
        plane_in,
        out: OutPtr(out.as_mut_ptr().cast::<f32>()),
        epi,
        block,
        k_pass,
        prefetch: block <= FEW_POSITIONS,
    };
    let tasks = g * blocks * ranges;
    let task = |t: usize, buf: &mut Vec<f32>| {
        let (r, rest) = (t % ranges, t / ranges);
        let (blk, gi) = (rest % blocks, rest / blocks);
        let p0 = r * per_task;
        job.run(gi, blk, p0..panels.min(p0 + per_task), buf);
    };
    if split {
        (0..tasks)
            .into_par_iter()
            .for_each_init(Vec::new, |buf, t| task(t, buf));
    } else {
        let mut buf = Vec::new();
        (0..tasks).for_each(|t| task(t, &mut buf));
    }
    Ok(())
}

/// The output's base pointer, shared by the tasks (each writes its own elements).
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);

// SAFETY: the tasks that share the pointer write disjoint elements (each its own output
// channels at its own positions) and never read what another writes.
unsafe impl Send for OutPtr {}
// SAFETY: as for Send.
unsafe impl Sync for OutPtr {}

/// Everything one task (a group, a block of positions, a panel of channels) reads.
struct Job<'a> {
    geo: &'a DirectGeometry,
    xp: &'a [f32],
    w: &'a PackedConvWeight,
    bias: Option<&'a [f32]>,
    map: &'a [u32],
    starts: &'a [usize],
    plane_in: usize,
    out: OutPtr,
    epi: Epilogue<'a>,
    block: usize,
    /// Rows of the panels per pass over a task's panels.
    k_pass: usize,
    /// The tiles prefetch the panels (at most [`FEW_POSITIONS`]: the panels stream from
    /// memory, each row read by a few tiles; ConvNeXt's `[768, 384, 2, 2]` over 8 positions,
    /// 4.7 MB of weights, 0.69 → 0.50–0.60 ms).
    prefetch: bool,
}

impl Job<'_> {
    /// Output channels of panels `panels` of group `gi` at positions `blk·block..`: the
    /// tiles into `buf` (`[positions, channels]`, started from the bias), k pass by k pass
    /// over every panel, then transposed into the output's planes, image by image, and the
    /// epilogue on each channel's run of positions.
    fn run(&self, gi: usize, blk: usize, panels: std::ops::Range<usize>, buf: &mut Vec<f32>) {
        let r0 = blk * self.block;
        let rows = self.block.min(self.starts.len() - r0);
        let mg = self.w.group_channels();
        let oc0 = gi * mg + panels.start * NR;
        let cols = (panels.end * NR).min(mg) - panels.start * NR;
        let ld = panels.len() * NR;
        buf.resize(2 * rows * ld, 0.0);
        let (acc, tr) = buf.split_at_mut(rows * ld);
        for row in acc.chunks_exact_mut(ld) {
            match self.bias {
                Some(b) => row[..cols].copy_from_slice(&b[oc0..oc0 + cols]),
                None => row[..cols].fill(0.0),
            }
        }
        let group_off = gi * self.w.shape[1] * self.plane_in;
        #[cfg(target_arch = "x86_64")]
        let kdim = self.w.rows();
        for kp in (0..kdim).step_by(self.k_pass) {
            let k_end = kdim.min(kp + self.k_pass);
            // Panel by panel, so that each streams in order (a Conv of few positions and
            // megabytes of weights reads them at memory speed).
            for p in panels.clone() {
                for k0 in (kp..k_end).step_by(KC) {
                    let kc = (k_end - k0).min(KC);
                    for i0 in (0..rows).step_by(MR) {
                        let rr = (rows - i0).min(MR);
                        let starts = &self.starts[r0 + i0..][..rr];
                        let c = &mut acc[i0 * ld + (p - panels.start) * NR..];
                        self.tile(group_off, starts, (k0, kc), (gi, p), c, ld);
                    }
                }
            }
        }
        // The block's positions, image by image: transposed into `tr` ([cols, run]), then
        // each channel's run copied into its output plane.
        let plane = self.geo.plane();
        let mut r = r0;
        while r < r0 + rows {
            let (img, q0) = (r / plane, r % plane);
            let run = (plane - q0).min(r0 + rows - r);
            transpose_pitched(&acc[(r - r0) * ld..], ld, tr, run, run, cols);
            // Whole planes: the epilogue once over the task's channels of the image (their
            // planes are contiguous); per channel it would run on pieces of a few positions.
            let whole = run == plane;
            for j in 0..cols {
                let at = (img * self.w.shape[0] + oc0 + j) * plane + q0;
                let src = &tr[j * run..][..run];
                // SAFETY: elements at..at + run (channel oc0 + j of image img, positions
                // q0..q0 + run) lie inside the output and belong to this task alone; they
                // are written (from `src`, which does not overlap the output) before the
                // slice over them is formed.
                let dst = unsafe {
                    let d = self.out.0.add(at);
                    std::ptr::copy_nonoverlapping(src.as_ptr(), d, run);
                    std::slice::from_raw_parts_mut(d, run)
                };
                if !self.epi.is_empty() && !whole {
                    self.epi.apply(dst, at);
                }
            }
            if !self.epi.is_empty() && whole {
                let at = (img * self.w.shape[0] + oc0) * plane;
                // SAFETY: channels oc0..oc0 + cols of image img (whole planes) lie inside the
                // output, belong to this task alone and were all written above.
                let dst =
                    unsafe { std::slice::from_raw_parts_mut(self.out.0.add(at), cols * plane) };
                self.epi.apply(dst, at);
            }
            r += run;
        }
    }

    /// Rows `k0..k0 + kc` of panel `p` of group `gi` against the positions whose windows
    /// start at `starts` (at most [`MR`]), added into `acc` (rows `ld` apart).
    #[cfg(target_arch = "x86_64")]
    fn tile(
        &self,
        group_off: usize,
        starts: &[usize],
        (k0, kc): (usize, usize),
        (gi, p): (usize, usize),
        acc: &mut [f32],
        ld: usize,
    ) {
        use super::gemm_unpacked::{tile_avx2, tile_fitted, Tile};
        use super::lanes16::{lanes_isa, LanesIsa};
        let rr = starts.len();
        let panel = self.w.panel(gi, p);
        let pcols = NR.min(self.w.group_channels() - p * NR);
        let base = self.xp.as_ptr();
        // SAFETY (pointers): every window start plus every map offset lies inside the padded
        // input (its extent covers every window of every position; the map's largest offset
        // is the last tap of the group's last channel); the panel's rows k0..k0 + kc and the
        // accumulator's rows 0..rr (their first pcols columns) lie inside their slices.
        let t = unsafe {
            Tile {
                k: kc,
                arows: std::array::from_fn(|r| base.add(group_off + starts[r.min(rr - 1)])),
                map: self.map.as_ptr().add(k0),
                rows: rr,
                b: panel.as_ptr().add(k0 * NR),
                ldb: NR,
                c: acc.as_mut_ptr(),
                ldc: ld,
                cols: pcols,
                load: true,
                prefetch: self.prefetch,
            }
        };
        // SAFETY (all arms): the instruction set is present (checked by `conv_direct`:
        // the AVX2 arm only without AVX-512F); the tile's operands are in bounds (above)
        // and 16·(NV − 1) < pcols ≤ 16·NV ≤ NR.
        unsafe {
            match (lanes_isa(), pcols.div_ceil(16)) {
                (Some(LanesIsa::Avx2), _) => tile_avx2(&t),
                (_, 3) => tile_fitted::<3>(&t),
                (_, 2) => tile_fitted::<2>(&t),
                _ => tile_fitted::<1>(&t),
            }
        }
    }
}
