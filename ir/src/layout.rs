//! Layouts of a tensor over a 1-D device mesh.
use serde::{Deserialize, Serialize};

/// How a logical tensor is held by the devices of a (1-D) mesh.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Layout {
    /// Every device holds the whole tensor.
    #[serde(rename = "R")]
    Replicated,
    /// Device `r` holds the `r`-th of N chunks along the axis: equal chunks when they
    /// divide, else the ragged chunks of [`split_bounds`] (the plan records each rank's shape).
    #[serde(rename = "S")]
    Split(usize),
    /// Grouped-query key/value heads on more ranks than heads (Megatron's KV-head
    /// replication): the axis is cut in as many equal blocks as the model has key/value
    /// heads, and each rank holds the block its query heads read (so several ranks hold the
    /// same block). Which block a rank holds is the compiler's to say; the plan records
    /// every rank's shape and weight slices.
    #[serde(rename = "B")]
    Block(usize),
    /// Every device holds a full-shape addend; the logical tensor is their sum.
    #[serde(rename = "P")]
    Partial,
}

impl Layout {
    /// Local shape of a tensor of logical `shape` under this layout on `n` devices, or `None`
    /// when the split axis is out of range or not divisible by `n`.
    pub fn local_shape(self, shape: &[usize], n: usize) -> Option<Vec<usize>> {
        match self {
            // The block count is the model's, not N.
            Layout::Block(_) => None,
            Layout::Replicated | Layout::Partial => Some(shape.to_vec()),
            Layout::Split(axis) => {
                let d = *shape.get(axis)?;
                if n == 0 || d % n != 0 {
                    return None;
                }
                let mut s = shape.to_vec();
                s[axis] = d / n;
                Some(s)
            }
        }
    }
}

/// The ranges `[start, end)` of `extent` that `n` ranks hold when it is split in blocks of
/// `grain` elements: equal chunks when the block count divides by `n`, else balanced ragged
/// chunks whose first ranks hold one block more (12 heads on 8 ranks: 2,2,2,2,1,1,1,1).
/// `None` when `grain` does not divide `extent` or some rank would get no block.
pub fn split_bounds(extent: usize, grain: usize, n: usize) -> Option<Vec<(usize, usize)>> {
    if n == 0 || grain == 0 || !extent.is_multiple_of(grain) {
        return None;
    }
    let blocks = extent / grain;
    if blocks < n {
        return None;
    }
    let (base, extra) = (blocks / n, blocks % n);
    let mut start = 0;
    Some(
        (0..n)
            .map(|r| {
                let len = (base + usize::from(r < extra)) * grain;
                let range = (start, start + len);
                start += len;
                range
            })
            .collect(),
    )
}

impl std::fmt::Display for Layout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Layout::Replicated => f.write_str("R"),
            Layout::Split(a) => write!(f, "S({a})"),
            Layout::Block(a) => write!(f, "B({a})"),
            Layout::Partial => f.write_str("P"),
        }
    }
}

impl std::str::FromStr for Layout {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        match t {
            "R" | "r" => Ok(Layout::Replicated),
            "P" | "p" => Ok(Layout::Partial),
            _ => {
                let (make, inner): (fn(usize) -> Layout, _) =
                    if let Some(x) = t.strip_prefix("S(").or_else(|| t.strip_prefix("s(")) {
                        (Layout::Split, x)
                    } else if let Some(x) = t.strip_prefix("B(").or_else(|| t.strip_prefix("b(")) {
                        (Layout::Block, x)
                    } else {
                        return Err(format!("layout '{s}': expected R, P, S(axis) or B(axis)"));
                    };
                let inner = inner
                    .strip_suffix(')')
                    .ok_or_else(|| format!("layout '{s}': expected R, P, S(axis) or B(axis)"))?;
                inner
                    .parse::<usize>()
                    .map(make)
                    .map_err(|_| format!("layout '{s}': axis '{inner}' is not a number"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::split_bounds;

    #[test]
    fn even_and_ragged_bounds() {
        assert_eq!(
            split_bounds(8, 1, 4),
            Some(vec![(0, 2), (2, 4), (4, 6), (6, 8)])
        );
        // 12 heads of 64 on 8 ranks: 2,2,2,2,1,1,1,1 heads.
        let b = split_bounds(768, 64, 8).unwrap();
        let lens: Vec<usize> = b.iter().map(|(s, e)| e - s).collect();
        assert_eq!(lens, [128, 128, 128, 128, 64, 64, 64, 64]);
        assert_eq!(b.last(), Some(&(704, 768)));
        // 1024 on 3 ranks by elements.
        assert_eq!(
            split_bounds(1024, 1, 3),
            Some(vec![(0, 342), (342, 683), (683, 1024)])
        );
        // Fewer blocks than ranks, a grain that does not divide, no ranks.
        assert_eq!(split_bounds(256, 64, 8), None);
        assert_eq!(split_bounds(100, 64, 2), None);
        assert_eq!(split_bounds(8, 1, 0), None);
    }
}
