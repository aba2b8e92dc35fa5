//! Reading files that a config names or that someone drops into a watched folder: only regular
//! files, only up to a cap, and never blocking on a FIFO or a device. The file is opened
//! without blocking and the *opened* file is checked before a byte is read, so swapping a
//! checked file for a FIFO or a link to `/dev/zero` in between changes nothing.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::path::Path;

/// Why a file was not read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// A FIFO, a device, a socket or a directory.
    #[error("it is not a regular file (it is a {0})")]
    NotRegular(&'static str),
    #[error("it is larger than the {limit}-byte limit")]
    TooLarge { limit: u64 },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl ReadError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, ReadError::Io(e) if e.kind() == std::io::ErrorKind::NotFound)
    }
}

fn open_nonblocking(path: &Path) -> std::io::Result<File> {
    let mut options = OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // Opening a FIFO for reading would wait for a writer; a terminal could become ours.
        options.custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY);
    }
    options.open(path)
}

fn kind_of(file_type: std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if file_type.is_fifo() {
            return "FIFO";
        }
        if file_type.is_char_device() || file_type.is_block_device() {
            return "device";
        }
        if file_type.is_socket() {
            return "socket";
        }
    }
    if file_type.is_dir() {
        "directory"
    } else {
        "special file"
    }
}

/// The contents of the regular file at `path` (links followed), if it holds at most
/// `max_bytes`. Blocking: async callers run it on the blocking pool.
pub fn read_regular(path: &Path, max_bytes: u64) -> Result<Vec<u8>, ReadError> {
    let file = open_nonblocking(path)?;
    let metadata = file.metadata()?;
    if !metadata.is_file() {
        return Err(ReadError::NotRegular(kind_of(metadata.file_type())));
    }
    if metadata.len() > max_bytes {
        return Err(ReadError::TooLarge { limit: max_bytes });
    }
    let mut bytes = Vec::with_capacity(metadata.len() as usize);
    // The file may grow while it is read: never past the cap.
    file.take(max_bytes.saturating_add(1))
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max_bytes {
        return Err(ReadError::TooLarge { limit: max_bytes });
    }
    Ok(bytes)
}

/// Whether `path`, with every link resolved, is inside `dir` (also resolved).
pub fn resolves_inside(path: &Path, dir: &Path) -> bool {
    match (std::fs::canonicalize(path), std::fs::canonicalize(dir)) {
        (Ok(real), Ok(real_dir)) => real.starts_with(real_dir),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn temp_dir(tag: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("wf-config-files-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn regular_files_up_to_the_cap() {
        let dir = temp_dir("regular");
        let file = dir.join("a.txt");
        std::fs::write(&file, b"hello").unwrap();
        assert_eq!(read_regular(&file, 5).unwrap(), b"hello");
        assert!(matches!(
            read_regular(&file, 4),
            Err(ReadError::TooLarge { limit: 4 })
        ));
        assert!(
            read_regular(&dir.join("missing"), 5)
                .unwrap_err()
                .is_not_found()
        );
        assert!(matches!(
            read_regular(&dir, 5),
            Err(ReadError::NotRegular("directory"))
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[cfg(unix)]
    #[test]
    fn fifos_and_devices_are_refused_without_blocking() {
        let dir = temp_dir("special");
        let fifo = dir.join("x.wasm");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if made.is_ok_and(|s| s.success()) {
            assert!(matches!(
                read_regular(&fifo, 1 << 20),
                Err(ReadError::NotRegular("FIFO"))
            ));
        }
        let zero = dir.join("zero.wasm");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        assert!(matches!(
            read_regular(&zero, 1 << 20),
            Err(ReadError::NotRegular("device"))
        ));
        assert!(!resolves_inside(&zero, &dir));
        let inside = dir.join("inside.wasm");
        std::fs::write(dir.join("real"), b"x").unwrap();
        std::os::unix::fs::symlink(dir.join("real"), &inside).unwrap();
        assert!(resolves_inside(&inside, &dir));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
