//! Runs the real CUDA C kernel sources on the CPU: a small shim header maps the CUDA
//! built-ins (`threadIdx`, `__syncthreads`, `__shared__`, ...) onto C++20 threads and a
//! barrier, one thread per CUDA thread and blocks one after another, and a driver checks
//! each kernel's results against straightforward loops. The index metadata comes from the
//! Rust builders, so Rust/C struct agreement is exercised too. This is the only execution
//! of the kernels available without a GPU; it needs a C++20 compiler (`c++`) and skips
//! (printing why) when there is none.
#![cfg(feature = "cuda")]
use std::fmt::Write as _;
use std::process::Command;
use tessera_runtime::cuda::meta::{BcastMeta, StridedMeta};
use tessera_runtime::cuda::source::{COMMON, MODULES};

const SHIM: &str = r#"
#include <math.h>
#include <string.h>
#include <stdio.h>
#include <barrier>
#include <thread>
#include <vector>
struct ts_dim3 { unsigned x, y, z; };
static thread_local ts_dim3 threadIdx, blockIdx;
static ts_dim3 blockDim, gridDim;
static std::barrier<>* ts_bar;
#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static
static inline void __syncthreads() { ts_bar->arrive_and_wait(); }
static inline unsigned __float_as_uint(float f) { unsigned u; memcpy(&u, &f, 4); return u; }
static inline float __uint_as_float(unsigned u) { float f; memcpy(&f, &u, 4); return f; }
template <class F> void ts_launch(unsigned grid, unsigned block, F f) {
    gridDim = {grid, 1, 1};
    blockDim = {block, 1, 1};
    for (unsigned b = 0; b < grid; ++b) {
        std::barrier<> bar(block);
        ts_bar = &bar;
        std::vector<std::thread> ts;
        for (unsigned t = 0; t < block; ++t)
            ts.emplace_back([&, b, t] { blockIdx = {b, 0, 0}; threadIdx = {t, 0, 0}; f(); });
        for (auto& th : ts) th.join();
    }
}
static int ts_fail = 0, ts_ok = 0;
static void check(const char* name, bool good) {
    printf("%s %s\n", good ? "OK" : "FAIL", name);
    if (good) ++ts_ok; else ++ts_fail;
}
static bool close(const float* a, const float* b, int n, float tol) {
    for (int i = 0; i < n; ++i) if (!(a[i] == b[i] || fabsf(a[i] - b[i]) <= tol)) { printf("  at %d: %.9g vs %.9g\n", i, a[i], b[i]); return false; }
    return true;
}
"#;

/// The elements of a C array initializer.
fn arr(a: &[i64]) -> String {
    a.iter()
        .map(|v| v.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// The leading fields `ndim, n, {shape}` that every meta initializer starts with.
fn head(ndim: i64, n: i64, shape: &[i64]) -> String {
    format!("{ndim}, {n}, {{{}}}", arr(shape))
}

/// C initializer of a StridedMeta.
fn strided(m: &StridedMeta) -> String {
    format!(
        "StridedMeta{{{}, {{{}}}, {{{}}}, {}, {}}}",
        head(m.ndim, m.n, &m.shape),
        arr(&m.in_stride),
        arr(&m.out_stride),
        m.in_offset,
        m.out_offset
    )
}

/// C initializer of a BcastMeta.
fn bcast(m: &BcastMeta) -> String {
    format!(
        "BcastMeta{{{}, {{{{{}}}, {{{}}}, {{{}}}}}}}",
        head(m.ndim, m.n, &m.shape),
        arr(&m.stride[0]),
        arr(&m.stride[1]),
        arr(&m.stride[2])
    )
}

fn driver() -> String {
    let transpose = StridedMeta::permute(&[2, 3, 4], &[2, 0, 1]).unwrap();
    let (slice, _) = StridedMeta::slice(&[4, 5], &[0, 1], &[1, 4], &[4, -1], &[2, -2]).unwrap();
    let add = BcastMeta::new(&[2, 3], &[&[2, 3], &[3]]).unwrap();
    let sel = BcastMeta::new(&[2, 3], &[&[3], &[2, 3], &[1]]).unwrap();
    let mut s = String::new();
    let _ = write!(
        s,
        r#"
int main() {{
    {{ // transpose [2,3,4] -> perm [2,0,1]
        float x[24], y[24]; for (int i = 0; i < 24; ++i) x[i] = (float)i;
        StridedMeta m = {transpose};
        ts_launch(2, 8, [&] {{ strided_copy_b4(m, (const unsigned*)x, (unsigned*)y); }});
        bool good = true;
        for (int c = 0; c < 4; ++c) for (int a = 0; a < 2; ++a) for (int b = 0; b < 3; ++b)
            good &= y[c * 6 + a * 3 + b] == x[a * 12 + b * 4 + c];
        check("strided_copy_b4 transpose", good);
    }}
    {{ // slice rows 1..4 step 2, cols 4..-1 step -2 of [4,5]
        float x[20], y[6]; for (int i = 0; i < 20; ++i) x[i] = (float)i;
        StridedMeta m = {slice};
        ts_launch(1, 32, [&] {{ strided_copy_b4(m, (const unsigned*)x, (unsigned*)y); }});
        float want[6] = {{9, 7, 5, 19, 17, 15}};
        check("strided_copy_b4 slice", close(y, want, 6, 0));
    }}
    {{ // broadcast add and python mod
        float a[6] = {{1, 2, 3, 4, 5, 6}}, b[3] = {{10, -20, 30}}, y[6], z[6];
        BcastMeta m = {add};
        ts_launch(1, 32, [&] {{ binary_f32(0, m, a, b, y); binary_f32(8, m, a, b, z); }});
        float want[6] = {{11, -18, 33, 14, -15, 36}};
        float wmod[6] = {{1, -18, 3, 4, -15, 6}};
        check("binary_f32 add broadcast", close(y, want, 6, 0) && close(z, wmod, 6, 1e-6f));
    }}
    {{ // where with 3-way broadcast
        unsigned char c[3] = {{1, 0, 1}}; float x[6] = {{1, 2, 3, 4, 5, 6}}, yv[1] = {{-1}}, o[6];
        BcastMeta m = {sel};
        ts_launch(1, 32, [&] {{ where_b4(m, c, (const unsigned*)x, (const unsigned*)yv, (unsigned*)o); }});
        float want[6] = {{1, -1, 3, 4, -1, 6}};
        check("where_b4", close(o, want, 6, 0));
    }}
    {{ // unary codes
        float x[4] = {{-1.5f, 0.0f, 2.5f, 0.5f}}, o[4];
        ts_launch(1, 32, [&] {{ unary_f32(13, 4, x, o); }});
        float round_want[4] = {{-2, 0, 2, 0}};
        bool good = close(o, round_want, 4, 0);
        ts_launch(1, 32, [&] {{ unary_f32(9, 4, x, o); }});
        for (int i = 0; i < 4; ++i) good &= fabsf(o[i] - 1.0f / (1.0f + expf(-x[i]))) < 1e-7f;
        check("unary_f32 round/sigmoid", good);
    }}
    {{ // gelu exact
        float x[3] = {{-1.0f, 0.5f, 2.0f}}, o[3];
        ts_launch(1, 32, [&] {{ gelu_f32(0, 3, x, o); }});
        float want[3] = {{-0.15865525f, 0.34573123f, 1.95449974f}};
        check("gelu_f32", close(o, want, 3, 1e-6f));
    }}
    {{ // softmax over the middle axis of [2,3,2] with a 32-thread block
        float x[12], o[12]; for (int i = 0; i < 12; ++i) x[i] = 0.3f * i - 1.0f;
        ts_launch(4, 32, [&] {{ softmax_f32(0, 2, 3, 2, x, o); }});
        bool good = true;
        for (int a = 0; a < 2; ++a) for (int k = 0; k < 2; ++k) {{
            float mx = -1e30f, s = 0;
            for (int l = 0; l < 3; ++l) mx = fmaxf(mx, x[a * 6 + l * 2 + k]);
            for (int l = 0; l < 3; ++l) s += expf(x[a * 6 + l * 2 + k] - mx);
            for (int l = 0; l < 3; ++l) good &= fabsf(o[a * 6 + l * 2 + k] - expf(x[a * 6 + l * 2 + k] - mx) / s) < 1e-6f;
        }}
        check("softmax_f32", good);
    }}
    {{ // layernorm of 2 rows of 5 with bias, 32-thread blocks (rows > grid: grid-stride)
        float x[10], sc[5], bi[5], o[10];
        for (int i = 0; i < 10; ++i) x[i] = (float)((i * 7) % 5) - 1.5f * (i / 5);
        for (int i = 0; i < 5; ++i) {{ sc[i] = 1.0f + 0.1f * i; bi[i] = 0.01f * i; }}
        ts_launch(1, 32, [&] {{ layernorm_f32(2, 5, 1e-5f, x, sc, bi, 1, o); }});
        bool good = true;
        for (int r = 0; r < 2; ++r) {{
            float mean = 0, var = 0;
            for (int l = 0; l < 5; ++l) mean += x[r * 5 + l] / 5;
            for (int l = 0; l < 5; ++l) var += (x[r * 5 + l] - mean) * (x[r * 5 + l] - mean) / 5;
            for (int l = 0; l < 5; ++l) good &= fabsf(o[r * 5 + l] - ((x[r * 5 + l] - mean) / sqrtf(var + 1e-5f) * sc[l] + bi[l])) < 1e-5f;
        }}
        check("layernorm_f32", good);
    }}
    {{ // rmsnorm
        float x[4] = {{1, -2, 3, -4}}, sc[4] = {{1, 1, 2, 2}}, o[4];
        ts_launch(1, 32, [&] {{ rmsnorm_f32(1, 4, 0.0f, x, sc, o); }});
        float r = sqrtf((1 + 4 + 9 + 16) / 4.0f);
        float want[4] = {{1 / r, -2 / r, 6 / r, -8 / r}};
        check("rmsnorm_f32", close(o, want, 4, 1e-6f));
    }}
    {{ // reductions over rows of 100 with 64 threads
        float x[300], o[3]; for (int i = 0; i < 300; ++i) x[i] = (float)((i * 37) % 101) - 50.0f;
        bool good = true;
        int kinds[4] = {{0, 1, 2, 6}};
        for (int kk = 0; kk < 4; ++kk) {{
            int kind = kinds[kk];
            ts_launch(2, 64, [&] {{ reduce_rows_f32(kind, 3, 100, x, o); }});
            for (int r = 0; r < 3; ++r) {{
                double s = 0, mx = -1e30, q = 0;
                for (int l = 0; l < 100; ++l) {{ double v = x[r * 100 + l]; s += v; mx = v > mx ? v : mx; q += v * v; }}
                double want = kind == 0 ? s : kind == 1 ? s / 100 : kind == 2 ? mx : sqrt(q);
                good &= fabs(o[r] - want) < 1e-3 * (1 + fabs(want));
            }}
        }}
        check("reduce_rows_f32 sum/mean/max/l2", good);
    }}
    {{ // cumsum exclusive reverse along len=4 of [1,4,2]
        float x[8] = {{1, 10, 2, 20, 3, 30, 4, 40}}, o[8];
        ts_launch(1, 32, [&] {{ cumsum_f32(1, 4, 2, 1, 1, x, o); }});
        float want[8] = {{9, 90, 7, 70, 4, 40, 0, 0}};
        check("cumsum_f32", close(o, want, 8, 0));
    }}
    {{ // gather: negative index wraps; sharded: rows [2,4) of a 6-row table
        float t[12]; for (int i = 0; i < 12; ++i) t[i] = (float)i; // [6,2]
        long long idx[3] = {{5, -6, 3}}; float o[6]; unsigned bad = 0;
        ts_launch(1, 32, [&] {{ gather_b4(1, 6, 2, 3, 6, 0, idx, (const unsigned*)t, &bad, (unsigned*)o); }});
        float want[6] = {{10, 11, 0, 1, 6, 7}};
        bool good = close(o, want, 6, 0) && bad == 0;
        long long sidx[3] = {{2, 5, -3}}; // -3 -> row 3; 5 is another shard's row, not an error
        ts_launch(1, 32, [&] {{ gather_b4(1, 2, 2, 3, 6, 2, sidx, (const unsigned*)(t + 4), &bad, (unsigned*)o); }});
        float swant[6] = {{4, 5, 0, 0, 6, 7}};
        check("gather_b4 plain/sharded", good && close(o, swant, 6, 0) && bad == 0);
    }}
    {{ // gather: an index outside [-len, len) raises the flag (the CPU path errors)
        float t[12]; for (int i = 0; i < 12; ++i) t[i] = (float)i;
        long long hi[2] = {{1, 6}}, lo[2] = {{-7, 0}}, sh[1] = {{6}}; float o[4];
        unsigned b1 = 0, b2 = 0, b3 = 0;
        ts_launch(1, 32, [&] {{ gather_b4(1, 6, 2, 2, 6, 0, hi, (const unsigned*)t, &b1, (unsigned*)o); }});
        ts_launch(1, 32, [&] {{ gather_b4(1, 6, 2, 2, 6, 0, lo, (const unsigned*)t, &b2, (unsigned*)o); }});
        ts_launch(1, 32, [&] {{ gather_b4(1, 2, 2, 1, 6, 2, sh, (const unsigned*)(t + 4), &b3, (unsigned*)o); }});
        check("gather_b4 out-of-range flag", b1 == 1 && b2 == 1 && b3 == 1);
    }}
    {{ // trilu upper k=1 of 3x3
        float x[9], o[9]; for (int i = 0; i < 9; ++i) x[i] = (float)(i + 1);
        ts_launch(1, 32, [&] {{ trilu_b4(9, 3, 3, 1, 1, (const unsigned*)x, (unsigned*)o); }});
        float want[9] = {{0, 2, 3, 0, 0, 6, 0, 0, 0}};
        check("trilu_b4", close(o, want, 9, 0));
    }}
    {{ // f16 / bf16 rounding
        float x[7] = {{1.00048828125f, 1.0009765625f, 65519.0f, 65520.0f, 1e-8f, 5.9604645e-8f, 1.00146484375f}}, o[7];
        ts_launch(1, 32, [&] {{ round_f32(0, 7, x, o); }});
        float want[7] = {{1.0f, 1.0009765625f, 65504.0f, INFINITY, 0.0f, 5.9604645e-8f, 1.001953125f}};
        bool good = close(o, want, 7, 0);
        float y[2] = {{1.00390625f, 1.01171875f}}, p[2];
        ts_launch(1, 32, [&] {{ round_f32(1, 2, y, p); }});
        float bwant[2] = {{1.0f, 1.015625f}};
        check("round_f32 f16/bf16", good && close(p, bwant, 2, 0));
    }}
    {{ // integer ops: python mod, wrapping casts, comparisons
        long long a[3] = {{-7, 7, 300}}, b[3] = {{3, -3, 7}}, o[3];
        BcastMeta m = {{1, 3, {{3}}, {{{{1}}, {{1}}, {{0}}}}}};
        ts_launch(1, 32, [&] {{ binary_i64(8, m, a, b, o); }});
        bool good = o[0] == 2 && o[1] == -2 && o[2] == 6;
        ts_launch(1, 32, [&] {{ binary_i64(7, m, a, b, o); }});
        good &= o[0] == -1 && o[1] == 1 && o[2] == 6;
        long long w[3] = {{300, 200, -1}}, u[3];
        ts_launch(1, 32, [&] {{ wrap_i64(8, 1, 3, w, u); }});
        good &= u[0] == 44 && u[1] == 200 && u[2] == 255;
        ts_launch(1, 32, [&] {{ wrap_i64(8, 0, 3, w, u); }});
        good &= u[0] == 44 && u[1] == -56 && u[2] == -1;
        unsigned char c[3];
        ts_launch(1, 32, [&] {{ compare_i64(1, m, a, b, c); }});
        good &= c[0] == 1 && c[1] == 0 && c[2] == 0;
        check("integer kernels", good);
    }}
    printf("%d ok, %d failed\n", ts_ok, ts_fail);
    return ts_fail ? 1 : 0;
}}
"#,
        transpose = strided(&transpose),
        slice = strided(&slice),
        add = bcast(&add),
        sel = bcast(&sel),
    );
    s
}

#[test]
fn kernels_compute_the_right_values_on_the_cpu() {
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
    if Command::new(&cxx).arg("--version").output().is_err() {
        println!("skipping: no C++ compiler ({cxx}) to run the kernel sources on the CPU");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // The common header once, then every module (NVRTC compiles them one by one).
    let mut src = format!("{SHIM}\n{COMMON}\n");
    for m in MODULES {
        src.push_str(m.source);
        src.push('\n');
    }
    src.push_str(&driver());
    let cpp = dir.path().join("kernels_host.cpp");
    std::fs::write(&cpp, &src).unwrap();
    let exe = dir.path().join("kernels_host");
    let out = Command::new(&cxx)
        .args([
            "-std=c++20",
            "-O1",
            "-pthread",
            "-Wall",
            "-Wno-unused-function",
            "-o",
        ])
        .arg(&exe)
        .arg(&cpp)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() && stderr.contains("barrier") && stderr.contains("No such file") {
        println!("skipping: {cxx} has no C++20 <barrier>");
        return;
    }
    assert!(
        out.status.success(),
        "kernel sources do not compile as C++:\n{stderr}"
    );
    let run = Command::new(&exe).output().unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    println!("{stdout}");
    assert!(run.status.success(), "kernel checks failed:\n{stdout}");
    assert!(stdout.contains("16 ok, 0 failed"), "{stdout}");
}
