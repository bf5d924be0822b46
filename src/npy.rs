//! Reading and writing NumPy `.npy` files: float32 tensors for preprocessed inputs, and uint8
//! arrays for test data. Only C-order little-endian arrays are accepted.

use std::path::Path;

use crate::error::{Error, Result};

/// The element data of a `.npy` array.
#[derive(Clone, Debug, PartialEq)]
pub enum NpyData {
    /// Little-endian float32 values.
    F32(Vec<f32>),
    /// Bytes.
    U8(Vec<u8>),
}

/// A `.npy` array: its shape and data (C order).
#[derive(Clone, Debug, PartialEq)]
pub struct NpyArray {
    /// The dimensions.
    pub shape: Vec<usize>,
    /// The elements.
    pub data: NpyData,
}

const MAGIC: &[u8] = b"\x93NUMPY";
/// Arrays larger than this are refused before any allocation.
const MAX_BYTES: usize = 1 << 31;

/// Reads a `.npy` file (bounded by its header's size, never a device or a FIFO).
pub fn read_npy(path: &Path) -> Result<NpyArray> {
    // The largest array plus the largest header a valid file can have.
    let bytes = crate::files::read_regular(path, (MAX_BYTES + (1 << 20)) as u64, ".npy")?;
    parse_npy(&bytes).map_err(|m| Error::Input(format!("{}: not a usable .npy file: {m}", path.display())))
}

/// Parses `.npy` bytes: format 1.0 to 3.0, float32 or uint8, C order.
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
    let fields = parse_header(header)?;
    let field = |k: &str| fields.iter().find(|(key, _)| key == k).map(|(_, v)| v).ok_or(format!("header has no '{k}'"));
    let HeaderValue::Str(descr) = field("descr")? else { return Err("'descr' is not a string".into()) };
    let descr = descr.as_str();
    match field("fortran_order")? {
        HeaderValue::Bool(false) => {}
        HeaderValue::Bool(true) => {
            return Err("Fortran-order arrays are not supported; save with np.ascontiguousarray".into())
        }
        _ => return Err("'fortran_order' is not True or False".into()),
    }
    let HeaderValue::Tuple(shape) = field("shape")? else { return Err("'shape' is not a tuple".into()) };
    let shape = shape.clone();
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

/// A value of the `.npy` header dict.
#[derive(Clone, Debug, PartialEq)]
enum HeaderValue {
    Str(String),
    Bool(bool),
    Tuple(Vec<usize>),
}

/// Parses the header, a Python dict literal such as
/// `{'descr': '<f4', 'fortran_order': False, 'shape': (3, 224, 224), }`: exactly the keys
/// `descr`, `fortran_order` and `shape`, each once, then optional padding spaces and newline.
fn parse_header(text: &str) -> Result<Vec<(String, HeaderValue)>, String> {
    let mut p = Parser { rest: text.trim_end_matches(['\n', ' ', '\0']) };
    p.expect('{')?;
    let mut fields: Vec<(String, HeaderValue)> = Vec::new();
    loop {
        p.skip_spaces();
        if p.eat('}') {
            break;
        }
        let key = p.string()?;
        p.skip_spaces();
        p.expect(':')?;
        p.skip_spaces();
        let value = match p.peek() {
            Some('\'' | '"') => HeaderValue::Str(p.string()?),
            Some('(') => HeaderValue::Tuple(p.tuple()?),
            _ if p.eat_word("True") => HeaderValue::Bool(true),
            _ if p.eat_word("False") => HeaderValue::Bool(false),
            _ => return Err(format!("header value of '{key}' is not a string, tuple or boolean")),
        };
        if !["descr", "fortran_order", "shape"].contains(&key.as_str()) {
            return Err(format!("header has an unknown key '{key}'"));
        }
        if fields.iter().any(|(k, _)| *k == key) {
            return Err(format!("header has '{key}' twice"));
        }
        fields.push((key, value));
        p.skip_spaces();
        if !p.eat(',') {
            p.skip_spaces();
            p.expect('}')?;
            break;
        }
    }
    if !p.rest.is_empty() {
        return Err("text after the header dict".into());
    }
    Ok(fields)
}

struct Parser<'a> {
    rest: &'a str,
}

impl Parser<'_> {
    fn peek(&self) -> Option<char> {
        self.rest.chars().next()
    }
    fn eat(&mut self, c: char) -> bool {
        match self.rest.strip_prefix(c) {
            Some(r) => {
                self.rest = r;
                true
            }
            None => false,
        }
    }
    fn eat_word(&mut self, w: &str) -> bool {
        match self.rest.strip_prefix(w) {
            Some(r) => {
                self.rest = r;
                true
            }
            None => false,
        }
    }
    fn expect(&mut self, c: char) -> Result<(), String> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(format!("header: expected '{c}'"))
        }
    }
    fn skip_spaces(&mut self) {
        self.rest = self.rest.trim_start_matches(' ');
    }
    /// A quoted string without escapes (numpy's keys and dtype strings have none).
    fn string(&mut self) -> Result<String, String> {
        let quote = self.peek().filter(|&q| q == '\'' || q == '"').ok_or("header: expected a quoted key")?;
        self.rest = &self.rest[1..];
        let end = self.rest.find(quote).ok_or("header: unterminated string")?;
        let s = &self.rest[..end];
        if s.contains('\\') {
            return Err("header: escapes in strings are not supported".into());
        }
        self.rest = &self.rest[end + 1..];
        Ok(s.to_string())
    }
    /// `(d0, d1, ...)`, `(d0,)` or `()`.
    fn tuple(&mut self) -> Result<Vec<usize>, String> {
        self.expect('(')?;
        let end = self.rest.find(')').ok_or("header: unterminated shape tuple")?;
        let inner = &self.rest[..end];
        self.rest = &self.rest[end + 1..];
        let parts: Vec<&str> = inner.split(',').map(str::trim).collect();
        // `()` has no dimensions; `(3,)` ends with a comma.
        let parts = match parts.as_slice() {
            [""] => &[][..],
            [init @ .., ""] if !init.is_empty() => init,
            all => all,
        };
        let mut dims = Vec::new();
        for &part in parts {
            let d: usize = part
                .parse()
                .ok()
                .filter(|d: &usize| d.to_string() == part)
                .ok_or(format!("bad dimension '{part}' in shape"))?;
            dims.push(d);
        }
        Ok(dims)
    }
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
    fn headers_are_parsed_as_dicts_not_searched() {
        let header = |h: &str| {
            let mut b = b"\x93NUMPY\x01\x00".to_vec();
            b.extend_from_slice(&(h.len() as u16).to_le_bytes());
            b.extend_from_slice(h.as_bytes());
            b.extend_from_slice(&[7u8; 3]);
            parse_npy(&b)
        };
        assert!(header("{'descr': '|u1', 'fortran_order': False, 'shape': (3,), }\n").is_ok());
        assert!(header("{'descr': '|u1', 'fortran_order': False, 'shape': (3,)}").is_ok());
        // 'shape' inside another key's string value is not the shape.
        let e = header("{'descr': \"'shape': (3,)\", 'fortran_order': False, 'x': 1}").unwrap_err();
        assert!(e.contains("not supported") || e.contains("unknown key") || e.contains("not a string"), "{e}");
        assert!(header("{'descr': '|u1', 'fortran_order': False, 'shape': (3,), 'shape': (3,)}")
            .unwrap_err()
            .contains("twice"));
        assert!(header("{'descr': '|u1', 'fortran_order': False}").unwrap_err().contains("no 'shape'"));
        assert!(header("{'descr': '|u1', 'fortran_order': 0, 'shape': (3,)}").is_err());
        assert!(header("{'descr': '|u1', 'fortran_order': False, 'shape': (+3,)}").is_err());
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
