//! Reading input files: only regular files (a FIFO or a device would block or never end), and
//! never more bytes than a valid file of the kind can have, checked before reading.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use crate::error::{Error, Result};

/// Opens `path` for reading if it is a regular file (symlinks followed); `what` names the
/// kind of file in the error ("model", "image", ...).
pub fn open_regular(path: &Path, what: &str) -> Result<File> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if !meta.is_file() {
        let kind = if meta.is_dir() { "a folder" } else { "not a regular file (a FIFO, socket or device)" };
        return Err(Error::Input(format!("{}: is {kind}; pass the {what} file itself", path.display())));
    }
    File::open(path).map_err(|e| Error::io(path, e))
}

/// Reads the whole of the regular file `path`, refusing one over `limit` bytes before reading
/// it (and reading no more than `limit` bytes should it grow meanwhile).
pub fn read_regular(path: &Path, limit: u64, what: &str) -> Result<Vec<u8>> {
    let file = open_regular(path, what)?;
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let too_large = |len: u64| {
        Error::Input(format!("{}: {len} bytes is more than the {limit} allowed for {what} files", path.display()))
    };
    if len > limit {
        return Err(too_large(len));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(limit.saturating_add(1)).read_to_end(&mut bytes).map_err(|e| Error::io(path, e))?;
    if bytes.len() as u64 > limit {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_devices_and_oversized_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let e = read_regular(dir.path(), 100, "image").unwrap_err().to_string();
        assert!(e.contains("is a folder"), "{e}");
        let e = read_regular(Path::new("/dev/zero"), 100, "image").unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
        let f = dir.path().join("big");
        std::fs::write(&f, [0u8; 101]).unwrap();
        let e = read_regular(&f, 100, "image").unwrap_err().to_string();
        assert!(e.contains("101 bytes is more than the 100 allowed"), "{e}");
        assert_eq!(read_regular(&f, 101, "image").unwrap().len(), 101);
    }
}
