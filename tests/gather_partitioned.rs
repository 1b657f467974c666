//! GatherND and GatherElements partitioned (`gather-nd-split`, `gather-elements-split`):
//! official backend cases compiled for 2 devices with their outputs pinned split, run on
//! CPU devices and compared with the cases' expected outputs.
mod common;

use common::backend_case::load_case;
use tessera_ir::plan::StepKind;
use tessera_ir::{Op, Tensor};

/// The local shapes of the inputs of rank 0's step computing `want` (a GatherND or
/// GatherElements).
fn gather_inputs(plan: &tessera_ir::plan::Plan) -> Vec<Vec<usize>> {
    plan.ranks[0]
        .steps
        .iter()
        .find_map(|s| match &s.kind {
            StepKind::Compute {
                op: Op::GatherNd(_) | Op::GatherElements(_),
                ..
            } => Some(
                s.inputs
                    .iter()
                    .map(|v| plan.values[v.index()].shape.clone())
                    .collect(),
            ),
            _ => None,
        })
        .expect("a gather step")
}

fn shape(t: &Tensor) -> Vec<usize> {
    t.shape.clone()
}

#[test]
fn gathers_split_on_their_leading_axis_match_the_official_outputs() {
    // (case, the input each rank holds half of on axis 0: 0 data and indices both, 1 the
    // indices alone)
    let cases = [
        // batch_dims 0: the indices' leading axis splits, the data stays whole.
        ("test_gathernd_example_float32", false),
        ("test_gathernd_example_int32", false),
        // batch_dims 1: the batch splits data and indices.
        ("test_gathernd_example_int32_batch_dim1", true),
        // GatherElements along axis 1: axis 0 splits data and indices.
        ("test_gather_elements_0", true),
        // Along axis 0, its own: the indices split, the data stays whole.
        ("test_gather_elements_negative_indices", false),
    ];
    for (name, data_split) in cases {
        let Some(case) = load_case(name) else { return };
        let plan = case.plan(name, 2, |_| 0);
        let names: Vec<&String> = case.model.graph.input.iter().map(|i| &i.name).collect();
        let (data, idx) = (shape(&case.inputs[names[0]]), shape(&case.inputs[names[1]]));
        let half = |mut s: Vec<usize>| {
            s[0] /= 2;
            s
        };
        let want = vec![if data_split { half(data) } else { data }, half(idx)];
        assert_eq!(gather_inputs(&plan), want, "{name}: rank 0's operands");
        case.check(name, &plan);
    }
}
