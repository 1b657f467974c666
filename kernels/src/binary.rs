//! Broadcasting elementwise binary ops (arithmetic, comparisons, logic) and Where.
use super::index::{broadcast_offsets, broadcast_shapes};
use super::simd::vectorized;
use super::{describe, make, map_storage, wrap_int, KResult};
use tessera_ir::op::BinaryOp;
use tessera_ir::{DType, Tensor, TensorData};

mod int;

/// How one operand is read along the trailing block of the output.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Inner {
    /// Every element of the block, contiguously.
    Full,
    /// One element repeated over the block.
    Repeat,
}

/// Splits `out_shape` into outer axes and a trailing block in which each operand is either
/// read contiguously or repeats one element. Returns (axes of the block start, block length,
/// mode of a, mode of b); shapes are padded to the output rank with leading 1s.
fn trailing_block(a: &[usize], b: &[usize], out: &[usize]) -> (usize, usize, Inner, Inner) {
    let mut k = out.len();
    let mut len = 1usize;
    let (mut ma, mut mb): (Option<Inner>, Option<Inner>) = (None, None);
    let mode = |s: &[usize], d: usize| -> Inner {
        let lead = out.len() - s.len();
        if d >= lead && s[d - lead] == out[d] {
            Inner::Full
        } else {
            Inner::Repeat
        }
    };
    while k > 0 {
        let d = k - 1;
        if out[d] != 1 {
            let (da, db) = (mode(a, d), mode(b, d));
            if ma.is_some_and(|m| m != da) || mb.is_some_and(|m| m != db) {
                break;
            }
            ma = Some(da);
            mb = Some(db);
        }
        len *= out[d];
        k = d;
    }
    (k, len, ma.unwrap_or(Inner::Full), mb.unwrap_or(Inner::Full))
}

/// Applies `f` elementwise to `a` and `b` broadcast (numpy) to `out_shape`.
///
/// The output is produced block by block: the trailing axes over which each operand is either
/// contiguous or a repeated element form one tight (vectorisable) loop, and only the outer
/// axes use index arithmetic (one offset per block).
#[inline(always)]
fn zip_broadcast<T: Copy, U>(
    a: &[T],
    a_shape: &[usize],
    b: &[T],
    b_shape: &[usize],
    out_shape: &[usize],
    f: impl Fn(T, T) -> U,
) -> Vec<U> {
    let n: usize = out_shape.iter().product();
    if n == 0 {
        return Vec::new();
    }
    // Written into reserved capacity with plain loops: `collect()`/`extend()` go through
    // generic functions that LLVM may not inline into the wide function of
    // [`zip_vectorized`], whose loop then runs in the baseline build.
    let mut out: Vec<U> = Vec::with_capacity(n);
    let dst = &mut out.spare_capacity_mut()[..n];
    if a.len() == n && b.len() == n && a_shape == b_shape {
        for ((o, &x), &y) in dst.iter_mut().zip(a).zip(b) {
            o.write(f(x, y));
        }
    } else {
        let (k, len, ma, mb) = trailing_block(a_shape, b_shape, out_shape);
        // Offsets (in blocks) of each operand for every outer index; both shapes broadcast
        // to out_shape by construction of the caller, so the trimmed shapes broadcast too.
        let outer = &out_shape[..k];
        let trim = |s: &[usize]| -> Vec<usize> {
            let lead = out_shape.len() - s.len();
            (0..k)
                .map(|d| if d >= lead { s[d - lead] } else { 1 })
                .collect()
        };
        let oa = broadcast_offsets(&trim(a_shape), outer).unwrap_or_default();
        let ob = broadcast_offsets(&trim(b_shape), outer).unwrap_or_default();
        let (la, lb) = (
            if ma == Inner::Full { len } else { 1 },
            if mb == Inner::Full { len } else { 1 },
        );
        // Invariant: both shapes broadcast to out_shape (the callers compute it with
        // broadcast_shapes), so there is one offset per outer index, n / len of them; the
        // writes below then cover all n elements, which set_len relies on.
        assert!(
            oa.len() * len == n && ob.len() * len == n,
            "operands {a_shape:?} and {b_shape:?} do not broadcast to {out_shape:?}"
        );
        for ((&i, &j), blk) in oa.iter().zip(&ob).zip(dst.chunks_exact_mut(len)) {
            let xa = &a[i * la..i * la + la];
            let yb = &b[j * lb..j * lb + lb];
            match (ma, mb) {
                (Inner::Full, Inner::Full) => {
                    for ((o, &x), &y) in blk.iter_mut().zip(xa).zip(yb) {
                        o.write(f(x, y));
                    }
                }
                (Inner::Full, Inner::Repeat) => {
                    let y = yb[0];
                    for (o, &x) in blk.iter_mut().zip(xa) {
                        o.write(f(x, y));
                    }
                }
                (Inner::Repeat, Inner::Full) => {
                    let x = xa[0];
                    for (o, &y) in blk.iter_mut().zip(yb) {
                        o.write(f(x, y));
                    }
                }
                (Inner::Repeat, Inner::Repeat) => {
                    for o in blk.iter_mut() {
                        o.write(f(xa[0], yb[0]));
                    }
                }
            }
        }
    }
    // SAFETY: both branches wrote all n elements: the first one per element (a, b and dst
    // all hold n), the second one block of `len` for each of the n / len outer indices
    // (asserted above).
    unsafe { out.set_len(n) };
    out
}

/// [`zip_broadcast`] inside the widest vector region the CPU has: each caller passes a
/// closure of its own, so every op kind gets one monomorphised, vectorisable loop (a
/// per-element match or function pointer does not vectorise: ~1.5 ns per element).
#[inline(always)]
fn zip_vectorized<T: Copy, U>(
    a: &[T],
    a_shape: &[usize],
    b: &[T],
    b_shape: &[usize],
    out_shape: &[usize],
    f: impl Fn(T, T) -> U,
) -> Vec<U> {
    vectorized(
        #[inline(always)]
        || zip_broadcast(a, a_shape, b, b_shape, out_shape, f),
    )
}

/// Float arithmetic with the common ops monomorphised (inlined, vectorisable loops).
fn float_arith(
    kind: BinaryOp,
    x: &[f32],
    sa: &[usize],
    y: &[f32],
    sb: &[usize],
    so: &[usize],
) -> KResult<Vec<f32>> {
    Ok(match kind {
        BinaryOp::Add => zip_vectorized(x, sa, y, sb, so, |p, q| p + q),
        BinaryOp::Sub => zip_vectorized(x, sa, y, sb, so, |p, q| p - q),
        BinaryOp::Mul => zip_vectorized(x, sa, y, sb, so, |p, q| p * q),
        BinaryOp::Div => zip_vectorized(x, sa, y, sb, so, |p, q| p / q),
        // NaN if either is NaN (ONNX Max/Min), as `float_op`; 10x faster than through its
        // function pointer.
        BinaryOp::Max => zip_vectorized(x, sa, y, sb, so, max_f32),
        BinaryOp::Min => zip_vectorized(x, sa, y, sb, so, min_f32),
        // A square or cube (RMSNorm's x², GELU's x³) as one vector pass; other exponents
        // call `powf` per element.
        BinaryOp::Pow if y.iter().all(|&e| e == 2.0) => {
            zip_vectorized(x, sa, y, sb, so, |p, _| p * p)
        }
        BinaryOp::Pow if y.iter().all(|&e| e == 3.0) => {
            zip_vectorized(x, sa, y, sb, so, |p, _| p * p * p)
        }
        other => zip_broadcast(x, sa, y, sb, so, float_op(other)?),
    })
}

fn is_comparison(kind: BinaryOp) -> bool {
    matches!(
        kind,
        BinaryOp::Equal
            | BinaryOp::Less
            | BinaryOp::LessOrEqual
            | BinaryOp::Greater
            | BinaryOp::GreaterOrEqual
    )
}

/// A comparison of `x` and `y` broadcast to `so`, one monomorphised loop per kind
/// ([`zip_vectorized`]; the masks of real decoders compare position ids over `[B, 1, S, S]`
/// every run).
fn compare<T: PartialOrd + Copy>(
    kind: BinaryOp,
    x: &[T],
    sa: &[usize],
    y: &[T],
    sb: &[usize],
    so: &[usize],
) -> Vec<bool> {
    match kind {
        BinaryOp::Equal => zip_vectorized(x, sa, y, sb, so, |p, q| p == q),
        BinaryOp::Less => zip_vectorized(x, sa, y, sb, so, |p, q| p < q),
        BinaryOp::LessOrEqual => zip_vectorized(x, sa, y, sb, so, |p, q| p <= q),
        BinaryOp::Greater => zip_vectorized(x, sa, y, sb, so, |p, q| p > q),
        _ => zip_vectorized(x, sa, y, sb, so, |p, q| p >= q),
    }
}

/// Python-style modulo (result takes the sign of the divisor, zero included, as ONNX
/// Mod-28 spells out).
fn py_mod_f32(x: f32, y: f32) -> f32 {
    let r = x % y;
    if r == 0.0 {
        0f32.copysign(y)
    } else if (r < 0.0) != (y < 0.0) {
        r + y
    } else {
        r
    }
}

/// Max of two floats, NaN if either is (ONNX Max).
#[inline(always)]
pub(crate) fn max_f32(x: f32, y: f32) -> f32 {
    if x.is_nan() || y.is_nan() {
        f32::NAN
    } else {
        x.max(y)
    }
}

/// Min of two floats, NaN if either is (ONNX Min).
#[inline(always)]
pub(crate) fn min_f32(x: f32, y: f32) -> f32 {
    if x.is_nan() || y.is_nan() {
        f32::NAN
    } else {
        x.min(y)
    }
}

/// `x^y` as onnxruntime's Pow computes it: `x·x` for y = 2 and `x·x·x` for y = 3 (its
/// kernel's special cases), `powf` otherwise.
#[inline(always)]
pub(crate) fn pow_f32(x: f32, y: f32) -> f32 {
    if y == 2.0 {
        x * x
    } else if y == 3.0 {
        x * x * x
    } else {
        x.powf(y)
    }
}

pub(crate) fn float_op(kind: BinaryOp) -> KResult<fn(f32, f32) -> f32> {
    Ok(match kind {
        BinaryOp::Add => |x, y| x + y,
        BinaryOp::Sub => |x, y| x - y,
        BinaryOp::Mul => |x, y| x * y,
        BinaryOp::Div => |x, y| x / y,
        BinaryOp::Pow => pow_f32,
        BinaryOp::Max => max_f32,
        BinaryOp::Min => min_f32,
        BinaryOp::Mod { fmod: true } => |x, y| x % y,
        BinaryOp::Mod { fmod: false } => py_mod_f32,
        other => return Err(format!("{other:?} is not defined on floats")),
    })
}

/// A logical op on booleans broadcast to `so`, one monomorphised loop per kind
/// ([`zip_vectorized`]).
fn bool_op(
    kind: BinaryOp,
    x: &[bool],
    sa: &[usize],
    y: &[bool],
    sb: &[usize],
    so: &[usize],
) -> KResult<Vec<bool>> {
    Ok(match kind {
        BinaryOp::And => zip_vectorized(x, sa, y, sb, so, |p: bool, q: bool| p & q),
        BinaryOp::Or => zip_vectorized(x, sa, y, sb, so, |p: bool, q: bool| p | q),
        BinaryOp::Xor => zip_vectorized(x, sa, y, sb, so, |p: bool, q: bool| p ^ q),
        BinaryOp::Equal => zip_vectorized(x, sa, y, sb, so, |p: bool, q: bool| p == q),
        other => return Err(format!("{other:?} is not defined on booleans")),
    })
}

/// Evaluates a broadcasting binary op.
pub(crate) fn binary(kind: BinaryOp, a: &Tensor, b: &Tensor) -> KResult<Tensor> {
    let out_shape = broadcast_shapes(&a.shape, &b.shape)
        .ok_or_else(|| format!("cannot broadcast {} with {}", describe(a), describe(b)))?;
    let so_owned = out_shape.clone();
    let (sa, sb, so) = (&a.shape[..], &b.shape[..], &so_owned[..]);
    let cmp = is_comparison(kind);
    match (&a.data, &b.data) {
        (TensorData::F32(x), TensorData::F32(y)) => {
            if cmp {
                let v = compare(kind, x, sa, y, sb, so);
                make(DType::Bool, out_shape, TensorData::Bool(v))
            } else {
                let v = float_arith(kind, x, sa, y, sb, so)?;
                make(a.dtype, out_shape, TensorData::F32(v))
            }
        }
        (TensorData::I64(x), TensorData::I64(y)) => {
            if cmp {
                let v = compare(kind, x, sa, y, sb, so);
                return make(DType::Bool, out_shape, TensorData::Bool(v));
            }
            let v = int::int_binary(kind, a.dtype, (a, x, sa), (b, y, sb), so)?;
            make(a.dtype, out_shape, TensorData::I64(v))
        }
        (TensorData::Bool(x), TensorData::Bool(y)) => {
            let v = bool_op(kind, x, sa, y, sb, so)?;
            make(DType::Bool, out_shape, TensorData::Bool(v))
        }
        // Pow allows a different exponent type (ONNX T1).
        (TensorData::F32(x), TensorData::I64(y)) if kind == BinaryOp::Pow => {
            let yf: Vec<f32> = y.iter().map(|&v| v as f32).collect();
            make(
                a.dtype,
                out_shape,
                TensorData::F32(zip_broadcast(x, sa, &yf, sb, so, f32::powf)),
            )
        }
        (TensorData::I64(x), TensorData::F32(y)) if kind == BinaryOp::Pow => {
            let dt = a.dtype;
            let xf: Vec<f64> = x.iter().map(|&v| v as f64).collect();
            let yf: Vec<f64> = y.iter().map(|&v| v as f64).collect();
            let v = zip_broadcast(&xf, sa, &yf, sb, so, |p, q| wrap_int(dt, p.powf(q) as i64));
            make(dt, out_shape, TensorData::I64(v))
        }
        _ => Err(format!(
            "operand types differ: {} and {}",
            describe(a),
            describe(b)
        )),
    }
}

/// `cond ? x : y` with three-way numpy broadcasting.
pub(crate) fn where_select(cond: &Tensor, x: &Tensor, y: &Tensor) -> KResult<Tensor> {
    let c = cond
        .as_bool()
        .ok_or_else(|| format!("condition must be bool, got {}", describe(cond)))?;
    let s1 = broadcast_shapes(&cond.shape, &x.shape);
    let out_shape = s1
        .and_then(|s| broadcast_shapes(&s, &y.shape))
        .ok_or_else(|| {
            format!(
                "cannot broadcast {}, {} and {}",
                describe(cond),
                describe(x),
                describe(y)
            )
        })?;
    if let (TensorData::F32(_), TensorData::F32(_)) = (&x.data, &y.data) {
        if x.dtype == DType::F32 && y.dtype == DType::F32 {
            // Blocked broadcasting, no per-element offset tables: the fused elementwise
            // program of this one select.
            use crate::fused::{ElementwiseProgram, EwInstr};
            let p = ElementwiseProgram {
                out_shape,
                instrs: vec![
                    EwInstr::Load(1),
                    EwInstr::Load(2),
                    EwInstr::Where {
                        cond: 0,
                        a: 0,
                        b: 1,
                    },
                ],
                out_dtype: DType::F32,
            };
            return crate::fused::elementwise(&p, &[cond, x, y]);
        }
    }
    // All three broadcast to out_shape by construction.
    let ic = broadcast_offsets(&cond.shape, &out_shape).unwrap_or_default();
    let ix = broadcast_offsets(&x.shape, &out_shape).unwrap_or_default();
    let iy = broadcast_offsets(&y.shape, &out_shape).unwrap_or_default();
    macro_rules! select {
        ($xv:expr, $yv:expr) => {
            ic.iter()
                .zip(ix.iter().zip(&iy))
                .map(|(&k, (&i, &j))| if c[k] { $xv[i] } else { $yv[j] })
                .collect()
        };
    }
    let data = match (&x.data, &y.data) {
        (TensorData::F32(a), TensorData::F32(b)) => TensorData::F32(select!(a, b)),
        (TensorData::I64(a), TensorData::I64(b)) => TensorData::I64(select!(a, b)),
        (TensorData::Bool(a), TensorData::Bool(b)) => TensorData::Bool(select!(a, b)),
        _ => {
            return Err(format!(
                "branch types differ: {} and {}",
                describe(x),
                describe(y)
            ))
        }
    };
    make(x.dtype, out_shape, data)
}

/// Broadcasts a tensor to `out_shape` (used by Expand and by kernels with broadcast operands).
pub(crate) fn broadcast_to(t: &Tensor, out_shape: &[usize]) -> KResult<Tensor> {
    if t.shape == out_shape {
        return Ok(t.clone());
    }
    if broadcast_shapes(&t.shape, out_shape).as_deref() != Some(out_shape) {
        return Err(format!(
            "cannot broadcast {} to {:?}",
            describe(t),
            out_shape
        ));
    }
    // Zipped with a scalar, block by block (no per-element offset table).
    make(
        t.dtype,
        out_shape.to_vec(),
        map_storage!(&t.data, v => zip_broadcast(
            v,
            &t.shape,
            std::slice::from_ref(&Default::default()),
            &[],
            out_shape,
            |x, _| x,
        )),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Squares and cubes are products (as onnxruntime's Pow computes them) whether the
    /// exponent is a scalar (the vector pass) or per element (the general loop); other
    /// exponents are `powf`.
    #[test]
    fn pow_squares_and_cubes_are_products() {
        let xs: Vec<f32> = vec![1.1, -0.3, 3.7e-3, -0.0, 1e20, f32::NAN, -f32::INFINITY, 0.7];
        let x = Tensor::f32(vec![8], xs.clone());
        let bits =
            |t: &Tensor| -> Vec<u32> { t.as_f32().unwrap().iter().map(|v| v.to_bits()).collect() };
        let want2: Vec<u32> = xs.iter().map(|&v| (v * v).to_bits()).collect();
        let want3: Vec<u32> = xs.iter().map(|&v| (v * v * v).to_bits()).collect();
        let two = Tensor::f32(vec![], vec![2.0]);
        let three = Tensor::f32(vec![1], vec![3.0]);
        assert_eq!(bits(&binary(BinaryOp::Pow, &x, &two).unwrap()), want2);
        assert_eq!(bits(&binary(BinaryOp::Pow, &x, &three).unwrap()), want3);
        let mixed = Tensor::f32(vec![8], vec![2.0, 3.0, 2.0, 3.0, 0.5, 2.0, 3.0, 1.5]);
        let got = binary(BinaryOp::Pow, &x, &mixed).unwrap();
        let want: Vec<u32> = [want2[0], want3[1], want2[2], want3[3]]
            .into_iter()
            .chain([
                1e20f32.powf(0.5).to_bits(),
                want2[5],
                want3[6],
                0.7f32.powf(1.5).to_bits(),
            ])
            .collect();
        assert_eq!(bits(&got), want);
    }

    #[test]
    fn add_broadcasts_row_and_column() {
        let a = Tensor::f32(vec![2, 1], vec![1.0, 2.0]);
        let b = Tensor::f32(vec![3], vec![10.0, 20.0, 30.0]);
        let c = binary(BinaryOp::Add, &a, &b).unwrap();
        assert_eq!(c.shape, vec![2, 3]);
        assert_eq!(c.as_f32().unwrap(), &[11.0, 21.0, 31.0, 12.0, 22.0, 32.0]);
    }

    #[test]
    fn broadcast_blocks_match_index_arithmetic() {
        // Shapes covering full/repeat blocks on either side, middle-axis broadcasts and
        // size-1 output axes; compared with the per-element offsets.
        let cases: &[(&[usize], &[usize])] = &[
            (&[2, 3, 4], &[4]),
            (&[2, 3, 4], &[3, 1]),
            (&[2, 1, 4], &[1, 3, 4]),
            (&[1, 2, 1, 4], &[1, 1, 1, 4]),
            (&[3, 1], &[1, 1]),
            (&[], &[2, 2]),
            (&[2, 1, 1], &[1, 3, 2]),
            (&[5], &[5]),
        ];
        for (sa, sb) in cases {
            let na: usize = sa.iter().product();
            let nb: usize = sb.iter().product();
            let a = Tensor::f32(sa.to_vec(), (0..na).map(|i| i as f32).collect());
            let b = Tensor::f32(sb.to_vec(), (0..nb).map(|i| 100.0 * i as f32).collect());
            let out = broadcast_shapes(sa, sb).unwrap();
            let ia = broadcast_offsets(sa, &out).unwrap();
            let ib = broadcast_offsets(sb, &out).unwrap();
            let want: Vec<f32> = ia
                .iter()
                .zip(&ib)
                .map(|(&i, &j)| i as f32 - 100.0 * j as f32)
                .collect();
            let got = binary(BinaryOp::Sub, &a, &b).unwrap();
            assert_eq!(got.shape, out, "{sa:?} - {sb:?}");
            assert_eq!(got.as_f32().unwrap(), &want[..], "{sa:?} - {sb:?}");
        }
    }

    #[test]
    fn integer_div_truncates_and_mod_follows_sign_rules() {
        let a = Tensor::i64(vec![4], vec![7, -7, 7, -7]);
        let b = Tensor::i64(vec![4], vec![2, 2, -2, -2]);
        let d = binary(BinaryOp::Div, &a, &b).unwrap();
        assert_eq!(d.as_i64().unwrap(), &[3, -3, -3, 3]);
        let m = binary(BinaryOp::Mod { fmod: false }, &a, &b).unwrap();
        assert_eq!(m.as_i64().unwrap(), &[1, 1, -1, -1]);
        let f = binary(BinaryOp::Mod { fmod: true }, &a, &b).unwrap();
        assert_eq!(f.as_i64().unwrap(), &[1, -1, 1, -1]);
        assert!(binary(BinaryOp::Div, &a, &Tensor::i64(vec![], vec![0])).is_err());
    }

    #[test]
    fn float_mod_follows_onnx_mod_28_special_cases() {
        let inf = f32::INFINITY;
        let a = Tensor::f32(vec![6], vec![-0.0, 0.0, 5.0, -5.0, inf, 3.0]);
        let b = Tensor::f32(vec![6], vec![3.0, -3.0, inf, inf, 2.0, 0.0]);
        let m = binary(BinaryOp::Mod { fmod: false }, &a, &b).unwrap();
        let v = m.as_f32().unwrap();
        // ±0 takes the divisor's sign.
        assert!(v[0] == 0.0 && v[0].is_sign_positive());
        assert!(v[1] == 0.0 && v[1].is_sign_negative());
        // Infinite divisor: x when signs agree, else the divisor.
        assert_eq!(&v[2..4], &[5.0, inf]);
        assert!(v[4].is_nan() && v[5].is_nan());
    }

    #[test]
    fn int32_add_wraps() {
        let mut a = Tensor::i64(vec![1], vec![i32::MAX as i64]);
        a.dtype = DType::I32;
        let mut b = Tensor::i64(vec![1], vec![1]);
        b.dtype = DType::I32;
        let c = binary(BinaryOp::Add, &a, &b).unwrap();
        assert_eq!(c.as_i64().unwrap(), &[i32::MIN as i64]);
        assert_eq!(c.dtype, DType::I32);
    }

    #[test]
    fn comparisons_and_logic_give_bools() {
        let a = Tensor::f32(vec![3], vec![1.0, 2.0, 3.0]);
        let b = Tensor::f32(vec![], vec![2.0]);
        assert_eq!(
            binary(BinaryOp::Less, &a, &b).unwrap().as_bool().unwrap(),
            &[true, false, false]
        );
        assert_eq!(
            binary(BinaryOp::GreaterOrEqual, &a, &b)
                .unwrap()
                .as_bool()
                .unwrap(),
            &[false, true, true]
        );
        let p = Tensor::bool(vec![2], vec![true, false]);
        let q = Tensor::bool(vec![2], vec![true, true]);
        assert_eq!(
            binary(BinaryOp::Xor, &p, &q).unwrap().as_bool().unwrap(),
            &[false, true]
        );
        assert!(binary(BinaryOp::And, &a, &b).is_err());
    }

    #[test]
    fn max_propagates_nan_and_pow_mixes_types() {
        let a = Tensor::f32(vec![2], vec![f32::NAN, 1.0]);
        let b = Tensor::f32(vec![2], vec![0.0, 5.0]);
        let m = binary(BinaryOp::Max, &a, &b).unwrap();
        assert!(m.as_f32().unwrap()[0].is_nan());
        assert_eq!(m.as_f32().unwrap()[1], 5.0);
        let p = binary(
            BinaryOp::Pow,
            &Tensor::f32(vec![2], vec![2.0, 3.0]),
            &Tensor::i64(vec![], vec![3]),
        )
        .unwrap();
        assert_eq!(p.as_f32().unwrap(), &[8.0, 27.0]);
    }

    #[test]
    fn incompatible_shapes_are_an_error() {
        let a = Tensor::f32(vec![2], vec![0.0; 2]);
        let b = Tensor::f32(vec![3], vec![0.0; 3]);
        let e = binary(BinaryOp::Add, &a, &b).unwrap_err();
        assert!(e.contains("f32[2]") && e.contains("f32[3]"), "{e}");
    }

    #[test]
    fn where_broadcasts_three_ways() {
        let c = Tensor::bool(vec![2, 1], vec![true, false]);
        let x = Tensor::i64(vec![3], vec![1, 2, 3]);
        let y = Tensor::i64(vec![], vec![0]);
        let w = where_select(&c, &x, &y).unwrap();
        assert_eq!(w.shape, vec![2, 3]);
        assert_eq!(w.as_i64().unwrap(), &[1, 2, 3, 0, 0, 0]);
        // f32 branches go through the blocked (program) path: the same selection.
        let xf = Tensor::f32(vec![3], vec![1.0, 2.0, 3.0]);
        let yf = Tensor::f32(vec![2, 1, 1], vec![-1.0, -2.0]);
        let w = where_select(&c, &xf, &yf).unwrap();
        assert_eq!(w.shape, vec![2, 2, 3]);
        let want = [
            1.0, 2.0, 3.0, -1.0, -1.0, -1.0, 1.0, 2.0, 3.0, -2.0, -2.0, -2.0,
        ];
        assert_eq!(w.as_f32().unwrap(), &want);
    }
}
