//! Reading and writing NumPy `.npy` files: float32 tensors for preprocessed inputs, and uint8
//! arrays for test data. Only C-order little-endian arrays are accepted.

use std::path::Path;

use crate::error::{Error, Result};

#[derive(Clone, Debug, PartialEq)]
pub enum NpyData {
    F32(Vec<f32>),
    U8(Vec<u8>),
}

#[derive(Clone, Debug, PartialEq)]
pub struct NpyArray {
    pub shape: Vec<usize>,
    pub data: NpyData,
}

const MAGIC: &[u8] = b"\x93NUMPY";
/// Arrays larger than this are refused before any allocation.
const MAX_BYTES: usize = 1 << 31;

pub fn read_npy(path: &Path) -> Result<NpyArray> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    parse_npy(&bytes).map_err(|m| Error::Input(format!("{}: not a usable .npy file: {m}", path.display())))
}

pub fn parse_npy(bytes: &[u8]) -> Result<NpyArray, String> {
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err("missing the \\x93NUMPY magic".into());
    }
    let (header_len, start): (usize, usize) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12),
        v => return Err(format!("unsupported .npy version {v}")),
    };
    let end = start.checked_add(header_len).filter(|&e| e <= bytes.len()).ok_or("truncated header")?;
    let header = std::str::from_utf8(&bytes[start..end]).map_err(|_| "header is not text")?;
    let descr = dict_value(header, "descr").ok_or("header has no 'descr'")?;
    let descr = descr.trim_matches(|c| c == '\'' || c == '"');
    let fortran = dict_value(header, "fortran_order").ok_or("header has no 'fortran_order'")?;
    if fortran != "False" {
        return Err("Fortran-order arrays are not supported; save with np.ascontiguousarray".into());
    }
    let shape_text = dict_value(header, "shape").ok_or("header has no 'shape'")?;
    let shape: Vec<usize> = shape_text
        .trim_matches(|c| c == '(' || c == ')')
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>().map_err(|_| format!("bad dimension '{s}' in shape")))
        .collect::<Result<_, _>>()?;
    let numel = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or("shape overflows")?;
    let elem = match descr {
        "<f4" => 4,
        "|u1" | "<u1" | "u1" => 1,
        other => return Err(format!("dtype '{other}' is not supported (float32 '<f4' or uint8 '|u1')")),
    };
    let nbytes = numel.checked_mul(elem).filter(|&n| n <= MAX_BYTES).ok_or("array is too large")?;
    let body = &bytes[end..];
    if body.len() != nbytes {
        return Err(format!("shape {shape:?} needs {nbytes} bytes of data but the file has {}", body.len()));
    }
    let data = if elem == 4 {
        NpyData::F32(body.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
    } else {
        NpyData::U8(body.to_vec())
    };
    Ok(NpyArray { shape, data })
}

/// The text after `'key':` in a Python dict literal, up to the matching comma or brace.
fn dict_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let at = header.find(&format!("'{key}'")).or_else(|| header.find(&format!("\"{key}\"")))?;
    let rest = header[at + key.len() + 2..].trim_start().strip_prefix(':')?.trim_start();
    let end = if rest.starts_with('(') { rest.find(')')? + 1 } else { rest.find([',', '}'])? };
    Some(rest[..end].trim())
}

/// Serialises a float32 array as `.npy` version 1.0.
pub fn npy_f32_bytes(shape: &[usize], values: &[f32]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_text = if dims.len() == 1 { format!("({},)", dims[0]) } else { format!("({})", dims.join(", ")) };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape_text}, }}");
    // Pad so the data starts on a 64-byte boundary, ending the header with a newline.
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + values.len() * 4);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_numpy_spelling() {
        let bytes = npy_f32_bytes(&[1, 3, 2, 2], &[0.5; 12]);
        let a = parse_npy(&bytes).unwrap();
        assert_eq!(a.shape, vec![1, 3, 2, 2]);
        assert_eq!(a.data, NpyData::F32(vec![0.5; 12]));
        // Header exactly as numpy 1.x writes it for np.zeros(3, np.uint8).
        let mut np = b"\x93NUMPY\x01\x00v\x00{'descr': '|u1', 'fortran_order': False, 'shape': (3,), }".to_vec();
        np.resize(10 + 0x76 - 1, b' ');
        np.push(b'\n');
        np.extend_from_slice(&[1, 2, 3]);
        assert_eq!(parse_npy(&np).unwrap(), NpyArray { shape: vec![3], data: NpyData::U8(vec![1, 2, 3]) });
    }

    #[test]
    fn damaged_files_are_errors() {
        let bytes = npy_f32_bytes(&[2, 2], &[1.0; 4]);
        assert!(parse_npy(&bytes[..bytes.len() - 1]).unwrap_err().contains("needs 16 bytes"));
        assert!(parse_npy(&bytes[..20]).is_err());
        assert!(parse_npy(b"garbage").is_err());
        let mut f64_header = bytes.clone();
        let at = f64_header.windows(3).position(|w| w == b"<f4").unwrap();
        f64_header[at + 2] = b'8';
        assert!(parse_npy(&f64_header).unwrap_err().contains("'<f8' is not supported"));
    }
}
