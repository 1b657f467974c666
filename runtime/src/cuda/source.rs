//! The CUDA C kernel sources (`runtime/kernels/*.cu`), embedded at build time and compiled
//! with NVRTC at run time, and the NVRTC options used.
//!
//! Each module is `common.cuh` followed by the module's `.cu` text (NVRTC is given no
//! include paths, so the shared header is prepended as text).

/// Shared header prepended to every module.
pub const COMMON: &str = include_str!("../../kernels/common.cuh");

/// One kernel module: a `.cu` file and the `extern "C"` kernels it defines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelModule {
    /// File name under `runtime/kernels/`.
    pub file: &'static str,
    /// The `.cu` text.
    pub source: &'static str,
    /// Kernel entry points loaded from it.
    pub functions: &'static [&'static str],
}

/// Declares a kernel module: its file under `runtime/kernels/` (embedded with
/// `include_str!`) and the kernels it defines.
macro_rules! kernel_module {
    ($(#[$doc:meta])* $name:ident, $file:literal, [$($f:literal),* $(,)?]) => {
        $(#[$doc])*
        pub const $name: KernelModule = KernelModule {
            file: $file,
            source: include_str!(concat!("../../kernels/", $file)),
            functions: &[$($f),*],
        };
    };
}

impl KernelModule {
    /// The full text handed to NVRTC: the common header, then the module.
    pub fn full_source(&self) -> String {
        format!("{COMMON}\n// ---- {} ----\n{}", self.file, self.source)
    }
}

kernel_module!(
/// Elementwise kernels.
ELEMENTWISE, "elementwise.cu", [
        "binary_f32",
        "binary_i64",
        "compare_f32",
        "compare_i64",
        "logical_u8",
        "unary_f32",
        "unary_i64",
        "not_u8",
        "isnan_f32",
        "gelu_f32",
        "clip_f32",
        "scale_f32",
        "add_f32",
        "add_i64",
        "where_b1",
        "where_b4",
        "where_b8",
        "cast_f32_i64",
        "cast_i64_f32",
        "cast_f32_u8",
        "cast_u8_f32",
        "cast_i64_u8",
        "cast_u8_i64",
        "wrap_i64",
        "round_f32",
    ]
);

kernel_module!(
/// Softmax, LayerNorm, RMSNorm.
NORM, "norm.cu", ["softmax_f32", "layernorm_f32", "rmsnorm_f32"]
);

kernel_module!(
/// Reductions and CumSum.
REDUCE, "reduce.cu", ["reduce_rows_f32", "cumsum_f32"]
);

kernel_module!(
/// Strided copies, Gather, Trilu.
MOVEMENT, "movement.cu", [
        "strided_copy_b1",
        "strided_copy_b4",
        "strided_copy_b8",
        "gather_b1",
        "gather_b4",
        "gather_b8",
        "trilu_b1",
        "trilu_b4",
        "trilu_b8",
    ]
);

/// All modules, in load order.
pub const MODULES: [KernelModule; 4] = [ELEMENTWISE, NORM, REDUCE, MOVEMENT];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_kernel_is_defined_once_as_extern_c() {
        let mut total = 0;
        for m in MODULES {
            let text = m.full_source();
            for f in m.functions {
                // Direct definitions, or instantiations of a defining macro such as
                // `TS_WHERE(where_b4, ...)` / `TS_CAST(cast_f32_i64, ...)`.
                let direct = text.matches(&format!("__global__ void {f}(")).count();
                let via_macro = text
                    .lines()
                    .filter(|l| l.starts_with("TS_") && l.contains(&format!("({f},")))
                    .count();
                assert_eq!(
                    direct + via_macro,
                    1,
                    "{}: kernel {f} defined {} times",
                    m.file,
                    direct + via_macro
                );
                total += 1;
            }
            assert!(
                text.contains("struct StridedMeta") && text.contains("ts_block_reduce"),
                "{}: header missing",
                m.file
            );
        }
        assert_eq!(total, 39);
    }

    #[test]
    fn kernels_use_no_includes() {
        for m in MODULES {
            assert!(
                !m.full_source().contains("#include"),
                "{} includes a header NVRTC may not find",
                m.file
            );
        }
    }
}
