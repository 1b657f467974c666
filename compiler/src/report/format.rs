//! Small formatting helpers shared by the DOT and text reports.

/// Formats a byte count with a binary unit (`512 B`, `4.0 KiB`, `1.50 MiB`, `2.00 GiB`).
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if value < 10.0 {
        format!("{value:.2} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Formats a count with a metric suffix (`950`, `12.3k`, `4.56M`, `7.89G`).
pub fn human_count(n: u64) -> String {
    const UNITS: [(&str, f64); 4] = [("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)];
    for (suffix, scale) in UNITS {
        if n as f64 >= scale {
            return format!("{:.2}{suffix}", n as f64 / scale);
        }
    }
    n.to_string()
}

/// Formats a shape as `4×64` (`scalar` for rank 0).
pub fn shape(dims: &[usize]) -> String {
    if dims.is_empty() {
        return "scalar".into();
    }
    joined(dims, "×")
}

/// Displays each item and joins them with `sep`.
pub fn joined<T: std::fmt::Display>(items: impl IntoIterator<Item = T>, sep: &str) -> String {
    items
        .into_iter()
        .map(|item| item.to_string())
        .collect::<Vec<_>>()
        .join(sep)
}

/// Escapes a string for use inside a double-quoted DOT string (`\n` in `s` becomes a line
/// break; quotes and backslashes are escaped).
pub fn dot_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => {}
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_use_binary_units() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(4096), "4.00 KiB");
        assert_eq!(human_bytes(3 * 1024 * 1024 / 2), "1.50 MiB");
        assert_eq!(human_bytes(100 * 1024 * 1024 * 1024), "100.0 GiB");
    }

    #[test]
    fn counts_use_metric_suffixes() {
        assert_eq!(human_count(950), "950");
        assert_eq!(human_count(12_300), "12.30k");
        assert_eq!(human_count(4_560_000_000), "4.56G");
    }

    #[test]
    fn shapes_and_escapes() {
        assert_eq!(shape(&[4, 64]), "4×64");
        assert_eq!(shape(&[]), "scalar");
        assert_eq!(dot_escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
