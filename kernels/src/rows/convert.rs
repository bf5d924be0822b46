//! f32 to IEEE half, rounded to nearest even: the activations and values that the
//! half-precision kernels read, converted once. [`to_halves_scalar`] (the `half` crate) is the
//! twin; NEON's `fcvtn` rounds the same way (FPCR's default mode), subnormals and overflow to
//! infinity included.

/// Converts `src` into `dst` (equal lengths) on the best kernel this CPU has.
pub fn to_halves(src: &[f32], dst: &mut [u16]) {
    assert_eq!(src.len(), dst.len(), "to_halves: lengths differ");
    #[cfg(target_arch = "aarch64")]
    return to_halves_neon(src, dst);
    #[allow(unreachable_code)]
    to_halves_scalar(src, dst)
}

/// The scalar twin.
pub fn to_halves_scalar(src: &[f32], dst: &mut [u16]) {
    assert_eq!(src.len(), dst.len(), "to_halves: lengths differ");
    for (d, &v) in dst.iter_mut().zip(src) {
        *d = half::f16::from_f32(v).to_bits();
    }
}

/// Eight floats per `fcvtn` + `fcvtn2`.
#[cfg(target_arch = "aarch64")]
pub fn to_halves_neon(src: &[f32], dst: &mut [u16]) {
    use std::arch::asm;
    assert_eq!(src.len(), dst.len(), "to_halves: lengths differ");
    let (len, whole) = (src.len(), src.len() / 8 * 8);
    for i in (0..whole).step_by(8) {
        // SAFETY: i + 8 <= len for both slices: reads 32 bytes of `src`, writes 16 of `dst`.
        unsafe {
            asm!(
                "ldp {a:q}, {b:q}, [{s}]",
                "fcvtn {x:v}.4h, {a:v}.4s",
                "fcvtn2 {x:v}.8h, {b:v}.4s",
                "str {x:q}, [{d}]",
                s = in(reg) src.as_ptr().add(i),
                d = in(reg) dst.as_mut_ptr().add(i),
                a = out(vreg) _,
                b = out(vreg) _,
                x = out(vreg) _,
                options(nostack),
            );
        }
    }
    // The rest one value at a time with the scalar `fcvt`, the same rounding: the `half`
    // crate's software conversion cost 0.7% of a Cortex-A76's int8 inference on attention's
    // 197-token rows.
    for i in whole..len {
        // SAFETY: i < len for both slices: reads 4 bytes of `src`, writes 2 of `dst`.
        unsafe {
            asm!(
                "ldr {f:s}, [{s}]",
                "fcvt {h:h}, {f:s}",
                "str {h:h}, [{d}]",
                s = in(reg) src.as_ptr().add(i),
                d = in(reg) dst.as_mut_ptr().add(i),
                f = out(vreg) _,
                h = out(vreg) _,
                options(nostack),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kernel_rounds_like_the_twin() {
        let mut x: Vec<f32> = crate::testing::noise(5, 1000).iter().map(|v| v * 70000.0).collect();
        x.extend([0.0, -0.0, 1e-8, 5.96e-8, 6.1e-5, 65504.0, 65520.0, 1e9, -1e-30, 0.1, 1.0 / 3.0]);
        x.extend([f32::NAN, -f32::NAN, f32::from_bits(0x7fa0_1234), f32::INFINITY, f32::NEG_INFINITY]);
        x.extend((0..2000).map(|i| f32::from_bits(0x3380_0000 + i * 4099)));
        let mut want = vec![0u16; x.len()];
        to_halves_scalar(&x, &mut want);
        // Every start offset mod 8, so that each special value goes through the vector loop
        // and through the tail.
        for start in [0, 995, 996, 997, 998, 999, 1000, 1001, 1002] {
            for len in [0, 1, 7, 8, 9, 15, 16, 17, 31, 33, 197] {
                let mut got = vec![0u16; len];
                to_halves(&x[start..start + len], &mut got);
                assert_eq!(got, want[start..start + len], "start {start} len {len}");
            }
        }
        let mut got = vec![0u16; x.len()];
        to_halves(&x, &mut got);
        assert_eq!(got, want);
    }
}
