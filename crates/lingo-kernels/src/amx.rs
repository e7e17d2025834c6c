//! Intel AMX tile products for bf16 and int8 weights (Sapphire Rapids and later).
//!
//! An AMX core holds eight 1 KiB tile registers; `tdpbf16ps` multiplies a 16 × 32 bf16 tile by a
//! 32 × 16 one (16 k-pairs) and adds the 16 × 16 product into an f32 tile: 8,192 multiply-adds in
//! one instruction, where `vdpbf16ps` does 32. Its right operand is laid out by k-pairs — row `p`
//! holds the pairs `(B[2p][n], B[2p+1][n])` of 16 columns — which is exactly the panel layout of
//! [`crate::bf16::Bf16Matrix`], so the packed weight is loaded as it is, 16 pair-rows with a
//! stride of one panel row. The left operand is the input converted to bf16 pairs row by row.
//!
//! Likewise `tdpbusd` multiplies u8 by s8 tiles (16 × 64 by 64 × 16, 16,384 multiply-adds) into
//! i32: an [`crate::Int8Matrix`]'s panels — 16 columns, each group of four inputs one 32-bit lane
//! — are its right-operand layout, and the VNNI kernel's unsigned activations (`q + 128`) its left,
//! so [`int8_block`] sums exactly what the VNNI kernel sums.
//!
//! Rust has no AMX intrinsics on stable, so the six instructions are written as inline assembly.
//! Linux hands a process the tile state only when it asks (`arch_prctl(ARCH_REQ_XCOMP_PERM,
//! XFEATURE_XTILEDATA)`); [`available`] asks once and says whether the kernel can run. Set
//! `LINGO_NO_AMX` to use the AVX-512 BF16 kernel instead.

use crate::cpu::SendPtr;
use crate::mixed_precision::NR;
use rayon::prelude::*;
use std::sync::OnceLock;

/// k-pairs per tile step: a tile row is 64 bytes, 16 pairs.
pub const PAIRS: usize = 16;
/// Rows of `C` per block: two 16-row tiles.
pub const ROWS: usize = 32;

/// Whether this CPU has AMX-BF16, Linux granted the tile state, and `LINGO_NO_AMX` is unset.
pub fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| std::env::var_os("LINGO_NO_AMX").is_none() && request())
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn request() -> bool {
    // SAFETY: cpuid leaf 7 exists on every x86-64 CPU that has AVX-512 BF16, which callers check
    // first; the syscall only changes this process's permissions.
    unsafe {
        let leaf7 = std::arch::x86_64::__cpuid_count(7, 0);
        let (tile, bf16) = (leaf7.edx & (1 << 24) != 0, leaf7.edx & (1 << 22) != 0);
        if !(tile && bf16) {
            return false;
        }
        const ARCH_PRCTL: i64 = 158;
        const ARCH_REQ_XCOMP_PERM: i64 = 0x1023;
        const XFEATURE_XTILEDATA: i64 = 18;
        let ret: i64;
        std::arch::asm!(
            "syscall",
            inlateout("rax") ARCH_PRCTL => ret,
            in("rdi") ARCH_REQ_XCOMP_PERM,
            in("rsi") XFEATURE_XTILEDATA,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack)
        );
        ret == 0
    }
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn request() -> bool {
    false
}

#[cfg(target_arch = "x86_64")]
/// The tile configuration: palette 1; every tile 16 rows of 64 bytes (C: 16 × 16 f32 in tmm0–3,
/// A: 16 rows × 16 pairs in tmm4–5, B: 16 pair-rows × 16 columns in tmm6–7).
#[repr(C, align(64))]
struct TileConfig([u8; 64]);

#[cfg(target_arch = "x86_64")]
const CONFIG: TileConfig = {
    let mut c = [0u8; 64];
    c[0] = 1;
    let mut t = 0;
    while t < 8 {
        c[16 + 2 * t] = 64;
        c[48 + t] = 16;
        t += 1;
    }
    TileConfig(c)
};

/// `dst[m×n] = (accumulate ? dst : 0) + A · B`: `a` holds `ceil(m/32)·32` rows of `kp` bf16
/// pairs (rows past `m` zero), `b` the [`NR`]-column panels of `kp` pairs of a
/// [`crate::bf16::Bf16Matrix`]; `kp` a multiple of [`PAIRS`]. Blocks of 32 rows × 32 columns
/// run in parallel, each summed over all of k in four tiles.
///
/// # Safety
/// [`available`] must hold; `dst` valid for `m` rows of stride `dst_rs` and `n` columns; `a` and
/// `b` of the sizes described.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm(
    m: usize,
    n: usize,
    kp: usize,
    dst: *mut f32,
    dst_rs: usize,
    accumulate: bool,
    a: &[u32],
    b: &[u32],
) {
    debug_assert!(kp.is_multiple_of(PAIRS) && NR == 2 * 16);
    debug_assert!(a.len() >= m.div_ceil(ROWS) * ROWS * kp && b.len() >= n.div_ceil(NR) * NR * kp);
    let dst = SendPtr(dst);
    let blocks: Vec<(usize, usize)> = (0..m.div_ceil(ROWS))
        .flat_map(|i| (0..n.div_ceil(NR)).map(move |j| (i, j)))
        .collect();
    // Tasks of a few blocks each: the tile configuration is loaded once per task.
    let per_task = blocks
        .len()
        .div_ceil(4 * rayon::current_num_threads())
        .max(1);
    blocks.par_chunks(per_task).for_each(|task| {
        let mut c = [0f32; ROWS * NR];
        configure();
        for &(i, j) in task {
            let a_block = a.as_ptr().add(i * ROWS * kp);
            let b_panel = b.as_ptr().add(j * kp * NR);
            block(kp, a_block, b_panel, &mut c);
            let rows = (m - i * ROWS).min(ROWS);
            let cols = (n - j * NR).min(NR);
            for r in 0..rows {
                let out = dst.get().add((i * ROWS + r) * dst_rs + j * NR);
                let sums = &c[r * NR..r * NR + cols];
                for (col, &s) in sums.iter().enumerate() {
                    let o = out.add(col);
                    *o = if accumulate { *o + s } else { s };
                }
            }
        }
        release();
    });
}

#[cfg(target_arch = "x86_64")]
pub(crate) unsafe fn configure() {
    std::arch::asm!("ldtilecfg [{}]", in(reg) CONFIG.0.as_ptr(), options(nostack, readonly));
}

#[cfg(target_arch = "x86_64")]
pub(crate) unsafe fn release() {
    std::arch::asm!("tilerelease", options(nostack, nomem));
}

#[cfg(target_arch = "x86_64")]
/// One 32 × 32 block of `C` into `c` (row stride [`NR`]): tmm0–3 accumulate its four 16 × 16
/// quarters over all `kp` pairs, 16 at a time.
unsafe fn block(kp: usize, a: *const u32, b: *const u32, c: &mut [f32; ROWS * NR]) {
    let a_stride = kp * 4;
    let b_stride = NR * 4;
    zero_accumulators();
    for p0 in (0..kp).step_by(PAIRS) {
        let a0 = a.add(p0);
        let a1 = a.add(16 * kp + p0);
        let b0 = b.add(p0 * NR);
        let b1 = b0.add(16);
        std::arch::asm!(
            "tileloadd tmm4, [{a0} + {sa}*1]",
            "tileloadd tmm5, [{a1} + {sa}*1]",
            "tileloadd tmm6, [{b0} + {sb}*1]",
            "tileloadd tmm7, [{b1} + {sb}*1]",
            "tdpbf16ps tmm0, tmm4, tmm6",
            "tdpbf16ps tmm1, tmm4, tmm7",
            "tdpbf16ps tmm2, tmm5, tmm6",
            "tdpbf16ps tmm3, tmm5, tmm7",
            a0 = in(reg) a0,
            a1 = in(reg) a1,
            b0 = in(reg) b0,
            b1 = in(reg) b1,
            sa = in(reg) a_stride,
            sb = in(reg) b_stride,
            options(nostack, readonly)
        );
    }
    store_accumulators(c.as_mut_ptr().cast());
}

/// Int8 products of one block: rows `0..32` of `a` (u8, row stride `lda`) against `panels` (1 or
/// 2) weight panels at `b` (s8, `panel_stride` apart), over `groups` groups of four inputs (a
/// multiple of 16), summed into `c` (32 rows × 32 i32, row stride 32; the second panel's columns
/// zero when `panels` is 1). Needs [`configure`] on this thread.
///
/// # Safety
/// [`available`] must hold and the tile configuration be loaded; `a` valid for 32 rows of `lda`
/// bytes, `b` for `panels` panels of `groups · 64` bytes.
#[cfg(target_arch = "x86_64")]
pub(crate) unsafe fn int8_block(
    groups: usize,
    a: *const u8,
    lda: usize,
    b: *const i8,
    panel_stride: usize,
    panels: usize,
    c: &mut [i32; ROWS * NR],
) {
    zero_accumulators();
    for g0 in (0..groups).step_by(16) {
        let a0 = a.add(4 * g0);
        let a1 = a0.add(16 * lda);
        let b0 = b.add(64 * g0);
        if panels == 2 {
            std::arch::asm!(
                "tileloadd tmm4, [{a0} + {sa}*1]",
                "tileloadd tmm5, [{a1} + {sa}*1]",
                "tileloadd tmm6, [{b0} + {sb}*1]",
                "tileloadd tmm7, [{b1} + {sb}*1]",
                "tdpbusd tmm0, tmm4, tmm6",
                "tdpbusd tmm1, tmm4, tmm7",
                "tdpbusd tmm2, tmm5, tmm6",
                "tdpbusd tmm3, tmm5, tmm7",
                a0 = in(reg) a0,
                a1 = in(reg) a1,
                b0 = in(reg) b0,
                b1 = in(reg) b0.add(panel_stride),
                sa = in(reg) lda,
                sb = in(reg) 64usize,
                options(nostack, readonly)
            );
        } else {
            std::arch::asm!(
                "tileloadd tmm4, [{a0} + {sa}*1]",
                "tileloadd tmm5, [{a1} + {sa}*1]",
                "tileloadd tmm6, [{b0} + {sb}*1]",
                "tdpbusd tmm0, tmm4, tmm6",
                "tdpbusd tmm2, tmm5, tmm6",
                a0 = in(reg) a0,
                a1 = in(reg) a1,
                b0 = in(reg) b0,
                sa = in(reg) lda,
                sb = in(reg) 64usize,
                options(nostack, readonly)
            );
        }
    }
    store_accumulators(c.as_mut_ptr().cast());
}

/// Zeroes the four accumulator tiles tmm0–3.
#[cfg(target_arch = "x86_64")]
unsafe fn zero_accumulators() {
    std::arch::asm!(
        "tilezero tmm0",
        "tilezero tmm1",
        "tilezero tmm2",
        "tilezero tmm3",
        options(nostack, nomem)
    );
}

/// Stores tmm0–3 as one 32 × 32 block of 4-byte values (f32 or i32) at `out`, row stride 32:
/// tmm0 top left, tmm1 top right, tmm2 bottom left, tmm3 bottom right.
#[cfg(target_arch = "x86_64")]
unsafe fn store_accumulators(out: *mut u32) {
    std::arch::asm!(
        "tilestored [{c0} + {s}*1], tmm0",
        "tilestored [{c1} + {s}*1], tmm1",
        "tilestored [{c2} + {s}*1], tmm2",
        "tilestored [{c3} + {s}*1], tmm3",
        c0 = in(reg) out,
        c1 = in(reg) out.add(16),
        c2 = in(reg) out.add(16 * NR),
        c3 = in(reg) out.add(16 * NR + 16),
        s = in(reg) NR * 4,
        options(nostack)
    );
}
