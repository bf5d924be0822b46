//! The scalar microkernel: the twin every SIMD kernel is tested against.

use super::{KG, MR_MAX, NR};

pub fn kernel(a: &[i8], stride: usize, rows: usize, panel: &[i8], acc: &mut [i32; MR_MAX * NR]) {
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
            acc[r * NR + c] = s;
        }
    }
}
