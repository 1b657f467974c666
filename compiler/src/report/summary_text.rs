//! Text rendering of a [`PlanReport`]: the tables `tessera inspect PLAN.json` prints.
use super::format::{human_bytes, human_count, joined};
use super::summary::PlanReport;
use std::fmt::Write;

/// Renders the report as aligned text tables.
pub(crate) fn render(r: &PlanReport) -> String {
    let mut s = String::new();
    // Writing to a String cannot fail; the results are ignored below for that reason.
    let _ = writeln!(s, "plan of {}", r.source);
    let mesh = joined(&r.mesh, "x");
    let layers = match r.layers {
        None => "repeated layers: none found".to_string(),
        Some(n) if r.layers_differ => format!("layers: {n} blocks that differ"),
        Some(n) => format!("repeated layers: {n}"),
    };
    let _ = writeln!(
        s,
        "  devices {} (mesh {mesh}), cost model {}, objective {}, {} nodes, {layers}",
        r.devices, r.cost_model, r.objective, r.nodes
    );
    let steps = joined(&r.steps_per_rank, ", ");
    let _ = writeln!(s, "  steps per rank: {steps}");

    let _ = writeln!(s, "\nper rank");
    let _ = writeln!(
        s,
        "  {:>4}  {:>12}  {:>16}  {:>10}",
        "rank", "params", "peak activations", "FLOPs"
    );
    for row in &r.per_rank {
        let _ = writeln!(
            s,
            "  {:>4}  {:>12}  {:>16}  {:>10}",
            row.rank,
            human_bytes(row.param_bytes),
            human_bytes(row.peak_activation_bytes),
            human_count(row.flops)
        );
    }

    s += &super::mesh::render(&r.groups, r.data_axis.as_ref());

    let _ = writeln!(s, "\ncollectives");
    let _ = writeln!(s, "  {:<16}  {:>6}  {:>12}", "kind", "count", "bytes");
    for (kind, t) in &r.totals {
        let _ = writeln!(
            s,
            "  {:<16}  {:>6}  {:>12}",
            kind,
            t.count,
            human_bytes(t.bytes)
        );
    }
    let count: u64 = r.totals.values().map(|t| t.count).sum();
    let _ = writeln!(
        s,
        "  {:<16}  {:>6}  {:>12}",
        "total",
        count,
        human_bytes(r.total_bytes)
    );
    let ratio = if r.lower_bound_bytes > 0 {
        format!(
            "{:.2}× the lower bound",
            r.total_bytes as f64 / r.lower_bound_bytes as f64
        )
    } else if r.total_bytes == 0 {
        "no communication".to_string()
    } else {
        "lower bound is 0".to_string()
    };
    let _ = writeln!(
        s,
        "  lower bound {} → {ratio}",
        human_bytes(r.lower_bound_bytes)
    );
    if let Some(m) = &r.megatron {
        let ratio = if m.ring_bytes_per_rank > 0 {
            format!(
                " ({:.2}×)",
                m.plan_ring_bytes_per_rank as f64 / m.ring_bytes_per_rank as f64
            )
        } else {
            String::new()
        };
        let _ = writeln!(
            s,
            "  Megatron-style plan: {} all_reduce + {} all_gather, {}; ring bytes per rank: this plan {}, Megatron {}{ratio}",
            m.all_reduces,
            m.all_gathers,
            human_bytes(m.logical_bytes),
            human_bytes(m.plan_ring_bytes_per_rank),
            human_bytes(m.ring_bytes_per_rank)
        );
    }

    if !r.per_layer.is_empty() {
        let _ = writeln!(s, "\ncollectives per layer");
        for l in &r.per_layer {
            let name = l
                .layer
                .map_or("outside layers".to_string(), |i| format!("layer {i}"));
            let kinds = joined(
                l.by_kind.iter().map(|(k, t)| format!("{} {k}", t.count)),
                ", ",
            );
            let _ = writeln!(s, "  {name:<16}  {kinds:<40}  {:>12}", human_bytes(l.bytes));
        }
    }

    let q = &r.search;
    let _ = writeln!(s, "\nsearch");
    let _ = writeln!(
        s,
        "  {} e-classes, {} e-nodes, {} iterations, stopped: {}",
        q.eclasses, q.enodes, q.iterations, q.stop_reason
    );
    if !q.stop_reason.is_saturated() {
        let _ = writeln!(s, "  limits per segment: {}", q.limits);
    }
    let ms = |v: Option<f64>| {
        v.map_or("unknown (no timings file)".to_string(), |v| {
            format!("{v:.1} ms")
        })
    };
    let _ = writeln!(
        s,
        "  extractor {}, cost {:.3e} s, lower bound {:.3e} s, gap {:.2}%",
        q.extractor,
        q.cost,
        q.lower_bound,
        q.gap * 100.0
    );
    let _ = writeln!(
        s,
        "  extraction {}, compile {}",
        ms(q.extract_ms),
        ms(r.compile_ms)
    );

    if !r.matmul_choices.is_empty() {
        let _ = writeln!(s, "\nmatmul choices (partitioner)");
        for (k, v) in &r.matmul_choices {
            let _ = writeln!(s, "  {k:<24} {v}");
        }
    }
    let _ = writeln!(s, "\nlayouts by op (inputs -> outputs)");
    for (op, sigs) in &r.op_choices {
        for (sig, n) in sigs {
            let _ = writeln!(s, "  {op:<14} {sig:<44} {n:>5}");
        }
    }
    if !r.notes.is_empty() {
        let _ = writeln!(s, "\nnotes");
        for n in &r.notes {
            let _ = writeln!(s, "  {n}");
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use crate::report::fixtures::{assert_contains_all, mlp_stack_plan};
    use crate::report::PlanReport;

    #[test]
    fn text_has_every_section_with_real_numbers() {
        let text = PlanReport::new(&mlp_stack_plan(2, 2), None).to_text();
        assert_contains_all(&text, &["devices 2", "repeated layers: 2"]);
        // 2 all-reduces of a 4×64 f32 tensor = 2 KiB.
        assert!(
            text.lines()
                .any(|l| l.contains("all_reduce") && l.contains(" 2 ") && l.contains("2.00 KiB")),
            "{text}"
        );
        assert_contains_all(
            &text,
            &[
                "1.00× the lower bound",
                "layer 1",
                "column-split",
                "unknown (no timings file)",
            ],
        );
    }
}
