//! Host kernels of the fused `conv3x3 (stride 1, pad 1) + bias -> ReLU -> maxpool 2x2` on f32
//! slices in NCHW order, forward and backward. Convolutions are im2col + one `gemm` call per
//! block of samples; the bias, the 2x2 max and the ReLU run on the block's conv output while it
//! is still in cache, so only the pooled output (and, for training, one byte per pooled value
//! saying where its max came from) is ever stored.
//!
//! Semantics are burn-flex's `conv2d -> relu -> max_pool2d([2, 2])`: floor pooling (an odd last
//! row or column is dropped), the first maximum of a window wins a tie, a NaN wins over any number
//! (the last NaN of the window), ReLU keeps NaN. Pooling the raw conv output and then applying
//! ReLU gives the same values and the same gradients: ReLU is monotonic, and where the window's
//! max is <= 0 the gradient is zero either way.

use gemm::{gemm, Parallelism};
use rayon::prelude::*;

/// Marks a pooled output whose ReLU was off: value 0, no gradient.
pub const INACTIVE: u8 = 4;

/// Bytes of im2col matrix plus conv output a block aims for: both stay in L2 while `gemm` writes
/// and the pooling reads them.
const BLOCK_BYTES: usize = 1024 * 1024;

/// Backward partial sums (weight and bias gradients) are reduced over at most this many chunks
/// of the batch, always the same chunks for a given batch size, in chunk order: the sums do not
/// depend on how rayon schedules the chunks.
const GRAD_CHUNKS: usize = 8;

/// Shapes of one fused layer: input `[batch, c_in, height, width]`, weight `[c_out, c_in, 3, 3]`,
/// output `[batch, c_out, height / 2, width / 2]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    pub batch: usize,
    pub c_in: usize,
    pub height: usize,
    pub width: usize,
    pub c_out: usize,
}

impl Geometry {
    /// Rows of the im2col matrix (one per input channel and kernel tap).
    fn taps(&self) -> usize {
        self.c_in * 9
    }
    fn pixels(&self) -> usize {
        self.height * self.width
    }
    pub fn pooled(&self) -> (usize, usize) {
        (self.height / 2, self.width / 2)
    }
    pub fn input_len(&self) -> usize {
        self.c_in * self.pixels()
    }
    pub fn output_len(&self) -> usize {
        let (ph, pw) = self.pooled();
        self.c_out * ph * pw
    }
    pub fn weight_len(&self) -> usize {
        self.c_out * self.taps()
    }
    /// Samples per gemm call.
    fn block(&self) -> usize {
        (BLOCK_BYTES / ((self.taps() + self.c_out) * self.pixels() * 4).max(1)).clamp(1, self.batch.max(1))
    }
}

/// Writes the im2col matrix of `samples` consecutive samples of `x`: row `ci*9 + kh*3 + kw`,
/// column `s*pixels + y*width + x` holds `x[s, ci, y+kh-1, x+kw-1]` (0 outside the image).
fn im2col(x: &[f32], g: &Geometry, samples: usize, col: &mut [f32]) {
    let (h, w, hw) = (g.height, g.width, g.pixels());
    let ld = samples * hw;
    for s in 0..samples {
        let xs = &x[s * g.input_len()..(s + 1) * g.input_len()];
        for ci in 0..g.c_in {
            let plane = &xs[ci * hw..(ci + 1) * hw];
            for tap in 0..9 {
                let (kh, kw) = (tap / 3, tap % 3);
                let row = &mut col[(ci * 9 + tap) * ld + s * hw..][..hw];
                for y in 0..h {
                    let dst = &mut row[y * w..(y + 1) * w];
                    let Some(yy) = (y + kh).checked_sub(1).filter(|&yy| yy < h) else {
                        dst.fill(0.0);
                        continue;
                    };
                    let src = &plane[yy * w..(yy + 1) * w];
                    match kw {
                        0 => {
                            dst[0] = 0.0;
                            dst[1..].copy_from_slice(&src[..w - 1]);
                        }
                        1 => dst.copy_from_slice(src),
                        _ => {
                            dst[..w - 1].copy_from_slice(&src[1..]);
                            dst[w - 1] = 0.0;
                        }
                    }
                }
            }
        }
    }
}

/// `dst[m, n] (+)= lhs[m, k] * rhs[k, n]`, all row-major with the given row strides, or with
/// `lhs`/`rhs` read transposed. Single-threaded: the callers parallelise over samples.
#[allow(clippy::too_many_arguments)]
fn matmul(m: usize, n: usize, k: usize, dst: &mut [f32], accumulate: bool, lhs: &[f32], lhs_t: bool, lhs_ld: usize, rhs: &[f32], rhs_t: bool, rhs_ld: usize) {
    assert!(dst.len() >= m * n);
    let (lhs_rs, lhs_cs) = if lhs_t { (1, lhs_ld) } else { (lhs_ld, 1) };
    let (rhs_rs, rhs_cs) = if rhs_t { (1, rhs_ld) } else { (rhs_ld, 1) };
    let span = |rows: usize, cols: usize, rs: usize, cs: usize| if rows == 0 || cols == 0 { 0 } else { (rows - 1) * rs + (cols - 1) * cs + 1 };
    assert!(lhs.len() >= span(m, k, lhs_rs, lhs_cs) && rhs.len() >= span(k, n, rhs_rs, rhs_cs));
    // SAFETY: the asserts above keep every index gemm computes from these strides inside the
    // slices; dst does not alias lhs or rhs (distinct borrows).
    unsafe {
        gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            lhs.as_ptr(),
            lhs_cs as isize,
            lhs_rs as isize,
            rhs.as_ptr(),
            rhs_cs as isize,
            rhs_rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            Parallelism::None,
        );
    }
}

/// The 2x2 window's max as burn-flex's max_pool2d picks it: the first maximum, or the last NaN.
#[inline]
fn window_max(v: [f32; 4]) -> (f32, u8) {
    let (mut best, mut at) = (v[0], 0u8);
    for (j, &x) in v.iter().enumerate().skip(1) {
        if x > best || x.is_nan() {
            best = x;
            at = j as u8;
        }
    }
    (best, at)
}

/// Bias, 2x2 max and ReLU of one block's conv output `z` (`[c_out, samples*pixels]`).
fn pool_epilogue(z: &[f32], bias: &[f32], g: &Geometry, samples: usize, out: &mut [f32], mut codes: Option<&mut [u8]>) {
    let (w, hw) = (g.width, g.pixels());
    let (ph, pw) = g.pooled();
    let ld = samples * hw;
    for s in 0..samples {
        for co in 0..g.c_out {
            let z = &z[co * ld + s * hw..][..hw];
            let b = bias[co];
            let base = s * g.output_len() + co * ph * pw;
            for py in 0..ph {
                let (r0, r1) = (&z[2 * py * w..][..w], &z[(2 * py + 1) * w..][..w]);
                for px in 0..pw {
                    let c = 2 * px;
                    let (best, at) = window_max([r0[c] + b, r0[c + 1] + b, r1[c] + b, r1[c + 1] + b]);
                    let active = best.is_nan() || best > 0.0;
                    out[base + py * pw + px] = if active { best } else { 0.0 };
                    if let Some(codes) = codes.as_deref_mut() {
                        codes[base + py * pw + px] = if active { at } else { INACTIVE };
                    }
                }
            }
        }
    }
}

thread_local! {
    /// Per-thread im2col and conv-output buffers, kept between calls: every entry is written
    /// before it is read, and fresh zeroed buffers per block cost as much as the im2col itself.
    static SCRATCH: std::cell::RefCell<(Vec<f32>, Vec<f32>)> = const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

fn with_scratch<R>(a_len: usize, b_len: usize, f: impl FnOnce(&mut [f32], &mut [f32]) -> R) -> R {
    SCRATCH.with(|cell| {
        let mut bufs = cell.borrow_mut();
        let (a, b) = &mut *bufs;
        if a.len() < a_len {
            a.resize(a_len, 0.0);
        }
        if b.len() < b_len {
            b.resize(b_len, 0.0);
        }
        f(&mut a[..a_len], &mut b[..b_len])
    })
}

/// The fused forward over the whole batch: the pooled output `[batch, c_out, h/2, w/2]`, and with
/// `keep_codes` where each pooled value came from (for the backward). Samples are independent, so
/// the result does not depend on threads.
pub fn forward(x: &[f32], weight: &[f32], bias: &[f32], g: &Geometry, keep_codes: bool) -> (Vec<f32>, Vec<u8>) {
    assert_eq!(x.len(), g.batch * g.input_len(), "fused conv: input length");
    assert_eq!(weight.len(), g.weight_len(), "fused conv: weight length");
    assert_eq!(bias.len(), g.c_out, "fused conv: bias length");
    let mut out = vec![0f32; g.batch * g.output_len()];
    let mut codes = vec![0u8; if keep_codes { out.len() } else { 0 }];
    if out.is_empty() {
        return (out, codes);
    }
    let block = g.block();
    let run = |(b, out): (usize, &mut [f32]), codes: Option<&mut [u8]>| {
        let samples = out.len() / g.output_len();
        let x = &x[b * block * g.input_len()..][..samples * g.input_len()];
        with_scratch(g.taps() * samples * g.pixels(), g.c_out * samples * g.pixels(), |col, z| {
            im2col(x, g, samples, col);
            matmul(g.c_out, samples * g.pixels(), g.taps(), z, false, weight, false, g.taps(), col, false, samples * g.pixels());
            pool_epilogue(z, bias, g, samples, out, codes);
        });
    };
    let chunk = block * g.output_len();
    if keep_codes {
        out.par_chunks_mut(chunk).enumerate().zip(codes.par_chunks_mut(chunk)).for_each(|(o, c)| run(o, Some(c)));
    } else {
        out.par_chunks_mut(chunk).enumerate().for_each(|o| run(o, None));
    }
    (out, codes)
}

/// Gradients of the fused layer.
pub struct Grads {
    /// `[batch, c_in, h, w]`, when asked for.
    pub x: Option<Vec<f32>>,
    /// `[c_out, c_in, 3, 3]`.
    pub weight: Vec<f32>,
    /// `[c_out]`.
    pub bias: Vec<f32>,
}

/// The backward of [`forward`]: `dy` is the gradient of the pooled output, `codes` what
/// `forward(.., keep_codes = true)` returned. Only the pixel each active pooled value came from
/// has a conv-output gradient (at most a quarter of them), so instead of dense gemms over the
/// mostly-zero conv-output gradient this walks those pixels: each adds `d * patch` to the weight
/// gradient and `d * weight` to the input gradient's patch, a quarter of the dense FLOPs. Both run
/// on channels-last copies (input zero-padded, weight `[c_out][kh][kw][c_in]`), where one kernel
/// row's three taps are one contiguous run of `3 * c_in` values.
pub fn backward(x: &[f32], weight: &[f32], dy: &[f32], codes: &[u8], g: &Geometry, want_x: bool) -> Grads {
    assert_eq!(x.len(), g.batch * g.input_len(), "fused conv backward: input length");
    assert_eq!(weight.len(), g.weight_len(), "fused conv backward: weight length");
    assert_eq!(dy.len(), g.batch * g.output_len(), "fused conv backward: output gradient length");
    assert_eq!(codes.len(), dy.len(), "fused conv backward: codes length");
    let weight_t = taps_major(weight, g);
    let nonfinite_weights: Vec<(usize, usize, usize, f32)> =
        weight.iter().enumerate().filter(|(_, v)| !v.is_finite()).map(|(i, &v)| (i / (9 * g.c_in), i / 9 % g.c_in, i % 9, v)).collect();
    let mut dx = want_x.then(|| vec![0f32; x.len()]);
    let per_chunk = g.batch.div_ceil(GRAD_CHUNKS).max(1);
    let chunks = g.batch.div_ceil(per_chunk);
    let mut partials: Vec<(Vec<f32>, Vec<f32>)> = (0..chunks).map(|_| (vec![0f32; g.weight_len()], vec![0f32; g.c_out])).collect();
    let run = |i: usize, (dw, db): &mut (Vec<f32>, Vec<f32>), dx: Option<&mut [f32]>| {
        let first = i * per_chunk;
        backward_chunk(x, &weight_t, &nonfinite_weights, dy, codes, g, first..(first + per_chunk).min(g.batch), dw, db, dx);
    };
    match dx.as_mut() {
        Some(dx) => partials.par_iter_mut().enumerate().zip(dx.par_chunks_mut(per_chunk * g.input_len())).for_each(|((i, p), dx)| run(i, p, Some(dx))),
        None => partials.par_iter_mut().enumerate().for_each(|(i, p)| run(i, p, None)),
    }
    // Fixed-order reduction of the chunk partials.
    let mut partials = partials.into_iter();
    let (mut dw, mut db) = partials.next().unwrap_or_else(|| (vec![0f32; g.weight_len()], vec![0f32; g.c_out]));
    for (pw, pb) in partials {
        dw.iter_mut().zip(&pw).for_each(|(a, b)| *a += b);
        db.iter_mut().zip(&pb).for_each(|(a, b)| *a += b);
    }
    Grads { x: dx, weight: channels_major(&dw, g), bias: db }
}

/// `[c_out][c_in][3][3]` -> `[c_out][3][3][c_in]`.
fn taps_major(w: &[f32], g: &Geometry) -> Vec<f32> {
    let mut t = vec![0f32; w.len()];
    for co in 0..g.c_out {
        for c in 0..g.c_in {
            for tap in 0..9 {
                t[(co * 9 + tap) * g.c_in + c] = w[(co * g.c_in + c) * 9 + tap];
            }
        }
    }
    t
}

/// The inverse of [`taps_major`].
fn channels_major(t: &[f32], g: &Geometry) -> Vec<f32> {
    let mut w = vec![0f32; t.len()];
    for co in 0..g.c_out {
        for c in 0..g.c_in {
            for tap in 0..9 {
                w[(co * g.c_in + c) * 9 + tap] = t[(co * 9 + tap) * g.c_in + c];
            }
        }
    }
    w
}

/// Accumulates the samples `range` into `dw` (taps-major) and `db`, and writes their input
/// gradient to `dx` (`range.len()` samples, NCHW) when given.
#[allow(clippy::too_many_arguments)]
fn backward_chunk(x: &[f32], weight_t: &[f32], nonfinite_weights: &[(usize, usize, usize, f32)], dy: &[f32], codes: &[u8], g: &Geometry, range: std::ops::Range<usize>, dw: &mut [f32], db: &mut [f32], mut dx: Option<&mut [f32]>) {
    let (h, w, ci) = (g.height, g.width, g.c_in);
    let padded = (h + 2) * (w + 2) * ci;
    // Borders stay zero: only the interior is ever written.
    let mut xp = vec![0f32; padded];
    let mut dxp = if dx.is_some() { vec![0f32; padded] } else { Vec::new() };
    for (i, s) in range.enumerate() {
        let xs = &x[s * g.input_len()..][..g.input_len()];
        for c in 0..ci {
            for y in 0..h {
                for xx in 0..w {
                    xp[((y + 1) * (w + 2) + xx + 1) * ci + c] = xs[(c * h + y) * w + xx];
                }
            }
        }
        dxp.fill(0.0);
        let dys = &dy[s * g.output_len()..][..g.output_len()];
        let codes_s = &codes[s * g.output_len()..][..g.output_len()];
        let dxp_opt = if dx.is_some() { Some(&mut dxp[..]) } else { None };
        accumulate_sample(&xp, weight_t, dys, codes_s, g, dw, db, dxp_opt);
        if let Some(dx) = dx.as_deref_mut() {
            let dxs = &mut dx[i * g.input_len()..][..g.input_len()];
            for c in 0..ci {
                for y in 0..h {
                    for xx in 0..w {
                        dxs[(c * h + y) * w + xx] = dxp[((y + 1) * (w + 2) + xx + 1) * ci + c];
                    }
                }
            }
            if !nonfinite_weights.is_empty() {
                weight_zero_gradient_terms(nonfinite_weights, codes_s, g, dxs);
            }
        }
        if xs.iter().any(|v| !v.is_finite()) {
            input_zero_gradient_terms(xs, codes_s, g, dw);
        }
    }
}

/// Whether conv pixel (y, x) of channel `co` has a gradient: it is the max of an active window.
fn is_pooled_max(codes: &[u8], g: &Geometry, co: usize, y: usize, x: usize) -> bool {
    let (ph, pw) = g.pooled();
    let (py, px) = (y / 2, x / 2);
    py < ph && px < pw && usize::from(codes[co * ph * pw + py * pw + px]) == (y % 2) * 2 + x % 2
}

/// burn (like PyTorch) computes the conv gradients densely, so a non-finite input value also meets
/// the zero gradient of every conv pixel that is not a pooled max, and 0 * inf = 0 * NaN = NaN
/// reaches the weight gradient. The sparse walk skips those products; this adds them for the
/// non-finite values only (`dw` taps-major), so NaN inputs give burn's gradients.
fn input_zero_gradient_terms(xs: &[f32], codes: &[u8], g: &Geometry, dw: &mut [f32]) {
    let (h, w) = (g.height, g.width);
    for (i, &v) in xs.iter().enumerate().filter(|(_, v)| !v.is_finite()) {
        let (c, yy, xx) = (i / (h * w), i / w % h, i % w);
        for tap in 0..9 {
            let (Some(y), Some(x)) = ((yy + 1).checked_sub(tap / 3).filter(|&y| y < h), (xx + 1).checked_sub(tap % 3).filter(|&x| x < w)) else { continue };
            for co in (0..g.c_out).filter(|&co| !is_pooled_max(codes, g, co, y, x)) {
                dw[(co * 9 + tap) * g.c_in + c] += 0.0 * v;
            }
        }
    }
}

/// The same for non-finite weights (`(co, c, tap, value)`) and the input gradient (`dx`, NCHW).
fn weight_zero_gradient_terms(weights: &[(usize, usize, usize, f32)], codes: &[u8], g: &Geometry, dx: &mut [f32]) {
    let (h, w) = (g.height, g.width);
    for &(co, c, tap, v) in weights {
        for y in 0..h {
            for x in 0..w {
                let (Some(yy), Some(xx)) = ((y + tap / 3).checked_sub(1).filter(|&yy| yy < h), (x + tap % 3).checked_sub(1).filter(|&xx| xx < w)) else { continue };
                if !is_pooled_max(codes, g, co, y, x) {
                    dx[(c * h + yy) * w + xx] += 0.0 * v;
                }
            }
        }
    }
}

/// One sample's share of the gradients, compiled for the widest vector unit the CPU has (the
/// inner loops are `3 * c_in` long). The arithmetic is the same in every version (separate
/// multiply and add, no FMA contraction), so results do not depend on the CPU's features.
#[allow(clippy::too_many_arguments)]
fn accumulate_sample(xp: &[f32], weight_t: &[f32], dy: &[f32], codes: &[u8], g: &Geometry, dw: &mut [f32], db: &mut [f32], dxp: Option<&mut [f32]>) {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f")]
        #[allow(clippy::too_many_arguments)]
        fn avx512(xp: &[f32], weight_t: &[f32], dy: &[f32], codes: &[u8], g: &Geometry, dw: &mut [f32], db: &mut [f32], dxp: Option<&mut [f32]>) {
            accumulate_sample_any(xp, weight_t, dy, codes, g, dw, db, dxp)
        }
        #[target_feature(enable = "avx2")]
        #[allow(clippy::too_many_arguments)]
        fn avx2(xp: &[f32], weight_t: &[f32], dy: &[f32], codes: &[u8], g: &Geometry, dw: &mut [f32], db: &mut [f32], dxp: Option<&mut [f32]>) {
            accumulate_sample_any(xp, weight_t, dy, codes, g, dw, db, dxp)
        }
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F (checked just above).
            return unsafe { avx512(xp, weight_t, dy, codes, g, dw, db, dxp) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2 (checked just above).
            return unsafe { avx2(xp, weight_t, dy, codes, g, dw, db, dxp) };
        }
    }
    accumulate_sample_any(xp, weight_t, dy, codes, g, dw, db, dxp)
}

/// One input channel (SmallCNN's conv1) gets its own copy with the run length known at compile
/// time: its runs are 3 values long, where the loop overhead would dominate.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn accumulate_sample_any(xp: &[f32], weight_t: &[f32], dy: &[f32], codes: &[u8], g: &Geometry, dw: &mut [f32], db: &mut [f32], dxp: Option<&mut [f32]>) {
    if g.c_in == 1 {
        accumulate_sample_body::<1>(xp, weight_t, dy, codes, g, dw, db, dxp)
    } else {
        accumulate_sample_body::<0>(xp, weight_t, dy, codes, g, dw, db, dxp)
    }
}

/// `CI` is the input channel count when known at compile time, 0 when not.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn accumulate_sample_body<const CI: usize>(xp: &[f32], weight_t: &[f32], dy: &[f32], codes: &[u8], g: &Geometry, dw: &mut [f32], db: &mut [f32], mut dxp: Option<&mut [f32]>) {
    let ci = if CI > 0 { CI } else { g.c_in };
    let run = 3 * ci;
    let row = (g.width + 2) * ci;
    let (ph, pw) = g.pooled();
    let axpy = |acc: &mut [f32], d: f32, src: &[f32]| acc.iter_mut().zip(src).for_each(|(a, s)| *a += d * s);
    for co in 0..g.c_out {
        let w_co = &weight_t[co * 9 * ci..][..9 * ci];
        let dw_co = &mut dw[co * 9 * ci..][..9 * ci];
        let mut sum = 0f32;
        for py in 0..ph {
            for px in 0..pw {
                let k = co * ph * pw + py * pw + px;
                let at = codes[k];
                if at == INACTIVE {
                    continue;
                }
                let d = dy[k];
                sum += d;
                // The max came from conv pixel (y, x); its 3x3 input patch starts at padded (y, x).
                let (y, x) = (2 * py + usize::from(at / 2), 2 * px + usize::from(at % 2));
                for kh in 0..3 {
                    let at = (y + kh) * row + x * ci;
                    axpy(&mut dw_co[kh * run..][..run], d, &xp[at..][..run]);
                    if let Some(dxp) = dxp.as_deref_mut() {
                        axpy(&mut dxp[at..][..run], d, &w_co[kh * run..][..run]);
                    }
                }
            }
        }
        db[co] += sum;
    }
}
