//! Opening a plan file for a run: read it ([`Plan::read`]: format version first), check its
//! structure ([`validate_plan`]), verify its source model and weight files against the
//! sha256 recorded at compile time ([`Plan::verify`]) and open the weights.
use super::error::ExecError;
use super::validate::validate_plan;
use crate::weights::WeightStore;
use std::path::Path;
use tessera_ir::plan::Plan;

/// A plan ready to run: checked, with its verified weights opened.
#[derive(Debug)]
pub struct LoadedPlan {
    /// The plan.
    pub plan: Plan,
    /// Its weights: only the files the verification checked.
    pub store: WeightStore,
}

/// Reads, validates and verifies the plan at `plan_path`. `model` overrides the recorded
/// source model path; its hash (and every weight file's, looked for beside it) must still
/// match what the plan records.
pub fn open_plan(plan_path: &Path, model: Option<&Path>) -> Result<LoadedPlan, ExecError> {
    let plan = Plan::read(plan_path)?;
    validate_plan(&plan)?;
    let files = plan.verify_files(plan_path, model)?;
    // The store reads only the weight files verify_files hashed.
    let store = WeightStore::verified(&files);
    Ok(LoadedPlan { plan, store })
}
