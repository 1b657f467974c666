//! The Pareto fronts of the frontier DP's states: dominance on insertion and the size cap.
use super::dp::Partial;
use std::collections::BTreeSet;

/// Partial solutions kept per DP state (the Pareto front of (cost, bytes) under a budget):
/// past this many, [`truncate`] keeps the `FRONT_CAP / 2` cheapest and spreads the rest
/// evenly over the others down to the one with fewest bytes. A step truncates a front as it
/// grows past twice this, and every front down to this at the step's end; the exact pass
/// records what it dropped in `DpRun::dropped`, so the plan's lower bound and gap stay
/// proven (docs/partitioner.md).
pub const FRONT_CAP: usize = 64;

/// Truncates `front` to [`FRONT_CAP`] partials; returns the least cost dropped (infinite
/// when nothing was).
pub(super) fn truncate(front: &mut Vec<Partial>) -> f64 {
    if front.len() <= FRONT_CAP {
        return f64::INFINITY;
    }
    front.sort_by(|a, b| a.cost.total_cmp(&b.cost).then(a.mem.total_cmp(&b.mem)));
    let half = FRONT_CAP / 2;
    let (rest, spread) = (front.len() - half, FRONT_CAP - half);
    // Evenly spaced over the rest, the last (fewest bytes) included; distinct as rest > spread.
    let keep: BTreeSet<usize> = (0..spread)
        .map(|j| half + (j + 1) * rest / spread - 1)
        .collect();
    let mut least = f64::INFINITY;
    let mut i = 0;
    front.retain(|x| {
        let kept = i < half || keep.contains(&i);
        if !kept {
            least = least.min(x.cost);
        }
        i += 1;
        kept
    });
    least
}

/// Keeps the Pareto front of (cost, mem); without a budget only the cheapest.
pub(super) fn insert(front: &mut Vec<Partial>, cand: Partial, budgeted: bool) {
    if !budgeted {
        if front.first().is_none_or(|f| cand.cost < f.cost) {
            *front = vec![cand];
        }
        return;
    }
    if front
        .iter()
        .any(|f| f.cost <= cand.cost && f.mem <= cand.mem)
    {
        return;
    }
    front.retain(|f| !(cand.cost <= f.cost && cand.mem <= f.mem));
    front.push(cand);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(cost: f64, mem: f64) -> Partial {
        Partial {
            cost,
            mem,
            link: super::super::dp::NO_LINK,
        }
    }

    #[test]
    fn dominated_partials_never_join_a_budgeted_front() {
        let mut f = vec![];
        insert(&mut f, part(2.0, 2.0), true);
        insert(&mut f, part(3.0, 3.0), true);
        insert(&mut f, part(1.0, 5.0), true);
        insert(&mut f, part(0.5, 1.0), true);
        assert_eq!(f.len(), 1);
        assert_eq!((f[0].cost, f[0].mem), (0.5, 1.0));
    }

    #[test]
    fn truncation_keeps_the_cheapest_and_the_fewest_bytes_and_reports_the_least_dropped() {
        let n = 3 * FRONT_CAP;
        // A Pareto front: cost rises as bytes fall.
        let mut f: Vec<Partial> = (0..n)
            .rev()
            .map(|i| part(i as f64, (n - i) as f64))
            .collect();
        let least = truncate(&mut f);
        assert_eq!(f.len(), FRONT_CAP);
        let costs: Vec<f64> = f.iter().map(|x| x.cost).collect();
        for (i, c) in costs.iter().take(FRONT_CAP / 2).enumerate() {
            assert_eq!(*c, i as f64, "the cheapest half is kept in order");
        }
        assert_eq!(*costs.last().unwrap(), (n - 1) as f64, "fewest bytes kept");
        assert_eq!(least, (FRONT_CAP / 2) as f64, "the first partial dropped");
        let mut small = vec![part(1.0, 1.0)];
        assert_eq!(truncate(&mut small), f64::INFINITY);
    }
}
