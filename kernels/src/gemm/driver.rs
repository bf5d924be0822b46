//! The one GEMM driver, shared by every dtype: the loops around the microkernel (BLIS's outer
//! loops). Output columns come in groups of `np` weight panels (one microkernel call's width);
//! threads take contiguous runs of groups, so each reads only its own weights. One call per
//! group hands the microkernel the whole column strip, which it walks down `mr` rows at a time
//! while the group's panels stay in L1 (a call per tile cost a function's prologue and
//! epilogue per 4 x 16 tile: 5% of a Cortex-A76's int8 inference). The microkernel finishes
//! each tile itself through the [`super::epilogue`].

use super::{Columns, Epilogue, OutBlock, NR};
use crate::{OutPtr, Threads};

/// Below this many multiply-adds a GEMM runs on the calling thread: splitting costs more.
const PARALLEL_WORK: usize = 1 << 18;

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
    let Problem { m, n, k, mr, np } = p;
    assert!(ldo >= n && (m == 0 || out.len() >= (m - 1) * ldo + n), "gemm: output too small");
    assert!((1..=2).contains(&np) && mr >= 1);
    if m == 0 || n == 0 {
        return;
    }
    let panels = n.div_ceil(NR);
    let groups = panels.div_ceil(np);
    let out_ptr = OutPtr(out.as_mut_ptr());
    let run_groups = |range: std::ops::Range<usize>| {
        for g in range {
            let p0 = g * np;
            let group_panels = np.min(panels - p0);
            let col0 = p0 * NR;
            let cols = (group_panels * NR).min(n - col0);
            let factors = columns(col0, cols);
            // SAFETY: rows 0..m and columns col0..col0+cols lie inside `out` (checked above: out
            // holds (m - 1) * ldo + n floats); this task is the only one that writes columns
            // col0..col0+cols, and `out` is exclusively borrowed for the call.
            let block = unsafe { OutBlock::new(out_ptr.get().add(col0), ldo, m, cols, epilogue) };
            micro(p0, group_panels, &factors, 0, block);
        }
    };
    let t = threads.get();
    if t <= 1 || m * n * k < PARALLEL_WORK {
        run_groups(0..groups);
    } else {
        use rayon::prelude::*;
        // A few tasks per thread balances ragged group counts.
        let chunk = groups.div_ceil(t * 2).max(1);
        (0..groups.div_ceil(chunk)).into_par_iter().for_each(|i| run_groups(i * chunk..((i + 1) * chunk).min(groups)));
    }
}
