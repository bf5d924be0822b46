//! edgevit: run Vision Transformer image classifiers from one memory-mapped `.evit` file.
//!
//! Open a model made by `edgevit-tools quantize`, and classify decoded images, raw camera
//! frames or preprocessed tensors:
//!
//! ```no_run
//! let model = edgevit::Model::open("model.evit")?;
//! let image = edgevit::preprocess::load_image("cat.jpg".as_ref())?;
//! for p in model.classify(&image, 5)? {
//!     println!("{:.3} {}", p.prob, p.label);
//! }
//! # Ok::<(), edgevit::Error>(())
//! ```
//!
//! Here with a random-weight ViT-Ti/16 built in memory (so the example runs anywhere), a
//! 640x480 NV12 camera frame, and a session reused across frames so that the model's buffers
//! are allocated once (the frame's resize still allocates its row buffers, about
//! `width x 3` bytes per source row it keeps):
//!
//! ```
//! use edgevit::stream::{FrameFormat, RawFrame, YuvMatrix, YuvRange, YuvToRgb};
//! use edgevit::synth::Preset;
//!
//! let file = edgevit::synth::open(Preset::Tiny, edgevit::config::WeightDType::Int8, 1)?;
//! let model = edgevit::Model::from_file(file)?;
//! let (w, h) = (640, 480);
//! let nv12 = vec![128u8; FrameFormat::Nv12.frame_len(w, h).unwrap()]; // mid grey
//! let frame = RawFrame::new(FrameFormat::Nv12, w, h, &nv12)?;
//! let yuv = YuvToRgb::new(YuvMatrix::Bt601, YuvRange::Limited);
//!
//! let mut session = model.session();
//! let mut pixels = Vec::new();
//! frame.preprocess_into(&model.config().preprocess, &yuv, &mut pixels);
//! let logits = model.forward(&pixels, &mut session)?;
//! let top = edgevit::top_k(logits, 3, model.labels());
//! assert_eq!(top.len(), 3);
//! assert!(top[0].prob >= top[1].prob && top[1].prob >= top[2].prob);
//! assert_eq!(top, frame.classify(&model, &yuv, 3)?);
//! # Ok::<(), edgevit::Error>(())
//! ```

#![warn(missing_docs)]

pub mod args;
pub mod bench;
pub mod config;
pub mod error;
pub mod eval;
pub mod files;
pub mod format;
pub mod inputs;
pub mod model;
pub mod npy;
pub mod preprocess;
pub mod progress;
pub mod stream;
pub mod synth;
pub mod version;

pub use config::{Architecture, ModelConfig, Preprocess};
pub use error::{Error, Result};
pub use model::{top_k, Model, OpTimes, Prediction, Session};
pub use preprocess::{load_image, RgbImage};
