//! Index metadata passed by value to the kernels, and the shape math that fills it.
//!
//! [`StridedMeta`] and [`BcastMeta`] mirror the structs of `runtime/kernels/common.cuh`
//! (all fields 64-bit, so the layouts agree). Everything here is pure Rust and is tested on
//! the CPU; [`apply_strided`] replays a [`StridedMeta`] on host slices with the same index
//! formula as the kernel's `ts_offset`.
use super::CudaError;

/// Maximum rank the kernels handle (`TS_MAX_DIMS`).
pub const MAX_DIMS: usize = 8;

/// Strided copy description (see `common.cuh`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StridedMeta {
    /// Number of axes used.
    pub ndim: i64,
    /// Number of elements copied.
    pub n: i64,
    /// Iteration shape.
    pub shape: [i64; MAX_DIMS],
    /// Source strides (elements; may be 0 or negative).
    pub in_stride: [i64; MAX_DIMS],
    /// Destination strides (elements).
    pub out_stride: [i64; MAX_DIMS],
    /// Source offset of index 0.
    pub in_offset: i64,
    /// Destination offset of index 0.
    pub out_offset: i64,
}

/// Broadcast description for up to three operands (see `common.cuh`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BcastMeta {
    /// Number of axes of the output.
    pub ndim: i64,
    /// Output elements.
    pub n: i64,
    /// Output shape.
    pub shape: [i64; MAX_DIMS],
    /// Strides of each operand over the output shape (0 on broadcast axes).
    pub stride: [[i64; MAX_DIMS]; 3],
}

// SAFETY: both structs are #[repr(C)], made only of i64 fields and arrays of them (no
// padding, no pointers), and match the C structs of common.cuh field for field, so passing
// them by value as kernel parameters is sound.
unsafe impl cudarc::driver::DeviceRepr for StridedMeta {}
// SAFETY: see above.
unsafe impl cudarc::driver::DeviceRepr for BcastMeta {}

fn too_many(shape: &[usize]) -> CudaError {
    CudaError::Unsupported(format!(
        "tensor of rank {} (shape {shape:?}); kernels handle at most {MAX_DIMS} axes",
        shape.len()
    ))
}

fn pad(v: &[i64]) -> [i64; MAX_DIMS] {
    let mut a = [0i64; MAX_DIMS];
    a[..v.len()].copy_from_slice(v);
    a
}

/// Clamps one Slice axis exactly as the CPU kernel does (`tessera_kernels`' Slice), so a
/// plan whose bounds the importer did not clamp slices the same on both backends: negative
/// bounds count from the back, then `[0, dim]` for a positive step, `[0, dim-1]` /
/// `[-1, dim-1]` for a negative one (an `end` of -1 with a non-negative `start` is the
/// importer's "before index 0" and stays -1).
pub fn clamp_slice(start: i64, end: i64, step: i64, dim: usize) -> (i64, i64) {
    let dim = i64::try_from(dim).unwrap_or(i64::MAX);
    let norm = |v: i64| if v < 0 { v.saturating_add(dim) } else { v };
    if step > 0 {
        (norm(start).clamp(0, dim), norm(end).clamp(0, dim))
    } else {
        let e = if end == -1 && start >= 0 {
            -1
        } else {
            norm(end).clamp(-1, dim - 1)
        };
        (norm(start).clamp(0, (dim - 1).max(0)), e)
    }
}

/// Row-major strides of `shape`.
pub fn contiguous_strides(shape: &[usize]) -> Vec<i64> {
    let mut s = vec![0i64; shape.len()];
    let mut acc = 1i64;
    for d in (0..shape.len()).rev() {
        s[d] = acc;
        acc *= shape[d] as i64;
    }
    s
}

/// numpy broadcast of two shapes (the CPU kernels' rule, [`tessera_kernels::index`]).
pub fn broadcast_shape(a: &[usize], b: &[usize]) -> Result<Vec<usize>, CudaError> {
    tessera_kernels::index::broadcast_shapes(a, b)
        .ok_or_else(|| CudaError::Plan(format!("shapes {a:?} and {b:?} do not broadcast")))
}

/// Strides reading `input` (right-aligned, size-1 axes broadcast) over `out` shape.
pub fn broadcast_strides(input: &[usize], out: &[usize]) -> Result<Vec<i64>, CudaError> {
    if input.len() > out.len() {
        return Err(CudaError::Plan(format!(
            "shape {input:?} does not broadcast to {out:?}"
        )));
    }
    let cs = contiguous_strides(input);
    let lead = out.len() - input.len();
    (0..out.len())
        .map(|d| {
            if d < lead {
                return Ok(0);
            }
            let e = input[d - lead];
            if e == out[d] && e != 1 {
                Ok(cs[d - lead])
            } else if e == 1 {
                Ok(0)
            } else {
                Err(CudaError::Plan(format!(
                    "shape {input:?} does not broadcast to {out:?}"
                )))
            }
        })
        .collect()
}

impl BcastMeta {
    /// Broadcasts `operands` (1 to 3 shapes) to `out`.
    pub fn new(out: &[usize], operands: &[&[usize]]) -> Result<BcastMeta, CudaError> {
        if out.len() > MAX_DIMS {
            return Err(too_many(out));
        }
        let mut stride = [[0i64; MAX_DIMS]; 3];
        for (k, s) in operands.iter().enumerate().take(3) {
            stride[k] = pad(&broadcast_strides(s, out)?);
        }
        let shape: Vec<i64> = out.iter().map(|&e| e as i64).collect();
        Ok(BcastMeta {
            ndim: out.len() as i64,
            n: out.iter().product::<usize>() as i64,
            shape: pad(&shape),
            stride,
        })
    }
}

impl StridedMeta {
    /// A copy over `shape` with the given strides and offsets.
    pub fn new(
        shape: &[usize],
        in_stride: &[i64],
        in_offset: i64,
        out_stride: &[i64],
        out_offset: i64,
    ) -> Result<StridedMeta, CudaError> {
        if shape.len() > MAX_DIMS {
            return Err(too_many(shape));
        }
        let sh: Vec<i64> = shape.iter().map(|&e| e as i64).collect();
        Ok(StridedMeta {
            ndim: shape.len() as i64,
            n: shape.iter().product::<usize>() as i64,
            shape: pad(&sh),
            in_stride: pad(in_stride),
            out_stride: pad(out_stride),
            in_offset,
            out_offset,
        })
    }

    /// Transpose: output axis i is input axis `perm[i]`; output contiguous.
    pub fn permute(in_shape: &[usize], perm: &[usize]) -> Result<StridedMeta, CudaError> {
        if perm.len() != in_shape.len() || {
            let mut p = perm.to_vec();
            p.sort_unstable();
            p != (0..in_shape.len()).collect::<Vec<_>>()
        } {
            return Err(CudaError::Plan(format!(
                "perm {perm:?} is not a permutation of the axes of {in_shape:?}"
            )));
        }
        let cs = contiguous_strides(in_shape);
        let out_shape: Vec<usize> = perm.iter().map(|&p| in_shape[p]).collect();
        let in_stride: Vec<i64> = perm.iter().map(|&p| cs[p]).collect();
        StridedMeta::new(
            &out_shape,
            &in_stride,
            0,
            &contiguous_strides(&out_shape),
            0,
        )
    }

    /// Broadcast `in_shape` to `out_shape` (Expand); output contiguous.
    pub fn expand(in_shape: &[usize], out_shape: &[usize]) -> Result<StridedMeta, CudaError> {
        StridedMeta::new(
            out_shape,
            &broadcast_strides(in_shape, out_shape)?,
            0,
            &contiguous_strides(out_shape),
            0,
        )
    }

    /// Static strided slice; returns the meta and the output shape.
    pub fn slice(
        in_shape: &[usize],
        axes: &[usize],
        starts: &[i64],
        ends: &[i64],
        steps: &[i64],
    ) -> Result<(StridedMeta, Vec<usize>), CudaError> {
        if axes.len() != starts.len() || axes.len() != ends.len() || axes.len() != steps.len() {
            return Err(CudaError::Plan(
                "slice: axes/starts/ends/steps lengths differ".into(),
            ));
        }
        let cs = contiguous_strides(in_shape);
        let mut out_shape = in_shape.to_vec();
        let mut in_stride = cs.clone();
        let mut offset = 0i64;
        for (i, &ax) in axes.iter().enumerate() {
            if ax >= in_shape.len() {
                return Err(CudaError::Plan(format!(
                    "slice axis {ax} out of range for shape {in_shape:?}"
                )));
            }
            let step = steps[i];
            if step == 0 {
                return Err(CudaError::Plan("slice step 0".into()));
            }
            let (st, en) = clamp_slice(starts[i], ends[i], step, in_shape[ax]);
            let len = tessera_ir::spec::slice_len(st, en, step);
            out_shape[ax] = len;
            // One element or none: the stride is never applied (and step · stride may not
            // fit in i64, e.g. step i64::MAX). Otherwise (len - 1)·|step| < dim, so it fits.
            in_stride[ax] = if len <= 1 {
                0
            } else {
                cs[ax].checked_mul(step).ok_or_else(|| {
                    CudaError::Plan(format!("slice step {step} overflows for {in_shape:?}"))
                })?
            };
            if len > 0 {
                offset += st * cs[ax];
            }
        }
        let m = StridedMeta::new(
            &out_shape,
            &in_stride,
            offset,
            &contiguous_strides(&out_shape),
            0,
        )?;
        Ok((m, out_shape))
    }

    /// Copies a contiguous `piece` into `out_shape` at `offset` along `axis` (Concat).
    pub fn place(
        piece: &[usize],
        out_shape: &[usize],
        axis: usize,
        offset: usize,
    ) -> Result<StridedMeta, CudaError> {
        StridedMeta::window(piece, out_shape, axis, offset, true)
    }

    /// Copies the `[offset, offset + piece[axis])` range along `axis` of a contiguous
    /// `in_shape` tensor into a contiguous `piece` (Split, LocalSlice).
    pub fn take(
        in_shape: &[usize],
        piece: &[usize],
        axis: usize,
        offset: usize,
    ) -> Result<StridedMeta, CudaError> {
        StridedMeta::window(piece, in_shape, axis, offset, false)
    }

    /// A copy between a contiguous `piece` and the window at `offset` along `axis` of a
    /// contiguous `whole`: into the window when `into`, out of it otherwise.
    fn window(
        piece: &[usize],
        whole: &[usize],
        axis: usize,
        offset: usize,
        into: bool,
    ) -> Result<StridedMeta, CudaError> {
        let (ps, ws) = (contiguous_strides(piece), contiguous_strides(whole));
        let at = offset as i64 * ws[axis];
        if into {
            StridedMeta::new(piece, &ps, 0, &ws, at)
        } else {
            StridedMeta::new(piece, &ws, at, &ps, 0)
        }
    }
}

/// Host replay of a [`StridedMeta`] (the kernel's index formula), for tests and checks.
pub fn apply_strided<T: Copy>(m: &StridedMeta, input: &[T], out: &mut [T]) {
    for i in 0..m.n {
        let (mut src, mut dst, mut rest) = (m.in_offset, m.out_offset, i);
        for d in (0..m.ndim as usize).rev() {
            let e = m.shape[d];
            let q = rest / e;
            src += (rest - q * e) * m.in_stride[d];
            dst += (rest - q * e) * m.out_stride[d];
            rest = q;
        }
        out[dst as usize] = input[src as usize];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(m: &StridedMeta, input: &[i32], out_len: usize) -> Vec<i32> {
        let mut out = vec![-1; out_len];
        apply_strided(m, input, &mut out);
        out
    }

    #[test]
    fn permute_matches_a_hand_transpose() {
        // x[a][b][c] = 100a + 10b + c with shape [2,3,4]; perm [2,0,1] -> y[c][a][b].
        let x: Vec<i32> = (0..24)
            .map(|i| 100 * (i / 12) + 10 * ((i / 4) % 3) + i % 4)
            .collect();
        let m = StridedMeta::permute(&[2, 3, 4], &[2, 0, 1]).unwrap();
        let y = run(&m, &x, 24);
        for c in 0..4 {
            for a in 0..2 {
                for b in 0..3 {
                    assert_eq!(y[c * 6 + a * 3 + b], (100 * a + 10 * b + c) as i32);
                }
            }
        }
        assert!(StridedMeta::permute(&[2, 3], &[0, 0]).is_err());
    }

    #[test]
    fn slice_with_negative_step_and_offsets() {
        let x: Vec<i32> = (0..20).collect(); // [4,5]
                                             // rows 1..4 step 2 -> rows 1,3; cols 4 down to 0 exclusive-of(-1) step -2 -> 4,2,0
        let (m, shape) = StridedMeta::slice(&[4, 5], &[0, 1], &[1, 4], &[4, -1], &[2, -2]).unwrap();
        assert_eq!(shape, vec![2, 3]);
        assert_eq!(run(&m, &x, 6), vec![9, 7, 5, 19, 17, 15]);
        let (_, empty) = StridedMeta::slice(&[4, 5], &[1], &[3], &[3], &[1]).unwrap();
        assert_eq!(empty, vec![4, 0]);
    }

    /// Unclamped bounds (as a plan not produced by the importer may hold) give the CPU
    /// kernel's result, replayed on the host with the kernel's index formula.
    #[test]
    fn slice_clamps_like_the_cpu_kernel() {
        use tessera_ir::op::SliceAttrs;
        use tessera_ir::{DType, Op, Tensor, TensorData};
        let shape = [4usize, 5];
        let x: Vec<i32> = (0..20).collect();
        let cases: [(i64, i64, i64); 9] = [
            (-100, 100, 1),
            (2, i64::MAX, 1),
            (-2, -1, 1),
            (100, -100, -1),
            (i64::MAX, i64::MIN, -2),
            (3, 1, 1),
            (-1, -100, -3),
            (0, -1, -1),
            (1, 5, i64::MAX),
        ];
        for (st, en, step) in cases {
            let (m, out) = StridedMeta::slice(&shape, &[1], &[st], &[en], &[step]).unwrap();
            let t = Tensor::new(
                DType::I64,
                shape.to_vec(),
                TensorData::I64(x.iter().map(|&v| v as i64).collect()),
            )
            .unwrap();
            let op = Op::Slice(SliceAttrs {
                axes: vec![1],
                starts: vec![st],
                ends: vec![en],
                steps: vec![step],
            });
            let cpu = tessera_kernels::eval(&op, &[&t]).unwrap().remove(0);
            assert_eq!(cpu.shape, out, "shape of slice ({st}, {en}, {step})");
            let got = run(&m, &x, out.iter().product());
            let want: Vec<i32> = match &cpu.data {
                TensorData::I64(v) => v.iter().map(|&v| v as i32).collect(),
                _ => unreachable!("an i64 slice stays i64"),
            };
            assert_eq!(got, want, "slice ({st}, {en}, {step})");
        }
    }

    #[test]
    fn expand_and_broadcast() {
        let m = StridedMeta::expand(&[3, 1], &[2, 3, 2]).unwrap();
        assert_eq!(
            run(&m, &[7, 8, 9], 12),
            vec![7, 7, 8, 8, 9, 9, 7, 7, 8, 8, 9, 9]
        );
        assert_eq!(broadcast_shape(&[2, 1, 4], &[3, 1]).unwrap(), vec![2, 3, 4]);
        assert!(broadcast_shape(&[2, 3], &[4]).is_err());
        let b = BcastMeta::new(&[2, 3, 4], &[&[2, 1, 4], &[3, 1], &[]]).unwrap();
        assert_eq!(&b.stride[0][..3], &[4, 0, 1]);
        assert_eq!(&b.stride[1][..3], &[0, 1, 0]);
        assert_eq!(&b.stride[2][..3], &[0, 0, 0]);
        assert_eq!((b.ndim, b.n), (3, 24));
        assert!(BcastMeta::new(&[1; 9], &[&[1]])
            .unwrap_err()
            .to_string()
            .contains("at most 8"));
    }

    #[test]
    fn concat_place_and_split_take_roundtrip() {
        // Concat [2,1] and [2,2] along axis 1 into [2,3], then take them back.
        let a = [1, 2];
        let b = [3, 4, 5, 6];
        let mut out = vec![0; 6];
        apply_strided(
            &StridedMeta::place(&[2, 1], &[2, 3], 1, 0).unwrap(),
            &a,
            &mut out,
        );
        apply_strided(
            &StridedMeta::place(&[2, 2], &[2, 3], 1, 1).unwrap(),
            &b,
            &mut out,
        );
        assert_eq!(out, vec![1, 3, 4, 2, 5, 6]);
        assert_eq!(
            run(&StridedMeta::take(&[2, 3], &[2, 2], 1, 1).unwrap(), &out, 4),
            b.to_vec()
        );
        assert_eq!(
            run(&StridedMeta::take(&[2, 3], &[2, 1], 1, 0).unwrap(), &out, 2),
            a.to_vec()
        );
    }

    #[test]
    fn layouts_match_the_c_structs() {
        // common.cuh: 2 + 3*8 + 2 i64 for StridedMeta, 2 + 8 + 24 for BcastMeta.
        assert_eq!(std::mem::size_of::<StridedMeta>(), 28 * 8);
        assert_eq!(std::mem::size_of::<BcastMeta>(), 34 * 8);
    }
}
