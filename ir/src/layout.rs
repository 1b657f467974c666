//! Layouts of a tensor over a 1-D device mesh.
use serde::{Deserialize, Serialize};

/// How a logical tensor is held by the devices of a (1-D) mesh.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Layout {
    /// Every device holds the whole tensor.
    #[serde(rename = "R")]
    Replicated,
    /// Device `r` holds the `r`-th of N equal chunks along the axis.
    #[serde(rename = "S")]
    Split(usize),
    /// Every device holds a full-shape addend; the logical tensor is their sum.
    #[serde(rename = "P")]
    Partial,
}

impl Layout {
    /// Local shape of a tensor of logical `shape` under this layout on `n` devices, or `None`
    /// when the split axis is out of range or not divisible by `n`.
    pub fn local_shape(self, shape: &[usize], n: usize) -> Option<Vec<usize>> {
        match self {
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

impl std::fmt::Display for Layout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Layout::Replicated => f.write_str("R"),
            Layout::Split(a) => write!(f, "S({a})"),
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
                let inner = t
                    .strip_prefix("S(")
                    .or_else(|| t.strip_prefix("s("))
                    .and_then(|x| x.strip_suffix(')'))
                    .ok_or_else(|| format!("layout '{s}': expected R, P or S(axis)"))?;
                inner
                    .parse::<usize>()
                    .map(Layout::Split)
                    .map_err(|_| format!("layout '{s}': axis '{inner}' is not a number"))
            }
        }
    }
}
