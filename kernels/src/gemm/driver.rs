//! The one GEMM driver, shared by every dtype: the loops around the microkernel (BLIS's outer
//! loops). Output columns come in groups of `np` weight panels (one microkernel call's width).
//! Threads take contiguous runs of groups, so each reads only its own weights (cut into row
//! parts too where the runs alone would not go evenly to the threads), or, where the weights
//! are small, contiguous runs of row tiles (`ROW_SPLIT_MAX_WEIGHT_BYTES`). One call
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
/// cols, factors)` sets the group's epilogue factors. A group at the right edge may have fewer than
/// `np` panels, and the block fewer columns than its panels hold.
pub(crate) fn drive(
    p: Problem,
    out: &mut [f32],
    ldo: usize,
    epilogue: Epilogue,
    threads: Threads,
    columns: impl Fn(usize, usize, &mut Columns) + Sync,
    micro: impl Fn(usize, usize, &Columns, usize, OutBlock<'_>) + Sync,
) {
    let Problem { m, n, mr, np, .. } = p;
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
        let mut factors = Columns::PLAIN;
        for g in range {
            let p0 = g * np;
            let group_panels = np.min(panels - p0);
            let col0 = p0 * NR;
            let cols = (group_panels * NR).min(n - col0);
            columns(col0, cols, &mut factors);
            // SAFETY: rows r0..r1 and columns col0..col0+cols lie inside `out` (checked above:
            // out holds (m - 1) * ldo + n floats, r1 <= m); this task is the only one that
            // writes them, and `out` is exclusively borrowed for the call.
            let block = unsafe { OutBlock::new(out_ptr.get().add(r0 * ldo + col0), ldo, r1 - r0, cols, epilogue) };
            micro(p0, group_panels, &factors, r0, block);
        }
    };
    match split(p, threads.get()) {
        Split::Serial => run(0..groups, (0, m)),
        Split::Tasks { chunk, rows } => {
            use rayon::prelude::*;
            let parts = m.div_ceil(rows);
            (0..groups.div_ceil(chunk) * parts).into_par_iter().for_each(|i| {
                let (c, r) = (i / parts, i % parts);
                run(c * chunk..((c + 1) * chunk).min(groups), (r * rows, ((r + 1) * rows).min(m)))
            });
        }
    }
}

/// How [`drive`] shares a GEMM among threads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Split {
    /// All on the calling thread.
    Serial,
    /// Tasks of `chunk` column groups by `rows` rows (whole row tiles). Split by rows, a task
    /// takes every group; split by columns, all the rows, unless the runs of groups alone
    /// would not go evenly to the threads (ViT-Ti's f32 patch embedding on NEON: 6 runs of 2
    /// groups on 4 threads, two runs each for two of them), where each run is also cut into
    /// row parts.
    Tasks { chunk: usize, rows: usize },
}

fn split(p: Problem, t: usize) -> Split {
    let Problem { m, n, k, mr, np, weight_size } = p;
    let (tiles, groups) = (m.div_ceil(mr), n.div_ceil(NR).div_ceil(np));
    if t <= 1 || m * n * k < PARALLEL_WORK {
        Split::Serial
    } else if n * k * weight_size <= ROW_SPLIT_MAX_WEIGHT_BYTES && m >= 2 * t * mr {
        // Whole row tiles per thread, as evenly as they go.
        Split::Tasks { chunk: groups, rows: tiles.div_ceil(t) * mr }
    } else {
        // A few tasks per thread balances ragged group counts.
        let chunk = groups.div_ceil(t * 2).max(1);
        // Row parts enough for the task count to be a multiple of t, while each keeps two
        // row tiles or more.
        let parts = t / gcd(groups.div_ceil(chunk), t);
        let parts = if tiles >= 2 * parts { parts } else { 1 };
        Split::Tasks { chunk, rows: tiles.div_ceil(parts) * mr }
    }
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The microkernels' tiles: (mr, np) of NEON and AVX2 (4 or 6 x 16), AVX-512 (8 x 32).
    const TILES: [(usize, usize); 3] = [(4, 1), (6, 1), (8, 2)];

    fn problem(m: usize, n: usize, k: usize, weight_size: usize, (mr, np): (usize, usize)) -> Problem {
        Problem { m, n, k, mr, np, weight_size }
    }

    /// The busiest thread's share of the work if the tasks go out as evenly as they can:
    /// tasks weighed by rows x columns, dealt to threads one at a time to the least loaded.
    fn busiest_share(p: Problem, t: usize) -> f64 {
        let groups = p.n.div_ceil(NR).div_ceil(p.np);
        let cols = |g0: usize, g1: usize| ((g1.min(groups) * p.np * NR).min(p.n) - g0 * p.np * NR) as f64;
        let mut tasks: Vec<f64> = match split(p, t) {
            Split::Serial => vec![1.0],
            Split::Tasks { chunk, rows } => (0..groups)
                .step_by(chunk)
                .flat_map(|g| {
                    (0..p.m).step_by(rows).map(move |r| cols(g, g + chunk) * ((r + rows).min(p.m) - r) as f64)
                })
                .collect(),
        };
        let total: f64 = tasks.iter().sum();
        tasks.sort_by(|a, b| b.total_cmp(a));
        let mut load = vec![0.0f64; t];
        for w in tasks {
            let least = (0..t).min_by(|&a, &b| load[a].total_cmp(&load[b])).unwrap();
            load[least] += w;
        }
        load.iter().copied().fold(0.0, f64::max) / total
    }

    fn assert_even(shapes: [(usize, usize, usize, usize); 5]) {
        for tile in TILES {
            for (m, n, k, weight_size) in shapes {
                let p = problem(m, n, k, weight_size, tile);
                for t in 2..=4 {
                    // Within 7% of even, or one row tile more (whole tiles go to threads).
                    let (share, tile_share) = (busiest_share(p, t), p.mr as f64 / m as f64);
                    assert!(
                        share <= (1.0 / t as f64 * 1.07).max(1.0 / t as f64 + tile_share),
                        "{p:?} on {t} threads: {share:.3} {:?}",
                        split(p, t)
                    );
                }
            }
        }
    }

    #[test]
    fn vit_ti_gemms_go_evenly_to_two_three_and_four_threads() {
        // int8 qkv, projection, fc1, fc2 (row split), the f32 patch embedding (590 KB of
        // weights: column split).
        assert_even([
            (197, 576, 192, 1),
            (197, 192, 192, 1),
            (197, 768, 192, 1),
            (197, 192, 768, 1),
            (196, 192, 768, 4),
        ]);
        // The patch embedding's 12 groups of 16 columns went to four threads as 6 runs of 2.
        assert_eq!(split(problem(196, 192, 768, 4, (4, 1)), 4), Split::Tasks { chunk: 2, rows: 100 });
        assert_eq!(split(problem(196, 192, 768, 4, (4, 1)), 2), Split::Tasks { chunk: 3, rows: 196 });
        // AVX-512's 6 groups of 32 went to two threads as 3 runs of 2.
        assert_eq!(split(problem(196, 192, 768, 4, (8, 2)), 2), Split::Tasks { chunk: 2, rows: 104 });
    }

    #[test]
    fn vit_b_gemms_go_evenly_to_two_three_and_four_threads() {
        // qkv, projection, fc1, fc2 in int8, the patch embedding in f32: all column splits.
        assert_even([
            (197, 2304, 768, 1),
            (197, 768, 768, 1),
            (197, 3072, 768, 1),
            (197, 768, 3072, 1),
            (196, 768, 768, 4),
        ]);
    }

    #[test]
    fn small_gemms_stay_on_the_calling_thread_and_short_ones_keep_their_rows_whole() {
        assert_eq!(split(problem(1, 1000, 192, 4, (4, 1)), 4), Split::Serial);
        assert_eq!(split(problem(197, 576, 192, 1, (4, 1)), 1), Split::Serial);
        // Two row tiles cannot be cut into two parts of two tiles or more.
        assert_eq!(split(problem(8, 192, 768, 4, (4, 1)), 4), Split::Tasks { chunk: 2, rows: 8 });
    }
}
