//! The masks of the fused attention kernel (`attention.rs`): a mask input resolved to its
//! data and strides over `[B, H, Sq, Sk]`, and the pass that scales and masks one row of
//! scores as the unfused `Div`/`Mul` and `Add`/`Where` compute it.
use crate::index::broadcast_strides4;
use crate::{describe, KResult};
use tessera_ir::Tensor;

/// A resolved attention mask: data and strides over `[B, H, Sq, Sk]`.
#[derive(Clone, Copy)]
pub(super) enum Mask<'a> {
    None,
    Add(&'a [f32], [usize; 4]),
    Select(&'a [bool], [usize; 4], f32),
    Bias(&'a [bool], [usize; 4]),
}

/// Strides of `mask` broadcast to `[B, H, Sq, Sk]` (right-aligned, numpy rules). A 3-D
/// mask `[B·H, a, b]` with B > 1 (an exporter that computes the scores as `[B·H, Sq, Sk]`,
/// e.g. BLOOM's ALiBi bias) is read as `[B, H, a, b]`: right-aligned it could not
/// broadcast.
pub(super) fn mask_strides(mask: &Tensor, full: [usize; 4]) -> KResult<[usize; 4]> {
    let flat_heads = match mask.shape[..] {
        [bh, a, b] if full[0] > 1 && bh == full[0] * full[1] => Some([full[0], full[1], a, b]),
        _ => None,
    };
    broadcast_strides4(
        flat_heads.as_ref().map_or(&mask.shape[..], |s| &s[..]),
        full,
    )
    .ok_or_else(|| format!("mask {} does not broadcast to {full:?}", describe(mask)))
}

pub(super) fn bools<'a>(t: &'a Tensor, what: &str) -> KResult<&'a [bool]> {
    t.as_bool()
        .ok_or_else(|| format!("{what} must be bool, got {}", describe(t)))
}

/// Masks one row of scaled scores in place (`scale` maps a raw score to the scaled one) and
/// says whether the mask is −∞ at every key (ONNX Attention's "fully masked").
#[inline(always)]
pub(super) fn mask_row(row: &mut [f32], mask: Mask, mo: usize, scale: impl Fn(f32) -> f32) -> bool {
    let sk = row.len();
    match mask {
        Mask::None => {
            for s in row.iter_mut() {
                *s = scale(*s);
            }
            false
        }
        Mask::Add(m, ms) => {
            if ms[3] == 1 {
                for (s, &e) in row.iter_mut().zip(&m[mo..mo + sk]) {
                    *s = scale(*s) + e;
                }
            } else {
                for (j, s) in row.iter_mut().enumerate() {
                    *s = scale(*s) + m[mo + j * ms[3]];
                }
            }
            (0..sk).all(|j| m[mo + j * ms[3]] == f32::NEG_INFINITY)
        }
        Mask::Select(cond, ms, fill) if ms[3] == 1 => {
            // Contiguous condition row: a branch-free select that vectorises.
            for (s, &keep) in row.iter_mut().zip(&cond[mo..mo + sk]) {
                let z = scale(*s);
                *s = if keep { z } else { fill };
            }
            fill == f32::NEG_INFINITY && !cond[mo..mo + sk].contains(&true)
        }
        Mask::Select(cond, ms, fill) => {
            for (j, s) in row.iter_mut().enumerate() {
                *s = if cond[mo + j * ms[3]] {
                    scale(*s)
                } else {
                    fill
                };
            }
            fill == f32::NEG_INFINITY && (0..sk).all(|j| !cond[mo + j * ms[3]])
        }
        Mask::Bias(cond, ms) if ms[3] == 1 => {
            let keep = &cond[mo..mo + sk];
            for (s, &k) in row.iter_mut().zip(keep) {
                let z = scale(*s);
                *s = z + if k { 0.0 } else { f32::NEG_INFINITY };
            }
            !keep.contains(&true)
        }
        Mask::Bias(cond, ms) => {
            let mut all = true;
            for (j, s) in row.iter_mut().enumerate() {
                let keep = cond[mo + j * ms[3]];
                all &= !keep;
                *s = scale(*s) + if keep { 0.0 } else { f32::NEG_INFINITY };
            }
            all
        }
    }
}
