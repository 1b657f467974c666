//! ONNX import, in named phases:
//!
//! 1. [`parse`]: bytes → `ModelProto` (a truncated or non-ONNX file is a one-line error);
//!    an up-front scan lists *every* unsupported op / opset / domain in one error;
//! 2. [`walk`]: `fold` + `infer` in one topological walk — constant subgraphs (shape
//!    arithmetic) are evaluated with the runtime kernels, everything else becomes IR ops with
//!    static attributes and inferred shapes;
//! 3. [`validate`]: structural checks, a type re-check and dead-node removal.
//!
//! Initializers stored as `raw_data` become [`WeightData::File`] references (byte offset
//! inside the `.onnx` file, found by walking the wire format in [`offsets`]); nothing is
//! copied. External-data initializers reference their file; typed-field initializers and
//! folded constants are inline.
mod error;
mod hoist;
mod inputs;
mod masks;
mod offsets;
pub mod ops;
mod parse;
mod report;
mod tensor_proto;
mod validate;
mod walk;
mod wire_guard;

pub use error::{ImportError, UnsupportedOp};
pub use inputs::parse_shape_spec;
pub use report::ImportReport;
pub use tensor_proto::decode as decode_tensor_proto;

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use tessera_ir::{numel, Graph, WeightData};

/// Lowest supported default-domain opset.
pub const MIN_OPSET: i64 = 13;
/// Highest default-domain opset any op is accepted at: the latest opset of onnx 1.23.2,
/// against whose schema history the registry was checked. Opsets 13..=23 are supported for
/// every op; above 23 an op is accepted up to its registry entry's `until` (see
/// [`ops::supported_ops`]).
pub const MAX_OPSET: i64 = 28;
/// Initializers with at most this many elements are decoded so that nodes reading them can
/// be folded; larger ones stay file references only.
pub const FOLD_MAX_ELEMS: usize = 1 << 16;
/// A step whose inputs are all constant is folded only when its outputs have at most this
/// many elements (shape arithmetic is tiny; bigger results are computed at run time).
pub const FOLD_MAX_OUTPUT_ELEMS: usize = 1 << 13;

/// Import options.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Static shapes for graph inputs (fixes dynamic dims), by input name.
    pub input_shapes: BTreeMap<String, Vec<usize>>,
    /// The canonicalisation phase (on by default, built-in rules).
    pub canon: CanonConfig,
}

/// Configuration of the canonicalisation phase ([`crate::canon`]).
#[derive(Debug, Clone)]
pub struct CanonConfig {
    /// Run it (default true).
    pub enabled: bool,
    /// Rules added to the built-in table (a user's `--rules FILE`).
    pub extra_rules: Vec<crate::canon::CanonRule>,
    /// Saturation limits.
    pub limits: crate::canon::CanonLimits,
}

impl Default for CanonConfig {
    fn default() -> Self {
        CanonConfig {
            enabled: true,
            extra_rules: vec![],
            limits: crate::canon::CanonLimits::default(),
        }
    }
}

/// The result of an import.
#[derive(Debug, Clone)]
pub struct ImportedModel {
    /// The statically shaped IR graph.
    pub graph: Graph,
    /// What the import found and did.
    pub report: ImportReport,
}

/// Imports the ONNX model at `path` (a regular file: a FIFO, device or directory is
/// refused before it is opened). File-backed weights refer to the model by its file name
/// (relative to the model's directory). External data must lie inside the model's folder:
/// a location that is absolute, has a `..` component, leaves the folder through a link,
/// is missing or is not a regular file is an [`ImportError::ExternalData`].
pub fn import_model(path: &Path, opts: &ImportOptions) -> Result<ImportedModel, ImportError> {
    let shown = path.display().to_string();
    let bytes = tessera_ir::files::read_regular(path).map_err(|e| match e {
        tessera_ir::files::FileError::NotRegular { kind, .. } => ImportError::Io {
            file: shown.clone(),
            source: std::io::Error::other(format!("not a regular file (it is a {kind})")),
        },
        tessera_ir::files::FileError::Io { source, .. } => ImportError::Io {
            file: shown.clone(),
            source,
        },
    })?;
    let file_name = path
        .file_name()
        .map_or(shown, |f| f.to_string_lossy().into_owned());
    import(&bytes, &file_name, Some(path), opts)
}

/// Imports a model held in memory. `file_name` names it in errors and is the path recorded
/// in [`WeightData::File`] for `raw_data` initializers. External-data locations must be
/// relative without `..` (there is no folder to resolve them in: [`import_model`] checks
/// the files too).
pub fn import_bytes(
    bytes: &[u8],
    file_name: &str,
    opts: &ImportOptions,
) -> Result<ImportedModel, ImportError> {
    import(bytes, file_name, None, opts)
}

/// [`import_bytes`] for the model at `model_path` when it is on disk.
fn import(
    bytes: &[u8],
    file_name: &str,
    model_path: Option<&Path>,
    opts: &ImportOptions,
) -> Result<ImportedModel, ImportError> {
    let parsed = parse::parse(bytes, file_name)?;
    let model = &parsed.model;
    let graph_proto = model.graph.as_ref().ok_or_else(|| ImportError::Parse {
        file: file_name.into(),
        msg: "no graph".into(),
    })?;
    let opset = parsed.opsets.get("").copied().unwrap_or(0);
    let unsupported = find_unsupported(&graph_proto.node, &parsed.opsets);
    if !unsupported.is_empty() {
        return Err(ImportError::Unsupported {
            file: file_name.into(),
            ops: unsupported,
        });
    }
    let spans = offsets::raw_data_offsets(bytes).map_err(|e| ImportError::Parse {
        file: file_name.into(),
        msg: format!("locating raw_data failed: {e}"),
    })?;

    let used: HashSet<String> = graph_proto
        .node
        .iter()
        .flat_map(|n| n.input.iter())
        .chain(graph_proto.output.iter().map(|o| &o.name))
        .filter(|n| !n.is_empty())
        .cloned()
        .collect();
    let mut walker = walk::Walker::new(parsed.opsets.clone(), used);
    let mut initializer_names = HashSet::new();
    let mut mask_candidates = BTreeMap::new();
    for t in &graph_proto.initializer {
        let weight = tensor_proto::initializer_weight(
            t,
            file_name,
            model_path,
            spans.get(&t.name).copied(),
        )?;
        let small = numel(&weight.shape) <= FOLD_MAX_ELEMS && !tensor_proto::is_external(t);
        let konst = match &weight.data {
            WeightData::Inline { tensor } => Some(tensor.clone()),
            WeightData::File { .. } if small => Some(tensor_proto::decode(t, &t.name)?),
            WeightData::File { .. } => None,
        };
        // A stored causal mask over FOLD_MAX_ELEMS (GPT-2's 1024-position buffers): decoded
        // for the `masks` phase only, never folded.
        if konst.is_none() && masks::may_be_mask(&weight.shape, weight.dtype) {
            if let Ok(v) = tensor_proto::decode(t, &t.name) {
                mask_candidates.insert(t.name.clone(), v);
            }
        }
        if !initializer_names.insert(t.name.clone()) {
            return Err(ImportError::tensor(
                &t.name,
                "two initializers have this name (ONNX names each value once)",
            ));
        }
        walker.add_initializer(weight, konst);
    }
    let graph_inputs: Vec<_> = graph_proto
        .input
        .iter()
        .filter(|vi| !initializer_names.contains(&vi.name))
        .collect();
    for name in opts.input_shapes.keys() {
        if !graph_inputs.iter().any(|vi| &vi.name == name) {
            let inputs = graph_inputs
                .iter()
                .map(|vi| vi.name.as_str())
                .collect::<Vec<_>>()
                .join(", ");
            return Err(ImportError::UnknownInput {
                name: name.clone(),
                inputs,
            });
        }
    }
    let mut input_names = HashSet::new();
    for vi in &graph_inputs {
        if !input_names.insert(&vi.name) {
            return Err(ImportError::tensor(
                &vi.name,
                "two graph inputs have this name (ONNX names each value once)",
            ));
        }
        let (dtype, shape) = inputs::resolve_input(vi, opts.input_shapes.get(&vi.name))?;
        walker.add_input(&vi.name, dtype, shape);
    }
    for (i, node) in graph_proto.node.iter().enumerate() {
        walker.run_node(i, node)?;
    }
    let outputs: Vec<String> = graph_proto.output.iter().map(|o| o.name.clone()).collect();
    walker.set_outputs(&outputs)?;

    let folded = walker.folded;
    let mut consts = std::mem::take(&mut walker.consts);
    let mut graph = walker.graph;
    masks::compute_causal_masks(&mut graph, &mut consts, mask_candidates);
    let emitted = graph.nodes.len();
    let dead = validate::validate(&mut graph, file_name)?;
    let canon = if opts.canon.enabled {
        let mut rules = crate::canon::builtin();
        rules.extend(opts.canon.extra_rules.iter().cloned());
        let (canonical, canon) =
            crate::canon::canonicalize(&graph, &consts, &rules, &opts.canon.limits);
        graph = canonical;
        canon
    } else {
        crate::canon::CanonReport::default()
    };
    hoist::hoist_invariants(&mut graph);

    let mut op_histogram = BTreeMap::new();
    for n in &graph_proto.node {
        let key = match parse::canonical_domain(&n.domain) {
            "" => n.op_type.clone(),
            d => format!("{d}.{}", n.op_type),
        };
        *op_histogram.entry(key).or_insert(0) += 1;
    }
    let report = ImportReport {
        ir_version: model.ir_version,
        opset,
        opsets: parsed.opsets.clone(),
        producer: format!("{} {}", model.producer_name, model.producer_version)
            .trim()
            .to_string(),
        onnx_nodes: graph_proto.node.len(),
        op_histogram,
        folded_nodes: folded,
        emitted_nodes: emitted,
        dead_nodes_removed: dead,
        final_nodes: graph.nodes.len(),
        parameter_count: graph.weights.values().map(|w| numel(&w.shape)).sum(),
        parameter_bytes: graph.weight_bytes(),
        unsupported: vec![],
        canon,
    };
    Ok(ImportedModel { graph, report })
}

/// Every node whose (domain, op type, opset) the importer cannot convert.
fn find_unsupported(
    nodes: &[onnx_protobuf::NodeProto],
    opsets: &BTreeMap<String, i64>,
) -> Vec<UnsupportedOp> {
    let mut out = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        let domain = parse::canonical_domain(&n.domain);
        let opset = opsets.get(domain).copied().unwrap_or(0);
        let ok = (!domain.is_empty() || (MIN_OPSET..=MAX_OPSET).contains(&opset))
            && ops::lookup(domain, &n.op_type, opset).is_some();
        if !ok {
            out.push(UnsupportedOp {
                domain: n.domain.clone(),
                op_type: n.op_type.clone(),
                opset,
                node: if n.name.is_empty() {
                    format!("{}_{i}", n.op_type)
                } else {
                    n.name.clone()
                },
            });
        }
    }
    out
}
