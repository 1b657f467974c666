//! An official ONNX backend node case (`.cache/onnx-conformance/node/CASE`, written by
//! scripts/setup.sh) imported at its inputs' shapes, partitioned with its outputs pinned,
//! run on CPU devices and compared with the case's expected outputs.
use super::{max_abs_diff, root};
use onnx_protobuf::{Message, ModelProto, TensorProto};
use std::collections::BTreeMap;
use tessera_compiler::onnx::{decode_tensor_proto, import_model, ImportOptions};
use tessera_compiler::partition::{partition, PartitionOptions};
use tessera_ir::Tensor;
use tessera_runtime::exec::{run_plan, RunOptions};
use tessera_runtime::weights::WeightStore;

fn pb(path: &std::path::Path) -> (String, Tensor) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let t = TensorProto::parse_from_bytes(&bytes).unwrap();
    let name = t.name.clone();
    (name.clone(), decode_tensor_proto(&t, &name).unwrap())
}

/// One official backend case: its model, imported at its inputs' shapes, the inputs, the
/// expected outputs and the weight store; `None` when the cases are not generated.
pub struct Case {
    pub model: ModelProto,
    pub imported: tessera_compiler::onnx::ImportedModel,
    pub inputs: BTreeMap<String, Tensor>,
    pub want: Vec<Tensor>,
    pub store: WeightStore,
}

pub fn load_case(case: &str) -> Option<Case> {
    let dir = root().join(".cache/onnx-conformance/node");
    if !dir.is_dir() {
        eprintln!(
            "SKIP: {} not generated (run scripts/setup.sh)",
            dir.display()
        );
        return None;
    }
    let d = dir.join(case);
    let path = d.join("model.onnx");
    let model = ModelProto::parse_from_bytes(&std::fs::read(&path).unwrap()).unwrap();
    let mut inputs = BTreeMap::new();
    for k in 0.. {
        let p = d.join(format!("test_data_set_0/input_{k}.pb"));
        if !p.exists() {
            break;
        }
        let (_, t) = pb(&p);
        inputs.insert(model.graph.input[k].name.clone(), t);
    }
    let want = (0..model.graph.output.len())
        .map(|k| pb(&d.join(format!("test_data_set_0/output_{k}.pb"))).1)
        .collect();
    let shapes = inputs
        .iter()
        .map(|(n, t)| (n.clone(), t.shape.clone()))
        .collect();
    let imported = import_model(
        &path,
        &ImportOptions {
            input_shapes: shapes,
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("{case}: {e}"));
    let store = WeightStore::open(&path).unwrap();
    Some(Case {
        model,
        imported,
        inputs,
        want,
        store,
    })
}

impl Case {
    /// The plan for `n` devices with every graph output pinned `Split(axis(rank))`.
    pub fn plan(
        &self,
        name: &str,
        n: usize,
        axis: impl Fn(usize) -> usize,
    ) -> tessera_ir::plan::Plan {
        let mut opts = PartitionOptions::new(n);
        if n > 1 {
            for o in &self.model.graph.output {
                let rank = self
                    .imported
                    .graph
                    .tensors
                    .iter()
                    .find(|t| t.name == o.name)
                    .map_or(4, |t| t.shape.len());
                opts.pins
                    .insert(o.name.clone(), tessera_ir::Layout::Split(axis(rank)));
            }
        }
        partition(&self.imported.graph, &opts)
            .unwrap_or_else(|e| panic!("{name} on {n}: {e}"))
            .plan
    }

    /// Runs `plan` on CPU devices and compares every output with the case's.
    pub fn check(&self, name: &str, plan: &tessera_ir::plan::Plan) {
        let n = plan.ranks.len();
        let (got, _) = run_plan(plan, &self.store, &self.inputs, &RunOptions::default())
            .unwrap_or_else(|e| panic!("{name} on {n}: {e}"));
        assert_eq!(got.len(), self.want.len(), "{name}");
        for (k, (g, w)) in got.iter().zip(&self.want).enumerate() {
            let diff = max_abs_diff(g, w);
            eprintln!("{name} N={n} output {k}: max abs {diff:.2e}");
            assert!(
                diff < 1e-5,
                "{name} on {n} devices: output {k} differs by {diff}"
            );
        }
    }
}
