//! Trilu: keep the upper or lower triangle of the last two axes.
use super::{describe, make, map_storage, KResult};
use tessera_ir::Tensor;

/// Zeroes elements outside the triangle: upper keeps `j - i >= k`, lower keeps `j - i <= k`.
pub(crate) fn trilu(upper: bool, k: i64, x: &Tensor) -> KResult<Tensor> {
    let r = x.shape.len();
    if r < 2 {
        return Err(format!("expects rank >= 2, got {}", describe(x)));
    }
    let (rows, cols) = (x.shape[r - 2], x.shape[r - 1]);
    let keep = |flat: usize| {
        let (i, j) = (
            ((flat / cols.max(1)) % rows.max(1)) as i64,
            (flat % cols.max(1)) as i64,
        );
        if upper {
            j - i >= k
        } else {
            j - i <= k
        }
    };
    let data = map_storage!(&x.data, v => v
        .iter()
        .enumerate()
        .map(|(f, &e)| if keep(f) { e } else { Default::default() })
        .collect());
    make(x.dtype, x.shape.clone(), data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upper_and_lower_with_offsets() {
        let x = Tensor::i64(vec![3, 3], (1..=9).collect());
        assert_eq!(
            trilu(true, 0, &x).unwrap().as_i64().unwrap(),
            &[1, 2, 3, 0, 5, 6, 0, 0, 9]
        );
        assert_eq!(
            trilu(false, 0, &x).unwrap().as_i64().unwrap(),
            &[1, 0, 0, 4, 5, 0, 7, 8, 9]
        );
        assert_eq!(
            trilu(true, 1, &x).unwrap().as_i64().unwrap(),
            &[0, 2, 3, 0, 0, 6, 0, 0, 0]
        );
        assert_eq!(
            trilu(false, -1, &x).unwrap().as_i64().unwrap(),
            &[0, 0, 0, 4, 0, 0, 7, 8, 0]
        );
    }

    #[test]
    fn batched_non_square() {
        let x = Tensor::f32(vec![2, 2, 3], vec![1.0; 12]);
        let y = trilu(false, 0, &x).unwrap();
        let one_batch = [1.0, 0.0, 0.0, 1.0, 1.0, 0.0];
        assert_eq!(&y.as_f32().unwrap()[..6], &one_batch);
        assert_eq!(&y.as_f32().unwrap()[6..], &one_batch);
    }
}
