//! The `.evit` model file, version 1: the one definition of its reader and its writer.
//! docs/format.md specifies the bytes; keep the two in step.
//!
//! Layout: a 64-byte prefix, a UTF-8 JSON header (config + tensor table), zero padding to a
//! multiple of 64, then the data section holding every tensor at a 64-byte aligned offset.
//! Everything is little-endian. Opening validates every number the header holds, so a
//! damaged file is refused with a message instead of failing later.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::ModelConfig;
use crate::error::{Error, Result};

mod schema;
mod write;
pub use schema::{expected_tensors, TensorSpec};
pub use write::{build, store_linear, to_bytes, write, write_bytes, StoredLinear, TensorData, TensorPlan};

#[cfg(target_endian = "big")]
compile_error!("edgevit reads its little-endian model files in place and supports only little-endian CPUs");

/// The file's first 8 bytes (PNG-style: a high byte, the name, CR LF, EOF, ...).
pub const MAGIC: [u8; 8] = *b"\x89EVIT\r\n\x1a";
/// The format version this build reads and writes.
pub const VERSION: u32 = 1;
/// Bytes of the fixed prefix before the JSON header.
pub const PREFIX_LEN: usize = 64;
/// Alignment of the data section and of every tensor in it.
pub const ALIGN: usize = 64;
/// A JSON header larger than this is refused before it is parsed.
pub const MAX_HEADER_LEN: u64 = 64 << 20;

/// Element types a tensor may have.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DType {
    /// 32-bit IEEE 754.
    F32,
    /// IEEE 754 half precision.
    F16,
    /// Signed 8-bit integer.
    I8,
    /// Signed 32-bit integer.
    I32,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F32 | DType::I32 => 4,
            DType::F16 => 2,
            DType::I8 => 1,
        }
    }
}

/// How a tensor's elements are ordered in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    /// C order: the last dimension varies fastest. Linear weights are `[out, in]`.
    RowMajor,
    /// A `[N, K]` int8 matrix packed for the int8 GEMM kernels: panels of 16 rows (output
    /// channels), K in groups of 4; N padded to 16 and K to 4 with zeros (docs/format.md).
    K4n16,
    /// A `[N, K]` f16 or f32 matrix packed for the GEMM kernels: panels of 16 rows (output
    /// channels); within a panel, for each k, the 16 channels' values. N padded to 16 with
    /// zeros (docs/format.md).
    K1n16,
}

impl Layout {
    /// Bytes a tensor of this layout, dtype and shape occupies, if the combination is valid.
    pub fn byte_len(self, dtype: DType, shape: &[u64]) -> Option<u64> {
        match (self, dtype, shape) {
            (Layout::RowMajor, _, _) => shape.iter().try_fold(dtype.size() as u64, |acc, &d| acc.checked_mul(d)),
            (Layout::K4n16, DType::I8, &[n, k]) => {
                n.checked_next_multiple_of(16)?.checked_mul(k.checked_next_multiple_of(4)?)
            }
            (Layout::K4n16, _, _) => None,
            (Layout::K1n16, DType::F16 | DType::F32, &[n, k]) => {
                n.checked_next_multiple_of(16)?.checked_mul(k)?.checked_mul(dtype.size() as u64)
            }
            (Layout::K1n16, _, _) => None,
        }
    }
}

/// One entry of the tensor table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TensorEntry {
    /// The tensor's name (see [`expected_tensors`]).
    pub name: String,
    /// Its element type.
    pub dtype: DType,
    /// How its elements are ordered.
    pub layout: Layout,
    /// Its logical shape (`[out, in]` for a weight, whatever its packing).
    pub shape: Vec<u64>,
    /// Byte offset from the start of the data section; a multiple of 64.
    pub offset: u64,
    /// Byte length: product(shape) x dtype size for `row_major`; the padded size for `k4n16`.
    pub length: u64,
    /// CRC-32 (IEEE, as zlib's crc32) of the tensor's bytes.
    pub crc32: u32,
}

impl TensorEntry {
    /// Elements the shape holds, or `None` on overflow.
    pub fn numel(&self) -> Option<u64> {
        self.shape.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d))
    }
}

/// The JSON header: the config and the tensor table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    /// The model's configuration.
    pub config: ModelConfig,
    /// Every tensor, in file order.
    pub tensors: Vec<TensorEntry>,
}

/// Bytes with a 64-byte aligned start, so that tensors at 64-aligned offsets can be read in
/// place as f32/i32 slices, as they are from a memory map.
pub struct AlignedBytes {
    blocks: Vec<Block>,
    len: usize,
}

#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C, align(64))]
struct Block([u8; 64]);

impl AlignedBytes {
    /// `len` zero bytes.
    pub fn zeroed(len: usize) -> Self {
        AlignedBytes { blocks: vec![Block([0; 64]); len.div_ceil(64)], len }
    }
    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        &bytemuck::cast_slice(&self.blocks)[..self.len]
    }
    /// The bytes, to fill.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut bytemuck::cast_slice_mut(&mut self.blocks)[..self.len]
    }
}

impl std::ops::Deref for AlignedBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

/// Where an open file's bytes live.
enum Backing {
    /// Memory-mapped: pages are read from the file on first touch and shared with the page cache.
    Map(memmap2::Mmap),
    /// Read into (or built in) memory: immune to the file changing, at the cost of a copy.
    Owned(AlignedBytes),
}

/// An open, validated model file. Mapped files are read in place; nothing is copied.
pub struct EvitFile {
    path: PathBuf,
    bytes: Backing,
    header: Header,
    data_offset: usize,
}

impl EvitFile {
    /// Maps and validates `path`. Checks the header checksum, every offset, length, shape and
    /// alignment, but not the tensor checksums (see [`EvitFile::verify`]).
    pub fn open(path: &Path) -> Result<Self> {
        let file = crate::files::open_regular(path, "model")?;
        let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        if len < PREFIX_LEN as u64 {
            return Err(Error::format(
                path,
                format!("the file is {len} bytes, shorter than the {PREFIX_LEN}-byte prefix"),
            ));
        }
        // SAFETY: the map is read-only and private to this process. If another process
        // truncates the file while it is mapped, reads past the new end fault (SIGBUS); see
        // docs/format.md ("Changing a file in use"). We never write through the map.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        Self::validate(path, Backing::Map(map))
    }

    /// Reads the whole of `path` into memory and validates it: for filesystems where mapping
    /// is unwise (network mounts, files that may be replaced while in use).
    pub fn read(path: &Path) -> Result<Self> {
        use std::io::Read;
        let mut file = crate::files::open_regular(path, "model")?;
        let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        let len = usize::try_from(len)
            .map_err(|_| Error::format(path, format!("the file is {len} bytes, too large to read into memory")))?;
        let mut bytes = AlignedBytes::zeroed(len);
        file.read_exact(bytes.as_mut_slice()).map_err(|e| Error::io(path, e))?;
        Self::validate(path, Backing::Owned(bytes))
    }

    /// Validates a model built in memory (e.g. by [`crate::synth`]); `name` stands in for the
    /// path in messages.
    pub fn from_bytes(name: &str, bytes: AlignedBytes) -> Result<Self> {
        Self::validate(Path::new(name), Backing::Owned(bytes))
    }

    fn validate(path: &Path, bytes: Backing) -> Result<Self> {
        let all = match &bytes {
            Backing::Map(m) => &m[..],
            Backing::Owned(b) => b.as_slice(),
        };
        let (header, data_offset) = parse(all).map_err(|m| Error::format(path, m))?;
        let file = EvitFile { path: path.to_path_buf(), bytes, header, data_offset };
        file.check_values().map_err(|m| Error::format(path, m))?;
        Ok(file)
    }

    /// Every float tensor must be finite and every padding byte zero: a file that passes its
    /// checksums can still hold NaN weights or hidden bytes, and NaN would only show up as
    /// NaN probabilities. Reads every float tensor (in parallel); int8 weights are checked by
    /// the model against their channel sums.
    fn check_values(&self) -> Result<(), String> {
        use rayon::prelude::*;
        let all = self.all_bytes();
        let data = &all[self.data_offset..];
        // Padding: between the JSON and the data section, and between tensors (sorted by offset).
        let json_end = PREFIX_LEN + read_u64(all, 16) as usize;
        if all[json_end..self.data_offset].iter().any(|&b| b != 0) {
            return Err("non-zero bytes between the JSON header and the data section".into());
        }
        let mut spans: Vec<(usize, usize)> =
            self.header.tensors.iter().map(|t| (t.offset as usize, (t.offset + t.length) as usize)).collect();
        spans.sort_unstable();
        let mut at = 0;
        for (start, end) in spans {
            if start > align_up(at) || data[at..start].iter().any(|&b| b != 0) {
                return Err(format!("bytes {at}..{start} of the data section belong to no tensor"));
            }
            at = end;
        }
        if at != data.len() {
            return Err(format!("bytes {at}..{} at the end of the data section belong to no tensor", data.len()));
        }
        self.header.tensors.par_iter().enumerate().try_for_each(|(i, t)| {
            let bytes = self.tensor_bytes(i);
            let bad = match t.dtype {
                DType::F32 => bytemuck::cast_slice::<u8, f32>(bytes).iter().position(|v| !v.is_finite()),
                // An all-ones exponent is infinity or NaN.
                DType::F16 => bytemuck::cast_slice::<u8, u16>(bytes).iter().position(|h| h & 0x7c00 == 0x7c00),
                DType::I8 | DType::I32 => None,
            };
            match bad {
                Some(e) => Err(format!(
                    "tensor '{}' holds NaN or infinity (element {e}): the file is damaged or was not made by edgevit-tools",
                    t.name
                )),
                None => Ok(()),
            }
        })
    }

    fn all_bytes(&self) -> &[u8] {
        match &self.bytes {
            Backing::Map(m) => m,
            Backing::Owned(b) => b.as_slice(),
        }
    }

    /// The path the file was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// The parsed and validated header.
    pub fn header(&self) -> &Header {
        &self.header
    }
    /// The file's length in bytes.
    pub fn file_len(&self) -> usize {
        self.all_bytes().len()
    }
    /// True if the bytes are memory-mapped from the file, false if held in memory.
    pub fn is_mapped(&self) -> bool {
        matches!(self.bytes, Backing::Map(_))
    }

    /// The bytes of tensor `index` in the table (validated at open).
    pub fn tensor_bytes(&self, index: usize) -> &[u8] {
        let t = &self.header.tensors[index];
        let start = self.data_offset + t.offset as usize;
        &self.all_bytes()[start..start + t.length as usize]
    }

    /// Checks every tensor's CRC-32. Reads the whole file.
    pub fn verify(&self) -> Result<()> {
        for (i, t) in self.header.tensors.iter().enumerate() {
            let crc = crc32fast::hash(self.tensor_bytes(i));
            if crc != t.crc32 {
                return Err(Error::format(
                    &self.path,
                    format!("tensor '{}' is damaged: checksum {crc:08x}, expected {:08x}", t.name, t.crc32),
                ));
            }
        }
        Ok(())
    }
}

fn read_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn read_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Validates the whole header of `bytes` and returns it with the data section's offset.
pub fn parse(bytes: &[u8]) -> Result<(Header, usize), String> {
    let file_len = bytes.len() as u64;
    if bytes.len() < PREFIX_LEN {
        return Err(format!("the file is {file_len} bytes, shorter than the {PREFIX_LEN}-byte prefix"));
    }
    let prefix = &bytes[..PREFIX_LEN];
    if prefix[..8] != MAGIC {
        return Err("wrong magic number: this is not an .evit file (make one with `edgevit-tools quantize`)".into());
    }
    let version = read_u32(prefix, 8);
    if version != VERSION {
        return Err(if version > VERSION {
            format!("format version {version} is newer than this edgevit reads ({VERSION}); upgrade edgevit")
        } else {
            format!("format version {version} is not supported (this edgevit reads {VERSION})")
        });
    }
    let prefix_crc = read_u32(prefix, 60);
    if crc32fast::hash(&prefix[..60]) != prefix_crc {
        return Err("the 64-byte prefix is damaged (checksum mismatch)".into());
    }
    if prefix[40..60].iter().any(|&b| b != 0) {
        return Err("reserved prefix bytes 40..60 are not zero".into());
    }
    let header_crc = read_u32(prefix, 12);
    let json_len = read_u64(prefix, 16);
    let data_offset = read_u64(prefix, 24);
    let data_len = read_u64(prefix, 32);
    if json_len > MAX_HEADER_LEN {
        return Err(format!("header claims {json_len} bytes of JSON, more than the {MAX_HEADER_LEN} allowed"));
    }
    let json_end = PREFIX_LEN as u64 + json_len;
    if json_end > file_len {
        return Err(format!("truncated: the header needs {json_end} bytes but the file has {file_len}"));
    }
    if data_offset < json_end || !data_offset.is_multiple_of(ALIGN as u64) {
        return Err(format!(
            "data offset {data_offset} must be a multiple of {ALIGN} at or after the header's end ({json_end})"
        ));
    }
    match data_offset.checked_add(data_len) {
        Some(end) if end == file_len => {}
        Some(end) if end > file_len => {
            return Err(format!("truncated: the data section ends at byte {end} but the file has {file_len}"))
        }
        _ => {
            return Err(format!(
                "the data section ({data_len} bytes at {data_offset}) does not end where the file does ({file_len})"
            ))
        }
    }
    let json = &bytes[PREFIX_LEN..json_end as usize];
    if crc32fast::hash(json) != header_crc {
        return Err("the JSON header is damaged (checksum mismatch)".into());
    }
    let header: Header = serde_json::from_slice(json).map_err(|e| format!("the JSON header is invalid: {e}"))?;
    header.config.validate().map_err(|e| format!("config: {e}"))?;
    validate_tensors(&header.tensors, data_len)?;
    Ok((header, data_offset as usize))
}

fn validate_tensors(tensors: &[TensorEntry], data_len: u64) -> Result<(), String> {
    let mut names = HashSet::new();
    let mut spans = Vec::with_capacity(tensors.len());
    for t in tensors {
        if !names.insert(t.name.as_str()) {
            return Err(format!("tensor '{}' appears twice", t.name));
        }
        if t.layout.byte_len(t.dtype, &t.shape) != Some(t.length) {
            return Err(format!(
                "tensor '{}': shape {:?} of {:?} in layout {:?} does not make {} bytes",
                t.name, t.shape, t.dtype, t.layout, t.length
            ));
        }
        if t.offset % ALIGN as u64 != 0 {
            return Err(format!("tensor '{}': offset {} is not a multiple of {ALIGN}", t.name, t.offset));
        }
        match t.offset.checked_add(t.length) {
            Some(end) if end <= data_len => spans.push((t.offset, end, t.name.as_str())),
            _ => {
                return Err(format!(
                    "tensor '{}': bytes {}..+{} lie outside the {data_len}-byte data section",
                    t.name, t.offset, t.length
                ))
            }
        }
    }
    spans.sort_unstable();
    for w in spans.windows(2) {
        if w[1].0 < w[0].1 {
            return Err(format!("tensors '{}' and '{}' overlap", w[0].2, w[1].2));
        }
    }
    Ok(())
}

pub(crate) fn align_up(n: usize) -> usize {
    n.div_ceil(ALIGN) * ALIGN
}
