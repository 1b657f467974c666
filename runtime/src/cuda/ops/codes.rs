//! Op codes shared with the kernels (`runtime/kernels/elementwise.cu`, `reduce.cu`).
//! Keep in sync with the `switch` statements there.
use tessera_ir::op::{BinaryOp, ReduceKind, UnaryOp};

/// Arithmetic code of `binary_f32` / `binary_i64`, or `None` for comparisons and logic.
pub fn arithmetic(op: BinaryOp) -> Option<i32> {
    Some(match op {
        BinaryOp::Add => 0,
        BinaryOp::Sub => 1,
        BinaryOp::Mul => 2,
        BinaryOp::Div => 3,
        BinaryOp::Pow => 4,
        BinaryOp::Max => 5,
        BinaryOp::Min => 6,
        BinaryOp::Mod { fmod: true } => 7,
        BinaryOp::Mod { fmod: false } => 8,
        _ => return None,
    })
}

/// Code of `compare_f32` / `compare_i64`.
pub fn comparison(op: BinaryOp) -> Option<i32> {
    Some(match op {
        BinaryOp::Equal => 0,
        BinaryOp::Less => 1,
        BinaryOp::LessOrEqual => 2,
        BinaryOp::Greater => 3,
        BinaryOp::GreaterOrEqual => 4,
        _ => return None,
    })
}

/// Code of `logical_u8` (bool operands).
pub fn logical(op: BinaryOp) -> Option<i32> {
    Some(match op {
        BinaryOp::And => 0,
        BinaryOp::Or => 1,
        BinaryOp::Xor => 2,
        BinaryOp::Equal => 3,
        _ => return None,
    })
}

/// Code of `unary_f32`, or `None` for Not / IsNaN (their own kernels).
pub fn unary_float(op: UnaryOp) -> Option<i32> {
    Some(match op {
        UnaryOp::Identity => 0,
        UnaryOp::Neg => 1,
        UnaryOp::Abs => 2,
        UnaryOp::Sqrt => 3,
        UnaryOp::Reciprocal => 4,
        UnaryOp::Exp => 5,
        UnaryOp::Log => 6,
        UnaryOp::Erf => 7,
        UnaryOp::Tanh => 8,
        UnaryOp::Sigmoid => 9,
        UnaryOp::Relu => 10,
        UnaryOp::Floor => 11,
        UnaryOp::Ceil => 12,
        UnaryOp::Round => 13,
        UnaryOp::Sin => 14,
        UnaryOp::Cos => 15,
        UnaryOp::Sign => 16,
        UnaryOp::Softplus => 17,
        UnaryOp::Silu => 18,
        UnaryOp::Tan => 19,
        UnaryOp::Asin => 20,
        UnaryOp::Acos => 21,
        UnaryOp::Atan => 22,
        UnaryOp::Sinh => 23,
        UnaryOp::Cosh => 24,
        UnaryOp::Asinh => 25,
        UnaryOp::Acosh => 26,
        UnaryOp::Atanh => 27,
        UnaryOp::Not | UnaryOp::IsNaN => return None,
    })
}

/// Code of `unary_i64` (the integer subset), or `None`.
pub fn unary_int(op: UnaryOp) -> Option<i32> {
    match op {
        UnaryOp::Identity | UnaryOp::Neg | UnaryOp::Abs | UnaryOp::Sign => unary_float(op),
        _ => None,
    }
}

/// Code of `reduce_rows_f32`.
pub fn reduce(kind: ReduceKind) -> i32 {
    match kind {
        ReduceKind::Sum => 0,
        ReduceKind::Mean => 1,
        ReduceKind::Max => 2,
        ReduceKind::Min => 3,
        ReduceKind::Prod => 4,
        ReduceKind::SumSquare => 5,
        ReduceKind::L2 => 6,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Extracts `case N: return EXPR;` lines of a kernel switch so that codes can be
    /// checked against the C text.
    fn case_line(src: &str, func: &str, code: i32) -> String {
        let body = src.split(func).nth(1).unwrap();
        body.lines()
            .find(|l| l.trim_start().starts_with(&format!("case {code}:")))
            .unwrap()
            .trim()
            .to_string()
    }

    #[test]
    fn float_codes_match_the_kernel_switch() {
        let src = super::super::super::source::ELEMENTWISE.source;
        let expect = [
            (UnaryOp::Sqrt, "sqrtf(x)"),
            (UnaryOp::Erf, "erff(x)"),
            (UnaryOp::Round, "rintf(x)"),
            (UnaryOp::Silu, "x / (1.0f + expf(-x))"),
            (UnaryOp::Relu, "x > 0.0f ? x : 0.0f"),
            (UnaryOp::Tan, "tanf(x)"),
            (UnaryOp::Asin, "asinf(x)"),
            (UnaryOp::Acos, "acosf(x)"),
            (UnaryOp::Atan, "atanf(x)"),
            (UnaryOp::Sinh, "sinhf(x)"),
            (UnaryOp::Cosh, "coshf(x)"),
            (UnaryOp::Asinh, "asinhf(x)"),
            (UnaryOp::Acosh, "acoshf(x)"),
            (UnaryOp::Atanh, "atanhf(x)"),
        ];
        let bin = [
            (BinaryOp::Sub, "a - b"),
            (BinaryOp::Pow, "powf(a, b)"),
            (BinaryOp::Mod { fmod: true }, "fmodf(a, b)"),
        ];
        let unary_fn = "ts_unary_f32(int op, float x)";
        let binary_fn = "ts_binary_f32(int op, float a, float b)";
        let cases = expect
            .iter()
            .map(|(op, text)| (format!("{op:?}"), unary_fn, unary_float(*op), *text))
            .chain(
                bin.iter()
                    .map(|(op, text)| (format!("{op:?}"), binary_fn, arithmetic(*op), *text)),
            );
        for (op, function, code, text) in cases {
            let line = case_line(src, function, code.unwrap());
            assert!(line.contains(text), "{op}: {line}");
        }
        assert!(case_line(
            src,
            "ts_compare(int op, double a, double b)",
            comparison(BinaryOp::LessOrEqual).unwrap()
        )
        .contains("a <= b"));
        assert_eq!(arithmetic(BinaryOp::Less), None);
        assert_eq!(unary_int(UnaryOp::Exp), None);
        assert_eq!(unary_int(UnaryOp::Sign), Some(16));
    }

    #[test]
    fn reduce_codes_are_distinct() {
        let kinds = [
            ReduceKind::Sum,
            ReduceKind::Mean,
            ReduceKind::Max,
            ReduceKind::Min,
            ReduceKind::Prod,
            ReduceKind::SumSquare,
            ReduceKind::L2,
        ];
        let mut codes: Vec<i32> = kinds.iter().map(|k| reduce(*k)).collect();
        codes.dedup();
        assert_eq!(codes, (0..7).collect::<Vec<_>>());
    }
}
