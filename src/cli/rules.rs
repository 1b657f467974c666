//! `tessera rules`: print the canonicalisation rule table (built-in, plus a user's file), or
//! with `--distribution` the partitioner's distribution rule table.
use anyhow::{Context, Result};
use clap::Args;
use std::path::{Path, PathBuf};
use tessera_compiler::canon::{builtin, parse_rules, rules_markdown, rules_text, CanonRule};

/// Arguments of `tessera rules`.
#[derive(Debug, Args)]
pub struct RulesArgs {
    /// Also read the rules of FILE (the format `tessera rules` prints) and print them after
    /// the built-in ones (checks the file).
    #[arg(long, value_name = "FILE")]
    rules: Option<PathBuf>,
    /// Print a Markdown table instead of the rules-file format.
    #[arg(long)]
    markdown: bool,
    /// Print the distribution rules (how each op may run on N devices, the partitioner's
    /// table) instead of the canonicalisation rules.
    #[arg(long, conflicts_with = "rules")]
    distribution: bool,
}

/// The built-in rules plus those of `file`.
pub fn load_rules(file: Option<&PathBuf>) -> Result<Vec<CanonRule>> {
    let mut rules = builtin();
    if let Some(f) = file {
        rules.extend(user_rules(f.as_path())?);
    }
    Ok(rules)
}

/// The rules of a user's rules file, checked (names must not repeat built-in ones).
pub fn user_rules(f: &Path) -> Result<Vec<CanonRule>> {
    let bytes = tessera_ir::files::read_regular(f)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("reading rules file {}", f.display()))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| anyhow::anyhow!("rules file {} is not UTF-8", f.display()))?;
    let rules = parse_rules(&text, &f.display().to_string())?;
    let built: Vec<String> = builtin().into_iter().map(|r| r.name).collect();
    if let Some(r) = rules.iter().find(|r| built.contains(&r.name)) {
        anyhow::bail!(
            "{}: rule '{}' is already a built-in rule (choose another name)",
            f.display(),
            r.name
        );
    }
    Ok(rules)
}

/// Runs `tessera rules`.
pub fn run(args: RulesArgs) -> Result<()> {
    if args.distribution {
        use tessera_compiler::partition::rules::dsl;
        let table = dsl::table();
        if args.markdown {
            print!("{}", dsl::table_markdown(table));
        } else {
            print!("{}", dsl::table_text(table));
        }
        return Ok(());
    }
    let rules = load_rules(args.rules.as_ref())?;
    if args.markdown {
        print!("{}", rules_markdown(&rules));
    } else {
        print!("{}", rules_text(&rules));
    }
    Ok(())
}
