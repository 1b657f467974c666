//! Sliding-window geometry shared by convolution, transposed convolution and pooling.
//!
//! Along every spatial axis a "driving" index `b` (an output position for Conv and pooling,
//! an input position for ConvTranspose) meets the "other" tensor at `a = b·stride +
//! k·dilation − pad` for kernel offset `k`. The kernels walk the driving tensor row by row
//! (a row: every spatial axis but the last fixed) so the innermost loop runs along the last
//! axis over contiguous memory, with the valid range of `b` computed once per row.

/// The geometry of one window op over `spatial` axes.
pub(crate) struct Window {
    /// Extents of the driving tensor's spatial axes.
    pub drive: Vec<usize>,
    /// Extents of the other tensor's spatial axes.
    pub other: Vec<usize>,
    /// Kernel extents.
    pub kernel: Vec<usize>,
    /// Strides.
    pub strides: Vec<usize>,
    /// Dilations.
    pub dilations: Vec<usize>,
    /// Begin pads.
    pub pads: Vec<usize>,
}

impl Window {
    /// Elements in one spatial plane of the driving tensor.
    pub fn drive_plane(&self) -> usize {
        self.drive.iter().product()
    }

    /// Elements in one spatial plane of the other tensor.
    pub fn other_plane(&self) -> usize {
        self.other.iter().product()
    }

    /// Kernel positions (the product of the kernel extents).
    pub fn kernel_len(&self) -> usize {
        self.kernel.iter().product()
    }

    /// The multi-index of kernel position `kp` (row-major over the kernel extents).
    pub fn kernel_index(&self, mut kp: usize) -> Vec<usize> {
        let mut idx = vec![0; self.kernel.len()];
        for a in (0..self.kernel.len()).rev() {
            idx[a] = kp % self.kernel[a];
            kp /= self.kernel[a];
        }
        idx
    }

    /// The half-open range of `b` along the last axis whose `a` lies inside the other
    /// tensor, for kernel offset `k` on that axis, and the `a` of its first element.
    pub fn inner_range(&self, k: usize) -> (usize, usize, usize) {
        let l = self.drive.len() - 1;
        inner_range(
            self.drive[l],
            self.other[l],
            self.strides[l],
            k * self.dilations[l],
            self.pads[l],
        )
    }

    /// Calls `f(row, other_row)` for every row of the driving plane at kernel position
    /// `kidx`: `row` is the offset of the row's first element in the driving plane,
    /// `other_row` the offset of the matching row in the other plane (None when it lies
    /// in the padding).
    pub fn rows(&self, kidx: &[usize], mut f: impl FnMut(usize, Option<usize>)) {
        let l = self.drive.len() - 1;
        let row_len = self.drive[l];
        let nrows: usize = self.drive[..l].iter().product();
        // Strides of the other plane's axes.
        let mut ostride = vec![1usize; l + 1];
        for a in (0..l).rev() {
            ostride[a] = ostride[a + 1] * self.other[a + 1];
        }
        let mut idx = vec![0usize; l];
        for row in 0..nrows {
            let mut off = Some(0usize);
            for a in 0..l {
                let pos = idx[a] * self.strides[a] + kidx[a] * self.dilations[a];
                off = match (off, pos.checked_sub(self.pads[a])) {
                    (Some(o), Some(i)) if i < self.other[a] => Some(o + i * ostride[a]),
                    _ => None,
                };
            }
            f(row * row_len, off);
            for a in (0..l).rev() {
                idx[a] += 1;
                if idx[a] < self.drive[a] {
                    break;
                }
                idx[a] = 0;
            }
        }
    }
}

/// The half-open range `lo..hi` of `b < drive` with `0 <= b·stride + koff − pad < other`,
/// and `b·stride + koff − pad` at `b = lo`.
fn inner_range(
    drive: usize,
    other: usize,
    stride: usize,
    koff: usize,
    pad: usize,
) -> (usize, usize, usize) {
    // b·stride >= pad − koff
    let lo = pad.saturating_sub(koff).div_ceil(stride);
    // b·stride + koff − pad <= other − 1  ⇔  b·stride <= other − 1 + pad − koff
    let hi = match (other + pad).checked_sub(koff + 1) {
        Some(v) => (v / stride + 1).min(drive),
        None => 0,
    };
    let lo = lo.min(hi);
    (lo, hi, (lo * stride + koff).saturating_sub(pad))
}

#[cfg(test)]
mod tests {
    use super::inner_range;

    #[test]
    fn inner_range_matches_brute_force() {
        for drive in 1..6 {
            for other in 1..7 {
                for stride in 1..4 {
                    for koff in 0..5 {
                        for pad in 0..4 {
                            let valid: Vec<usize> = (0..drive)
                                .filter(|b| {
                                    let a = (b * stride + koff) as i64 - pad as i64;
                                    a >= 0 && a < other as i64
                                })
                                .collect();
                            let (lo, hi, a0) = inner_range(drive, other, stride, koff, pad);
                            assert_eq!((lo..hi).collect::<Vec<_>>(), valid);
                            if lo < hi {
                                assert_eq!(a0, lo * stride + koff - pad);
                            }
                        }
                    }
                }
            }
        }
    }
}
