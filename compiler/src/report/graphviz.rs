//! Rendering DOT through Graphviz's `dot` binary.
use super::ReportError;
use std::io::Write;
use std::process::{Command, Stdio};

/// Renders DOT source to SVG with `dot -Tsvg` (found on `PATH`).
pub fn render_svg(dot: &str) -> Result<String, ReportError> {
    let mut child = match Command::new("dot")
        .arg("-Tsvg")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ReportError::GraphvizMissing)
        }
        Err(e) => return Err(ReportError::GraphvizFailed(e.to_string())),
    };
    // Feed stdin from a thread so a large graph cannot deadlock against a full stdout pipe.
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| ReportError::GraphvizFailed("no stdin pipe".into()))?;
    let input = dot.to_owned();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child
        .wait_with_output()
        .map_err(|e| ReportError::GraphvizFailed(e.to_string()))?;
    let written = writer
        .join()
        .map_err(|_| ReportError::GraphvizFailed("writer thread panicked".into()))?;
    if !out.status.success() {
        let msg = String::from_utf8_lossy(&out.stderr);
        let first = msg.lines().next().unwrap_or("no message");
        return Err(ReportError::GraphvizFailed(format!(
            "{} ({first})",
            out.status
        )));
    }
    written.map_err(|e| ReportError::GraphvizFailed(format!("writing DOT: {e}")))?;
    String::from_utf8(out.stdout)
        .map_err(|e| ReportError::GraphvizFailed(format!("output is not UTF-8: {e}")))
}

/// True when Graphviz's `dot` can be run.
pub fn graphviz_available() -> bool {
    Command::new("dot")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixtures::mlp_stack_plan;
    use crate::report::{plan_to_dot, PlanDotOptions};

    #[test]
    fn plan_dot_renders_to_svg_when_graphviz_is_installed() {
        if !graphviz_available() {
            eprintln!("skipped: Graphviz 'dot' is not installed");
            return;
        }
        let plan = mlp_stack_plan(3, 2);
        let dot = plan_to_dot(&plan, &PlanDotOptions::default()).unwrap();
        let svg = render_svg(&dot).unwrap();
        assert!(svg.contains("<svg"), "{svg}");
        assert!(svg.contains("all_reduce"));
        let bad = render_svg("digraph { a -> }").unwrap_err();
        assert!(
            bad.to_string().starts_with("Graphviz 'dot' failed"),
            "{bad}"
        );
    }
}
