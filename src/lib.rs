//! edgevit: run Vision Transformer image classifiers from one memory-mapped `.evit` file.
//!
//! ```no_run
//! let model = edgevit::Model::open("model.evit")?;
//! let pixels = edgevit::preprocess::load_and_preprocess("cat.jpg".as_ref(), model.config())?;
//! let mut session = model.session();
//! let logits = model.forward(&pixels, &mut session)?;
//! for p in edgevit::top_k(logits, 5, model.labels()) {
//!     println!("{:.3} {}", p.prob, p.label);
//! }
//! # Ok::<(), edgevit::Error>(())
//! ```

pub mod bench;
pub mod config;
pub mod error;
pub mod format;
pub mod model;
pub mod npy;
pub mod preprocess;
pub mod stream;
pub mod synth;

pub use config::{Architecture, ModelConfig, Preprocess};
pub use error::{Error, Result};
pub use model::{top_k, Model, OpTimes, Prediction, Session};
