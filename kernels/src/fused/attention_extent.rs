//! How many keys each query row of a fused attention can see: the keys after a row's last
//! unmasked key get a probability of exactly zero, so the kernel neither scores them nor
//! multiplies them into V. Causal masks hide about half of every head this way.
//!
//! A key is masked when the mask makes its score `-∞` (a boolean mask whose fill is `-∞` or
//! whose condition adds `-∞`), or adds or selects at most [`MASKED`] (the exporters' `finfo
//! (float32).min`): with an unmasked key in the row, whose score is finite, the masked
//! key's `e^(z − max)` underflows to exactly 0. A row with no unmasked key keeps all its
//! keys (its softmax is the spelling's own: zeros, NaN or uniform).
use super::attention_mask::Mask;

/// A mask value (added, or selected as the fill) at or below which a key is masked.
pub(super) const MASKED: f32 = -1e30;

/// Query rows scored together when keys are skipped: a block reads the keys up to its
/// rows' furthest extent. A causal `[1, 4, 128, 16]` head-major attention with 2 key-value
/// heads, one thread: 105 µs unblocked, 84.5 in blocks of 16 rows, 80 in blocks of 32; at
/// 512 queries 1255, 936 and 867 µs.
pub(super) const ROW_BLOCK: usize = 32;

/// Keys a block's extent is rounded up to (the softmax's lane width: its sums then add the
/// same lanes in the same order as over the whole row).
const KEY_ROUND: usize = 16;

/// One past the last unmasked key of the row whose mask starts at `mo` (0 when every key
/// is masked), over `sk` keys.
fn row_end(mask: Mask<'_>, mo: usize, sk: usize) -> usize {
    match mask {
        Mask::None => sk,
        Mask::Bias(cond, ms) => last_kept(cond, mo, ms[3], sk, |&k| k),
        Mask::Select(cond, ms, fill) if fill <= MASKED => last_kept(cond, mo, ms[3], sk, |&k| k),
        Mask::Select(..) => sk,
        Mask::Add(m, ms) => last_kept(m, mo, ms[3], sk, |&v| v > MASKED),
    }
}

/// One past the last of `sk` mask entries (from `mo`, `stride` apart) that `kept` holds for,
/// or 0. A contiguous row is searched from its end sixteen entries at a time (a test of a
/// whole chunk vectorises; a causal row's masked tail is half the row on average).
fn last_kept<T>(m: &[T], mo: usize, stride: usize, sk: usize, kept: impl Fn(&T) -> bool) -> usize {
    if stride != 1 {
        return (0..sk)
            .rev()
            .find(|&j| kept(&m[mo + j * stride]))
            .map_or(0, |j| j + 1);
    }
    let row = &m[mo..mo + sk];
    let mut end = sk;
    for chunk in row.rchunks(16) {
        // A fold, not `any`: without its early exit the test vectorises.
        if chunk.iter().fold(false, |any, v| any | kept(v)) {
            // Some: the chunk holds a kept entry.
            let at = chunk.iter().rposition(&kept).unwrap_or(0);
            return end - chunk.len() + at + 1;
        }
        end -= chunk.len();
    }
    0
}

/// Per query row of one head (the mask's rows from `base`, `row_stride` apart), the keys
/// it reads: into `ends`, each the row's [`row_end`] (when `causal`, at most its own
/// position + 1), or `sk` for a row with every key masked. Returns false when every row
/// reads every key (nothing to skip).
pub(super) fn row_ends(
    mask: Mask<'_>,
    base: usize,
    row_stride: usize,
    sk: usize,
    causal: bool,
    ends: &mut [usize],
) -> bool {
    let mut skips = false;
    for (i, e) in ends.iter_mut().enumerate() {
        let own = if causal { i + 1 } else { sk };
        let end = match row_end(mask, base + i * row_stride, sk).min(own) {
            0 => sk,
            end => end,
        };
        skips |= end < sk;
        *e = end;
    }
    skips
}

/// The keys a block of rows reads: its rows' furthest extent, rounded up to whole lanes.
pub(super) fn block_keys(ends: &[usize], sk: usize) -> usize {
    let far = ends.iter().copied().max().unwrap_or(sk);
    far.next_multiple_of(KEY_ROUND).min(sk)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causal_rows_end_after_their_diagonal() {
        let s = 40;
        let cond: Vec<bool> = (0..s * s).map(|x| x % s <= x / s).collect();
        let ms = [0, 0, s, 1];
        let mut ends = vec![0; s];
        assert!(row_ends(Mask::Bias(&cond, ms), 0, s, s, false, &mut ends));
        assert_eq!(ends, (1..=s).collect::<Vec<_>>());
        assert_eq!(block_keys(&ends[..16], s), 16);
        assert_eq!(block_keys(&ends[16..32], s), 32);
        assert_eq!(block_keys(&ends[32..], s), 40);
        // The same causal mask as an additive one, with finfo.min and with -1e4 (which
        // leaves probabilities above zero: nothing is skipped).
        let add = |v: f32| -> Vec<f32> { cond.iter().map(|&k| if k { 0.0 } else { v }).collect() };
        let min = add(f32::MIN);
        assert!(row_ends(Mask::Add(&min, ms), 0, s, s, false, &mut ends));
        assert_eq!(ends[3], 4);
        let soft = add(-1e4);
        assert!(!row_ends(Mask::Add(&soft, ms), 0, s, s, false, &mut ends));
        // A select with a finite fill above MASKED keeps every key.
        assert!(!row_ends(
            Mask::Select(&cond, ms, -1e4),
            0,
            s,
            s,
            false,
            &mut ends
        ));
        assert!(row_ends(
            Mask::Select(&cond, ms, f32::NEG_INFINITY),
            0,
            s,
            s,
            false,
            &mut ends
        ));
    }

    #[test]
    fn fully_masked_rows_keep_every_key() {
        let s = 8;
        let mut cond = vec![true; s * s];
        cond[3 * s..4 * s].fill(false);
        cond[5..s].fill(false);
        let mut ends = vec![0; s];
        assert!(row_ends(
            Mask::Bias(&cond, [0, 0, s, 1]),
            0,
            s,
            s,
            false,
            &mut ends
        ));
        assert_eq!(ends, vec![5, 8, 8, 8, 8, 8, 8, 8]);
        // A mask broadcast along the keys: a row is all kept or all masked.
        let row = [true, false, true];
        assert!(!row_ends(
            Mask::Bias(&row, [0, 0, 1, 0]),
            0,
            1,
            4,
            false,
            &mut ends[..3]
        ));
        assert_eq!(&ends[..3], &[4, 4, 4]);
        // Causal without a mask: row i reads keys 0..=i.
        assert!(row_ends(Mask::None, 0, 0, 5, true, &mut ends[..5]));
        assert_eq!(&ends[..5], &[1, 2, 3, 4, 5]);
    }
}
