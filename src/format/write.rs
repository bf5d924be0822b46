//! Writing `.evit` files: the layout (tensor offsets, header, checksums) and the file itself,
//! through a temporary that is renamed into place.

use std::borrow::Cow;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use edgevit_kernels::gemm::pack::{channel_sums, pack_k1n16_f16, pack_k1n16_f32, pack_k4n16, quantize_per_row};

use super::{align_up, AlignedBytes, DType, Header, Layout, TensorEntry, MAGIC, MAX_HEADER_LEN, PREFIX_LEN, VERSION};
use crate::config::{ModelConfig, WeightDType};
use crate::error::{Error, Result};

/// A tensor to be written.
#[derive(Clone, Debug)]
pub struct TensorData<'a> {
    /// The tensor's name.
    pub name: String,
    /// Its element type.
    pub dtype: DType,
    /// How its elements are ordered.
    pub layout: Layout,
    /// Its logical shape.
    pub shape: Vec<usize>,
    /// Its bytes, little-endian, already in `layout` order.
    pub bytes: Cow<'a, [u8]>,
}

impl<'a> TensorData<'a> {
    /// A row-major f32 tensor.
    pub fn f32(name: impl Into<String>, shape: Vec<usize>, values: &'a [f32]) -> Self {
        TensorData {
            name: name.into(),
            dtype: DType::F32,
            layout: Layout::RowMajor,
            shape,
            bytes: Cow::Borrowed(bytemuck::cast_slice(values)),
        }
    }

    /// A row-major i32 tensor.
    pub fn i32(name: impl Into<String>, shape: Vec<usize>, values: &[i32]) -> TensorData<'static> {
        let bytes = Cow::Owned(bytemuck::cast_slice(values).to_vec());
        TensorData { name: name.into(), dtype: DType::I32, layout: Layout::RowMajor, shape, bytes }
    }

    /// An `[n, k]` int8 matrix already packed in the k4n16 layout.
    pub fn i8_packed(name: impl Into<String>, n: usize, k: usize, packed: Vec<i8>) -> TensorData<'static> {
        let bytes = Cow::Owned(bytemuck::cast_vec(packed));
        TensorData { name: name.into(), dtype: DType::I8, layout: Layout::K4n16, shape: vec![n, k], bytes }
    }

    /// An `[n, k]` f16 matrix already packed in the k1n16 layout (halves as bits).
    pub fn f16_packed(name: impl Into<String>, n: usize, k: usize, packed: Vec<u16>) -> TensorData<'static> {
        let bytes = Cow::Owned(bytemuck::cast_slice(&packed).to_vec());
        TensorData { name: name.into(), dtype: DType::F16, layout: Layout::K1n16, shape: vec![n, k], bytes }
    }

    /// An `[n, k]` f32 matrix already packed in the k1n16 layout.
    pub fn f32_packed(name: impl Into<String>, n: usize, k: usize, packed: Vec<f32>) -> TensorData<'static> {
        let bytes = Cow::Owned(bytemuck::cast_slice(&packed).to_vec());
        TensorData { name: name.into(), dtype: DType::F32, layout: Layout::K1n16, shape: vec![n, k], bytes }
    }

    /// The same tensor, owning its bytes.
    pub fn into_owned(self) -> TensorData<'static> {
        let bytes = Cow::Owned(self.bytes.into_owned());
        TensorData { name: self.name, dtype: self.dtype, layout: self.layout, shape: self.shape, bytes }
    }
}

/// A Linear layer's weight as the file stores it: the packed weight (`X.weight`) and, for int8,
/// the per-channel scales (`X.scale`) and sums of quantized weights (`X.sum`).
#[derive(Clone, Debug)]
pub struct StoredLinear {
    /// `X.weight`, packed for the kernels.
    pub weight: TensorData<'static>,
    /// int8: `X.scale`.
    pub scale: Option<TensorData<'static>>,
    /// int8: `X.sum`.
    pub sum: Option<TensorData<'static>>,
}

/// The Linear layer `base`'s `[n, k]` row-major f32 weight `w` as the file stores it in `dtype`
/// (see [`super::expected_tensors`]): the one conversion the tools and [`crate::synth`] share.
/// f16 values beyond half precision's range become infinity: callers check the range first.
pub fn store_linear(base: &str, w: &[f32], n: usize, k: usize, dtype: WeightDType) -> StoredLinear {
    let name = format!("{base}.weight");
    let (weight, scale, sum) = match dtype {
        WeightDType::F32 => (TensorData::f32_packed(name, n, k, pack_k1n16_f32(w, n, k)), None, None),
        WeightDType::F16 => (TensorData::f16_packed(name, n, k, pack_k1n16_f16(w, n, k)), None, None),
        WeightDType::Int8 => {
            let (q, scales) = quantize_per_row(w, n, k);
            let sums = channel_sums(&q, n, k);
            (
                TensorData::i8_packed(name, n, k, pack_k4n16(&q, n, k)),
                Some(TensorData::f32(format!("{base}.scale"), vec![n], &scales).into_owned()),
                Some(TensorData::i32(format!("{base}.sum"), vec![n], &sums)),
            )
        }
    };
    StoredLinear { weight, scale, sum }
}

/// A tensor's place in a file to be built: everything but its bytes.
#[derive(Clone, Debug)]
pub struct TensorPlan {
    /// The tensor's name.
    pub name: String,
    /// Its element type.
    pub dtype: DType,
    /// How its elements are ordered.
    pub layout: Layout,
    /// Its logical shape.
    pub shape: Vec<usize>,
}

/// Builds the bytes of an `.evit` file in one aligned buffer, calling `fill(i, bytes)` to write
/// tensor `i` of `plan` in place (the bytes start zeroed), so a model is never held twice.
///
/// The JSON header is laid out for the longest possible checksums and padded with spaces to
/// that length (JSON allows trailing whitespace), so the data section's place is known before
/// any tensor is written.
pub fn build(
    config: &ModelConfig,
    plan: &[TensorPlan],
    mut fill: impl FnMut(usize, &mut [u8]) -> Result<()>,
) -> Result<AlignedBytes> {
    // Whatever is written must open: the reader's checks, before any work.
    config.validate().map_err(|e| Error::Input(format!("cannot write this model: {e}")))?;
    let mut entries = Vec::with_capacity(plan.len());
    let (mut offset, mut end) = (0usize, 0usize);
    for t in plan {
        let shape: Vec<u64> = t.shape.iter().map(|&d| d as u64).collect();
        let length = t.layout.byte_len(t.dtype, &shape).ok_or_else(|| {
            Error::Input(format!(
                "tensor '{}': shape {:?} is not valid for {:?}/{:?}",
                t.name, t.shape, t.dtype, t.layout
            ))
        })?;
        entries.push(TensorEntry {
            name: t.name.clone(),
            dtype: t.dtype,
            layout: t.layout,
            shape,
            offset: offset as u64,
            length,
            crc32: u32::MAX,
        });
        end = offset + length as usize;
        offset = align_up(end);
    }
    let mut header = Header { config: config.clone(), tensors: entries };
    let encode = |h: &Header| serde_json::to_vec(h).map_err(|e| Error::Input(format!("cannot encode the header: {e}")));
    let json_len = encode(&header)?.len();
    if json_len as u64 > MAX_HEADER_LEN {
        return Err(Error::Input(format!(
            "cannot write this model: its header (labels and tensor table) is {json_len} bytes, more than the {MAX_HEADER_LEN} a reader accepts"
        )));
    }
    let data_offset = align_up(PREFIX_LEN + json_len);
    // The data section ends with the last tensor: no trailing padding.
    let data_len = end;

    let mut out = AlignedBytes::zeroed(data_offset + data_len);
    let bytes = out.as_mut_slice();
    for (i, e) in header.tensors.iter_mut().enumerate() {
        let at = data_offset + e.offset as usize;
        let dst = &mut bytes[at..at + e.length as usize];
        fill(i, dst)?;
        e.crc32 = crc32fast::hash(dst);
    }
    let mut json = encode(&header)?;
    json.resize(json_len, b' ');

    let prefix = &mut bytes[..PREFIX_LEN];
    prefix[..8].copy_from_slice(&MAGIC);
    prefix[8..12].copy_from_slice(&VERSION.to_le_bytes());
    prefix[12..16].copy_from_slice(&crc32fast::hash(&json).to_le_bytes());
    prefix[16..24].copy_from_slice(&(json_len as u64).to_le_bytes());
    prefix[24..32].copy_from_slice(&(data_offset as u64).to_le_bytes());
    prefix[32..40].copy_from_slice(&(data_len as u64).to_le_bytes());
    let prefix_crc = crc32fast::hash(&prefix[..60]);
    prefix[60..64].copy_from_slice(&prefix_crc.to_le_bytes());
    bytes[PREFIX_LEN..PREFIX_LEN + json_len].copy_from_slice(&json);
    Ok(out)
}

/// Serialises a model into the bytes of an `.evit` file.
pub fn to_bytes(config: &ModelConfig, tensors: &[TensorData<'_>]) -> Result<AlignedBytes> {
    let plan: Vec<TensorPlan> = tensors
        .iter()
        .map(|t| TensorPlan { name: t.name.clone(), dtype: t.dtype, layout: t.layout, shape: t.shape.clone() })
        .collect();
    build(config, &plan, |i, dst| {
        let src = &tensors[i].bytes;
        if src.len() != dst.len() {
            return Err(Error::Input(format!(
                "tensor '{}': {} bytes for shape {:?}",
                tensors[i].name,
                src.len(),
                tensors[i].shape
            )));
        }
        dst.copy_from_slice(src);
        Ok(())
    })
}

/// Writes a model file atomically: to a temporary file beside `path`, then renamed over it, so
/// an interrupted write never leaves a half-written model under the final name.
pub fn write(path: &Path, config: &ModelConfig, tensors: &[TensorData<'_>]) -> Result<()> {
    write_bytes(path, &to_bytes(config, tensors)?)
}

/// Writes already serialised model bytes atomically (see [`write()`]). The temporary file is
/// `<path>.partial-<pid>-<n>`, so concurrent writers do not collide (the last rename wins);
/// ones left by a writer that was killed are removed by the next write to the same path.
pub fn write_bytes(path: &Path, bytes: &[u8]) -> Result<()> {
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    remove_stale_partials(path);
    let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".partial-{}-{n}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let result = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

/// Removes `<path>.partial-<pid>[-<n>]` files whose writer process no longer runs (and the
/// `<path>.partial` of older versions). Best effort: on systems without `/proc`, or where a
/// file cannot be removed, they stay.
fn remove_stale_partials(path: &Path) {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else { return };
    let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let proc_known = Path::new("/proc/self").exists();
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(rest) = file_name.to_str().and_then(|f| f.strip_prefix(name)) else { continue };
        let stale = match rest.strip_prefix(".partial-") {
            Some(tag) => {
                let pid = tag.split('-').next().unwrap_or("");
                proc_known && pid.parse::<u32>().is_ok_and(|p| !Path::new(&format!("/proc/{p}")).exists())
            }
            None => rest == ".partial",
        };
        if stale {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}
