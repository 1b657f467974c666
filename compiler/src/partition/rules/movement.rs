//! Where a split survives a Reshape (the table's `reshape-axis`).

/// Output axis a split of input axis `a` survives to through a reshape, if any: the leading
/// element counts agree and either `a` merges into the outer factor of output axis b, or
/// output axis b is the outer factor of `a`, both at least N (a ragged split is then
/// checked rank by rank, see `partition::ragged::consistent`).
pub fn reshape_split_axis(input: &[usize], output: &[usize], a: usize, n: usize) -> Option<usize> {
    let prefix: usize = input[..a].iter().product();
    let d = input[a];
    (0..output.len()).find(|&b| {
        let e = output[b];
        if output[..b].iter().product::<usize>() != prefix || e < n || d < n || e == 0 {
            return false;
        }
        // a is the outer factor of b: e = d · in[a+1..a+1+k]
        let merges = reaches_product(d, &input[a + 1..], e);
        // b is the outer factor of a: d = e · out[b+1..b+1+k]
        let splits = reaches_product(e, &output[b + 1..], d);
        merges || splits
    })
}

/// Whether `start` times some prefix of `dims` (possibly empty) equals `target`.
fn reaches_product(start: usize, dims: &[usize], target: usize) -> bool {
    let mut acc = start;
    let mut hit = acc == target;
    for &x in dims {
        if hit || acc > target {
            break;
        }
        acc *= x;
        hit = acc == target;
    }
    hit
}
