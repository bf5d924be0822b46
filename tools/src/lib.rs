//! Workstation side of edgevit: read a checkpoint, convert its weights, write one `.evit` file.

pub mod compare;
pub mod hf;
pub mod quantize;
