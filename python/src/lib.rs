//! `edgevit._edgevit`: the Rust runtime as a Python extension, wrapped by `edgevit/__init__.py`
//! (which turns PIL images and numpy arrays of any layout into what these functions take).
//!
//! Each model owns a thread pool and a stack of sessions (each with a frame tensor): a call
//! takes one, making one only when every session is busy in another Python thread, so
//! repeated calls allocate no scratch memory, as in the CLI. The GIL is released while an image is decoded, converted,
//! resized and classified; numpy arrays are read in place.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use edgevit::stream::{FrameFormat, RawFrame, YuvMatrix, YuvRange, YuvToRgb};
use edgevit::{Error, OpTimes, Session};
use numpy::{PyArray1, PyReadonlyArrayDyn};
use pyo3::create_exception;
use pyo3::exceptions::{
    PyException, PyFileNotFoundError, PyIsADirectoryError, PyOSError, PyPermissionError, PyRuntimeError, PyValueError,
};
use pyo3::prelude::*;

create_exception!(
    _edgevit,
    ModelError,
    PyException,
    "A model file that is damaged, truncated, or not an .evit file made by edgevit-tools."
);

/// As the CLI's `--threads`.
const MAX_THREADS: i64 = 256;

/// The runtime's error as the Python exception a caller would expect, with the CLI's message.
fn to_py(e: Error) -> PyErr {
    let message = e.to_string();
    match e {
        Error::Io { source, .. } => match source.kind() {
            std::io::ErrorKind::NotFound => PyFileNotFoundError::new_err(message),
            std::io::ErrorKind::PermissionDenied => PyPermissionError::new_err(message),
            std::io::ErrorKind::IsADirectory => PyIsADirectoryError::new_err(message),
            _ => PyOSError::new_err(message),
        },
        Error::Format { .. } => ModelError::new_err(message),
        Error::Input(_) => PyValueError::new_err(message),
        Error::Unsupported(_) => PyRuntimeError::new_err(message),
    }
}

/// One call's scratch space: the forward pass's buffers, and a frame's input tensor.
struct Scratch {
    session: Session,
    pixels: Vec<f32>,
}

/// An open model with its threads and spare scratch spaces.
struct Loaded {
    model: edgevit::Model,
    pool: rayon::ThreadPool,
    sessions: Mutex<Vec<Scratch>>,
    /// Where the last forward pass (of any thread) spent its time.
    last_times: Mutex<OpTimes>,
}

impl Loaded {
    fn spare(&self) -> MutexGuard<'_, Vec<Scratch>> {
        // A panic elsewhere cannot leave the list half-changed: push and pop are whole.
        self.sessions.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `f` on the model's threads with a free scratch space.
    fn run<R: Send>(&self, f: impl FnOnce(&edgevit::Model, &mut Scratch) -> R + Send) -> R {
        self.pool.install(|| {
            // Sessions are sized for the pool they are made in: make them inside it.
            let mut scratch =
                self.spare().pop().unwrap_or_else(|| Scratch { session: self.model.session(), pixels: Vec::new() });
            let result = f(&self.model, &mut scratch);
            *self.last_times.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = *scratch.session.op_times();
            self.spare().push(scratch);
            result
        })
    }

    fn input_len(&self) -> usize {
        self.model.architecture().input_len()
    }
}

/// A raw frame's description, checked.
struct FrameSpec {
    format: FrameFormat,
    width: usize,
    height: usize,
    stride: Option<usize>,
    yuv: YuvToRgb,
}

impl FrameSpec {
    fn parse(
        format: &str,
        width: usize,
        height: usize,
        stride: Option<usize>,
        matrix: &str,
        range: &str,
    ) -> PyResult<Self> {
        let format: FrameFormat = format.parse().map_err(PyValueError::new_err)?;
        let matrix: YuvMatrix = matrix.parse().map_err(PyValueError::new_err)?;
        let range: YuvRange = range.parse().map_err(PyValueError::new_err)?;
        if format == FrameFormat::Mjpeg {
            return Err(PyValueError::new_err("a JPEG is an image file: pass its path or decode it with PIL"));
        }
        Ok(FrameSpec { format, width, height, stride, yuv: YuvToRgb::new(matrix, range) })
    }

    /// The model's input for this frame's bytes.
    fn preprocess(&self, data: &[u8], model: &edgevit::Model, out: &mut Vec<f32>) -> edgevit::Result<()> {
        let frame = RawFrame::with_stride(self.format, self.width, self.height, self.stride, data)?;
        frame.preprocess_into(&model.config().preprocess, &self.yuv, out);
        Ok(())
    }
}

/// A C-contiguous array's elements (the Python side makes other layouts contiguous first).
fn contiguous<'a, T: numpy::Element>(array: &'a PyReadonlyArrayDyn<'_, T>, what: &str) -> PyResult<&'a [T]> {
    array.as_slice().map_err(|_| PyValueError::new_err(format!("{what} must be a C-contiguous array")))
}

/// A Vision Transformer classifier opened from an `.evit` file.
#[pyclass(frozen, module = "edgevit._edgevit")]
struct Model {
    path: String,
    threads: usize,
    /// `None` once closed. Calls hold their own reference, so closing while another thread
    /// classifies unmaps the file only after that call.
    loaded: Mutex<Option<Arc<Loaded>>>,
}

impl Model {
    fn loaded(&self) -> PyResult<Arc<Loaded>> {
        let guard = self.loaded.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        guard.clone().ok_or_else(|| PyValueError::new_err(format!("{}: the model is closed", self.path)))
    }

    fn with_model<R>(&self, f: impl FnOnce(&edgevit::Model) -> R) -> PyResult<R> {
        Ok(f(&self.loaded()?.model))
    }
}

#[pymethods]
impl Model {
    #[new]
    #[pyo3(signature = (path, threads=None, mmap=true))]
    fn new(py: Python<'_>, path: PathBuf, threads: Option<i64>, mmap: bool) -> PyResult<Self> {
        let threads = match threads {
            Some(n) if n < 1 => return Err(PyValueError::new_err(format!("threads={n}: must be at least 1"))),
            Some(n) if n > MAX_THREADS => {
                return Err(PyValueError::new_err(format!(
                    "threads={n} is more than the {MAX_THREADS} edgevit supports"
                )))
            }
            Some(n) => n as usize,
            None => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        };
        let opened =
            py.detach(|| if mmap { edgevit::Model::open(&path) } else { edgevit::Model::open_in_memory(&path) });
        let model = opened.map_err(to_py)?;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("edgevit-{i}"))
            .build()
            .map_err(|e| PyRuntimeError::new_err(format!("cannot start {threads} threads: {e}")))?;
        let loaded = Loaded { model, pool, sessions: Mutex::new(Vec::new()), last_times: Mutex::default() };
        Ok(Model { path: path.to_string_lossy().into_owned(), threads, loaded: Mutex::new(Some(Arc::new(loaded))) })
    }

    /// The model file's path, as given.
    #[getter]
    fn path(&self) -> &str {
        &self.path
    }

    /// Worker threads of this model.
    #[getter]
    fn threads(&self) -> usize {
        self.threads
    }

    /// Class names, by index.
    #[getter]
    fn labels(&self) -> PyResult<Vec<String>> {
        self.with_model(|m| m.labels().to_vec())
    }

    /// (height, width) of the model's input tensor.
    #[getter]
    fn input_size(&self) -> PyResult<(usize, usize)> {
        self.with_model(|m| (m.architecture().image_height, m.architecture().image_width))
    }

    /// How the Linear weights are stored: "int8", "f16" or "f32".
    #[getter]
    fn dtype(&self) -> PyResult<&'static str> {
        self.with_model(|m| m.config().weights.dtype.name())
    }

    /// The kernels the forward pass uses on this CPU, by name.
    #[getter]
    fn kernels(&self) -> PyResult<Vec<String>> {
        self.with_model(|m| m.kernel_names())
    }

    /// The model's configuration (architecture, preprocessing, weights, labels) as JSON.
    #[getter]
    fn config_json(&self) -> PyResult<String> {
        self.with_model(|m| serde_json::to_string(m.config()).expect("configs serialise"))
    }

    /// Milliseconds per kind of operation in the last forward pass (of any thread), in forward
    /// order, as `edgevit bench` shares them out; their sum is the forward pass alone, without
    /// decoding, preprocessing or the call from Python.
    fn last_timings(&self) -> PyResult<Vec<(&'static str, f64)>> {
        let loaded = self.loaded()?;
        let times = *loaded.last_times.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        Ok(times.entries().iter().map(|(name, d)| (*name, d.as_secs_f64() * 1e3)).collect())
    }

    /// Releases the model (unmapping its file once no call uses it). Later calls raise.
    fn close(&self) {
        self.loaded.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
    }

    /// Whether `close` was called.
    #[getter]
    fn closed(&self) -> bool {
        self.loaded.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).is_none()
    }

    /// Logits for C-contiguous float32 tensors of `n * 3*H*W` values: `[n * labels]`.
    fn logits<'py>(&self, py: Python<'py>, x: PyReadonlyArrayDyn<'py, f32>) -> PyResult<Bound<'py, PyArray1<f32>>> {
        let loaded = self.loaded()?;
        let values = contiguous(&x, "the tensor")?;
        let len = loaded.input_len();
        if values.len() % len != 0 {
            return Err(PyValueError::new_err(format!(
                "{} values are not a whole number of {len}-value inputs",
                values.len()
            )));
        }
        let logits = py.detach(|| {
            loaded.run(|model, Scratch { session, .. }| {
                let mut out = Vec::with_capacity(values.len() / len * model.labels().len());
                for input in values.chunks_exact(len) {
                    out.extend_from_slice(model.forward(input, session)?);
                }
                Ok(out)
            })
        });
        Ok(PyArray1::from_vec(py, logits.map_err(to_py)?))
    }

    /// Decodes and preprocesses an image file as the CLI does: the `[3*H*W]` input.
    fn preprocess_file<'py>(&self, py: Python<'py>, path: PathBuf) -> PyResult<Bound<'py, PyArray1<f32>>> {
        let loaded = self.loaded()?;
        let pixels = py.detach(|| edgevit::preprocess::load_and_preprocess(&path, loaded.model.config()));
        Ok(PyArray1::from_vec(py, pixels.map_err(to_py)?))
    }

    /// Decodes, preprocesses and classifies an image file: its logits.
    fn logits_file<'py>(&self, py: Python<'py>, path: PathBuf) -> PyResult<Bound<'py, PyArray1<f32>>> {
        let loaded = self.loaded()?;
        let logits = py.detach(|| {
            let pixels = edgevit::preprocess::load_and_preprocess(&path, loaded.model.config())?;
            loaded.run(|model, s| model.forward(&pixels, &mut s.session).map(<[f32]>::to_vec))
        });
        Ok(PyArray1::from_vec(py, logits.map_err(to_py)?))
    }

    /// Converts and resizes a raw frame (as `classify --stream` does): the `[3*H*W]` input.
    #[pyo3(signature = (data, format, width, height, stride=None, yuv_matrix="bt601", yuv_range="limited"))]
    #[allow(clippy::too_many_arguments)]
    fn preprocess_frame<'py>(
        &self,
        py: Python<'py>,
        data: PyReadonlyArrayDyn<'py, u8>,
        format: &str,
        width: usize,
        height: usize,
        stride: Option<usize>,
        yuv_matrix: &str,
        yuv_range: &str,
    ) -> PyResult<Bound<'py, PyArray1<f32>>> {
        let loaded = self.loaded()?;
        let spec = FrameSpec::parse(format, width, height, stride, yuv_matrix, yuv_range)?;
        let bytes = contiguous(&data, "the frame")?;
        let pixels = py.detach(|| {
            let mut out = Vec::new();
            spec.preprocess(bytes, &loaded.model, &mut out).map(|()| out)
        });
        Ok(PyArray1::from_vec(py, pixels.map_err(to_py)?))
    }

    /// Converts, resizes and classifies a raw frame: its logits.
    #[pyo3(signature = (data, format, width, height, stride=None, yuv_matrix="bt601", yuv_range="limited"))]
    #[allow(clippy::too_many_arguments)]
    fn logits_frame<'py>(
        &self,
        py: Python<'py>,
        data: PyReadonlyArrayDyn<'py, u8>,
        format: &str,
        width: usize,
        height: usize,
        stride: Option<usize>,
        yuv_matrix: &str,
        yuv_range: &str,
    ) -> PyResult<Bound<'py, PyArray1<f32>>> {
        let loaded = self.loaded()?;
        let spec = FrameSpec::parse(format, width, height, stride, yuv_matrix, yuv_range)?;
        let bytes = contiguous(&data, "the frame")?;
        let logits = py.detach(|| {
            loaded.run(|model, Scratch { session, pixels }| {
                // Into the scratch space's tensor, reused from call to call.
                spec.preprocess(bytes, model, pixels)?;
                model.forward(pixels, session).map(<[f32]>::to_vec)
            })
        });
        Ok(PyArray1::from_vec(py, logits.map_err(to_py)?))
    }

    /// The `k` most probable classes of one input's logits, as the CLI ranks them:
    /// `[(label, probability, index)]`, best first.
    fn top_k(&self, logits: PyReadonlyArrayDyn<'_, f32>, k: usize) -> PyResult<Vec<(String, f32, usize)>> {
        let loaded = self.loaded()?;
        let values = contiguous(&logits, "the logits")?;
        let labels = loaded.model.labels();
        if values.len() != labels.len() {
            return Err(PyValueError::new_err(format!(
                "{} logits given; this model has {} classes",
                values.len(),
                labels.len()
            )));
        }
        Ok(edgevit::top_k(values, k, labels).into_iter().map(|p| (p.label, p.prob, p.index)).collect())
    }

    fn __repr__(&self) -> String {
        match self.loaded() {
            Ok(l) => {
                let a = l.model.architecture();
                format!(
                    "edgevit.Model('{}', {} {}x{} {}, {} labels, threads={})",
                    self.path,
                    a.family.name(),
                    a.image_height,
                    a.image_width,
                    l.model.config().weights.dtype.name(),
                    a.num_labels,
                    self.threads
                )
            }
            Err(_) => format!("edgevit.Model('{}', closed)", self.path),
        }
    }
}

/// The version, commit and target the extension was built from, and this CPU's features.
#[pyfunction]
fn build_info() -> String {
    edgevit::version::describe("edgevit (Python)")
}

#[pymodule]
fn _edgevit(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Model>()?;
    m.add("ModelError", m.py().get_type::<ModelError>())?;
    m.add("__version__", edgevit::version::VERSION)?;
    m.add_function(wrap_pyfunction!(build_info, m)?)?;
    Ok(())
}
