//! The one GEMM driver, shared by every dtype: the loops around the microkernel (BLIS's outer
//! loops). Output columns come in groups of `np` weight panels (one microkernel call's width).
//! Threads take contiguous runs of groups, so each reads only its own weights, or, where the
//! weights are small, contiguous runs of row tiles (`ROW_SPLIT_MAX_WEIGHT_BYTES`). One call
//! per group hands the microkernel the whole column strip, which it walks down `mr` rows at a time
//! while the group's panels stay in L1 (a call per tile cost a function's prologue and
//! epilogue per 4 x 16 tile: 5% of a Cortex-A76's int8 inference). The microkernel finishes
//! each tile itself through the [`super::epilogue`].

use super::{Columns, Epilogue, OutBlock, NR};
use crate::{OutPtr, Threads};

/// Below this many multiply-adds a GEMM runs on the calling thread: splitting costs more.
const PARALLEL_WORK: usize = 1 << 18;

/// Threads split a GEMM by rows when its weights take at most this many bytes (and each thread
/// gets two row tiles or more), by column groups otherwise. By rows, each thread reads every
/// weight but writes whole output rows, which the next step (LayerNorm, quantization,
/// attention) reads on whichever thread runs it; by columns, half of every row it reads was
/// written in the other core's cache. On a 2-core Xeon at 2 threads, ViT-Ti int8 (every GEMM's
/// weights under 150 KB) ran 23% faster by rows, 6.8 -> 5.3 ms, and f32 5% (its 147 KB
/// projection). Splitting every GEMM by rows up to 1 MB of weights made ViT-Ti f32 20% faster
/// but ViT-S int8 13% slower, and ViT-B int8 (0.6 to 2.4 MB) 4% slower with all of them by rows:
/// larger weights keep the column split. A 4-thread split of ViT-Ti's 192-wide layers is also
/// more even by rows (13 tiles of 4 rows at most against 12.3 on average) than by column groups
/// (2 against 1.5).
const ROW_SPLIT_MAX_WEIGHT_BYTES: usize = 256 << 10;

/// Shape of one GEMM call, as the driver sees it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Problem {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    /// Rows per register tile.
    pub mr: usize,
    /// Panels (of [`NR`] columns) per microkernel call: 1 or 2.
    pub np: usize,
    /// Bytes of one weight (1 for int8, 2 for f16, 4 for f32).
    pub weight_size: usize,
}

/// Runs `micro(first_panel, panels, columns, first_row, block)` over the whole `m x n` output
/// (row stride `ldo`), one column group (all `m` rows) per call, where `columns(first_column,
/// cols)` gives the group's epilogue factors. A group at the right edge may have fewer than
/// `np` panels, and the block fewer columns than its panels hold.
pub(crate) fn drive(
    p: Problem,
    out: &mut [f32],
    ldo: usize,
    epilogue: Epilogue,
    threads: Threads,
    columns: impl Fn(usize, usize) -> Columns + Sync,
    micro: impl Fn(usize, usize, &Columns, usize, OutBlock<'_>) + Sync,
) {
    let Problem { m, n, k, mr, np, weight_size } = p;
    assert!(ldo >= n && (m == 0 || out.len() >= (m - 1) * ldo + n), "gemm: output too small");
    assert!((1..=2).contains(&np) && mr >= 1);
    if m == 0 || n == 0 {
        return;
    }
    let panels = n.div_ceil(NR);
    let groups = panels.div_ceil(np);
    let out_ptr = OutPtr(out.as_mut_ptr());
    // Rows r0..r1 of the column groups in `range`.
    let run = |range: std::ops::Range<usize>, (r0, r1): (usize, usize)| {
        for g in range {
            let p0 = g * np;
            let group_panels = np.min(panels - p0);
            let col0 = p0 * NR;
            let cols = (group_panels * NR).min(n - col0);
            let factors = columns(col0, cols);
            // SAFETY: rows r0..r1 and columns col0..col0+cols lie inside `out` (checked above:
            // out holds (m - 1) * ldo + n floats, r1 <= m); this task is the only one that
            // writes them, and `out` is exclusively borrowed for the call.
            let block = unsafe { OutBlock::new(out_ptr.get().add(r0 * ldo + col0), ldo, r1 - r0, cols, epilogue) };
            micro(p0, group_panels, &factors, r0, block);
        }
    };
    let t = threads.get();
    if t <= 1 || m * n * k < PARALLEL_WORK {
        run(0..groups, (0, m));
    } else if n * k * weight_size <= ROW_SPLIT_MAX_WEIGHT_BYTES && m >= 2 * t * mr {
        use rayon::prelude::*;
        // Whole row tiles per thread, as evenly as they go.
        let rows = m.div_ceil(mr).div_ceil(t) * mr;
        (0..m.div_ceil(rows)).into_par_iter().for_each(|i| run(0..groups, (i * rows, ((i + 1) * rows).min(m))));
    } else {
        use rayon::prelude::*;
        // A few tasks per thread balances ragged group counts.
        let chunk = groups.div_ceil(t * 2).max(1);
        (0..groups.div_ceil(chunk)).into_par_iter().for_each(|i| run(i * chunk..((i + 1) * chunk).min(groups), (0, m)));
    }
}
