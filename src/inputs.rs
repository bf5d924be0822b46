//! What `classify`, `eval` and `compare` read: files, folders of them, and stdin (`-`), and
//! each as the model's input ([`load`]). Folders are listed in sorted order (by path) so that
//! results come out the same on every run; `recursive` descends into subfolders.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::config::{Architecture, ModelConfig};
use crate::error::{Error, Result};
use crate::npy::{parse_npy, read_npy, NpyArray, NpyData};
use crate::preprocess::{decode, load_and_preprocess, DecodedImage, MAX_IMAGE_FILE_BYTES};

/// File name extensions a folder is searched for (case does not matter).
pub const EXTENSIONS: [&str; 6] = ["jpg", "jpeg", "png", "webp", "bmp", "npy"];

/// How [`expand`]'s error for a folder without inputs ends when `recursive` is off: a front end
/// can recognise it and say how to search the subfolders.
pub const SUBFOLDERS_NOT_SEARCHED: &str = "(its subfolders were not searched)";

/// One input to classify.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// A file (an image or a `.npy` tensor).
    File(PathBuf),
    /// An image or .npy tensor on standard input.
    Stdin,
}

impl Input {
    /// The name results are reported under.
    pub fn name(&self) -> std::borrow::Cow<'_, str> {
        match self {
            Input::File(p) => p.to_string_lossy(),
            Input::Stdin => "-".into(),
        }
    }
}

/// The inputs `args` name, in order: a folder becomes the images and .npy files in it; `-`
/// stands for stdin (once). A folder that cannot be read, or holds nothing to classify, is an
/// error in its place, so that the other inputs are still classified.
pub fn expand(args: &[PathBuf], recursive: bool) -> Vec<Result<Input>> {
    let mut out = Vec::new();
    let mut stdin_seen = false;
    for arg in args {
        if arg.as_os_str() == "-" {
            out.push(if stdin_seen {
                Err(Error::Input("'-' (stdin) is named twice; it can be read once".into()))
            } else {
                stdin_seen = true;
                Ok(Input::Stdin)
            });
        } else if arg.is_dir() {
            let mut files = Vec::new();
            match list(arg, recursive, &mut files) {
                Err(e) => out.push(Err(e)),
                Ok(()) if files.is_empty() => out.push(Err(Error::Input(format!(
                    "{}: the folder holds no {} files{}",
                    arg.display(),
                    EXTENSIONS.join(", "),
                    if recursive { String::new() } else { format!(" {SUBFOLDERS_NOT_SEARCHED}") }
                )))),
                Ok(()) => {
                    files.sort();
                    out.extend(files.into_iter().map(|f| Ok(Input::File(f))));
                }
            }
        } else {
            out.push(Ok(Input::File(arg.clone())));
        }
    }
    out
}

fn list(dir: &Path, recursive: bool, files: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        if path.is_dir() {
            if recursive {
                list(&path, true, files)?;
            }
        } else if path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
        {
            files.push(path);
        }
    }
    Ok(())
}

/// What stdin held: an image, or a .npy tensor (recognised by its magic bytes).
pub enum StdinContent {
    /// A decoded image.
    Image(DecodedImage),
    /// A `.npy` tensor.
    Tensor(NpyArray),
}

/// Reads all of stdin (at most as much as an image file may be) and decodes it.
pub fn read_stdin() -> Result<StdinContent> {
    let mut bytes = Vec::new();
    std::io::stdin()
        .lock()
        .take(MAX_IMAGE_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::Input(format!("-: cannot read stdin: {e}")))?;
    if bytes.len() as u64 > MAX_IMAGE_FILE_BYTES {
        return Err(Error::Input(format!("-: stdin holds more than the {MAX_IMAGE_FILE_BYTES} bytes allowed")));
    }
    if bytes.is_empty() {
        return Err(Error::Input("-: stdin is empty".into()));
    }
    if bytes.starts_with(b"\x93NUMPY") {
        return parse_npy(&bytes).map(StdinContent::Tensor).map_err(|e| Error::Input(format!("-: {e}")));
    }
    decode(&bytes).map(StdinContent::Image).map_err(|e| Error::Input(format!("-: {e}")))
}

/// The model input for `input`: an image decoded and preprocessed as `config` says, or an
/// already preprocessed float32 `.npy` tensor of the model's input shape (`[C, H, W]` or
/// `[1, C, H, W]`), from a file or stdin.
pub fn load(input: &Input, config: &ModelConfig) -> Result<Vec<f32>> {
    let path = match input {
        Input::File(path) => path,
        Input::Stdin => {
            return match read_stdin()? {
                StdinContent::Image(img) => {
                    let mut out = Vec::new();
                    img.preprocess_into(&config.preprocess, &mut out);
                    Ok(out)
                }
                StdinContent::Tensor(arr) => tensor_input(Path::new("-"), arr, &config.architecture),
            }
        }
    };
    let is_npy = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("npy"));
    if !is_npy {
        return load_and_preprocess(path, config);
    }
    tensor_input(path, read_npy(path)?, &config.architecture)
}

/// A `.npy` tensor as the model's input, if it has the model's input shape and is float32.
fn tensor_input(path: &Path, arr: NpyArray, a: &Architecture) -> Result<Vec<f32>> {
    let want = [a.num_channels, a.image_height, a.image_width];
    let shape_ok = arr.shape == want || (arr.shape.len() == 4 && arr.shape[0] == 1 && arr.shape[1..] == want);
    match arr.data {
        NpyData::F32(v) if shape_ok => Ok(v),
        NpyData::F32(_) => Err(Error::Input(format!(
            "{}: tensor shape {:?}; this model takes [{}, {}, {}] or [1, {}, {}, {}]",
            path.display(),
            arr.shape,
            want[0],
            want[1],
            want[2],
            want[0],
            want[1],
            want[2]
        ))),
        NpyData::U8(_) => {
            Err(Error::Input(format!("{}: a preprocessed tensor must be float32, not uint8", path.display())))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_expand_sorted_and_recursive_only_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for f in ["b.png", "a.JPG", "notes.txt", "sub/c.npy"] {
            std::fs::create_dir_all(d.join(f).parent().unwrap()).unwrap();
            std::fs::write(d.join(f), b"x").unwrap();
        }
        let names = |r: Vec<Result<Input>>| -> Vec<String> {
            r.into_iter().map(|i| i.map(|i| i.name().into_owned()).unwrap_or_else(|e| e.to_string())).collect()
        };
        let flat = names(expand(&[d.to_path_buf()], false));
        assert_eq!(flat, [d.join("a.JPG"), d.join("b.png")].map(|p| p.to_string_lossy().into_owned()));
        let deep = names(expand(&[d.to_path_buf(), "-".into(), "-".into()], true));
        assert_eq!(
            deep[..3],
            [d.join("a.JPG"), d.join("b.png"), d.join("sub/c.npy")].map(|p| p.to_string_lossy().into_owned())
        );
        assert_eq!(deep[3], "-");
        assert!(deep[4].contains("named twice"), "{}", deep[4]);
        let empty = tempfile::tempdir().unwrap();
        let e = names(expand(&[empty.path().to_path_buf()], false));
        assert!(
            e[0].contains("holds no jpg, jpeg, png, webp, bmp, npy files (its subfolders were not searched)"),
            "{}",
            e[0]
        );
    }
}
