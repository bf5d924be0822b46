//! The scalar microkernel: the twin every SIMD kernel is tested against.

// Register tiles are indexed by row and panel; index loops read clearer than iterators here.
#![allow(clippy::needless_range_loop)]

use super::{KG, MR_MAX, NR, TILE_N};

pub fn kernel(a: &[i8], stride: usize, rows: usize, panel: &[i8], acc: &mut [i32; MR_MAX * TILE_N]) {
    let groups = stride / KG;
    for r in 0..rows {
        let row = &a[r * stride..(r + 1) * stride];
        for c in 0..NR {
            let mut s = 0i32;
            for g in 0..groups {
                for j in 0..KG {
                    s += row[g * KG + j] as i32 * panel[(g * NR + c) * KG + j] as i32;
                }
            }
            acc[r * TILE_N + c] = s;
        }
    }
}
