//! `resnet-mmap`: a file mapped read-only into memory, behind a safe type.
//!
//! Memory-mapping a file cannot be made sound by the mapping process alone: the bytes belong
//! to the file, and anyone who can write the file can change or remove them while they are
//! borrowed. This crate holds the workspace's one memory map (used by `resnet-weights` to
//! read safetensors files without copying them), so that every other crate but
//! `resnet-kernels` can forbid `unsafe` outright.
//!
//! [`MappedFile`] rests on one assumption, which it cannot check: **the file is not truncated
//! or modified, by this process or any other, while it is mapped**. If it is modified, the
//! bytes behind a `&[u8]` borrowed from the map change while borrowed, which Rust's aliasing
//! rules declare undefined behaviour; in practice a reader may see a mix of old and new
//! contents, e.g. data that no longer agrees with a header checked earlier. If it is truncated,
//! reading a page past the new end of the file raises `SIGBUS` on Unix and the process dies
//! (Windows refuses to truncate a file while it is mapped). Where that cannot be ruled out
//! (a file that a download or a training run may still be writing), read the file into
//! memory instead, with [`std::fs::read`].
//!
//! ```
//! use resnet_mmap::MappedFile;
//!
//! let path = std::env::temp_dir().join(format!("resnet-mmap-doc-{}.bin", std::process::id()));
//! std::fs::write(&path, b"safetensors bytes")?;
//! let map = MappedFile::open(&path)?;
//! assert_eq!(&map[..11], b"safetensors");
//! assert_eq!(map.len(), 17);
//! drop(map);
//! std::fs::remove_file(&path)?;
//! # Ok::<(), std::io::Error>(())
//! ```

// The one `unsafe` block below is allowed where it stands; nothing else may add one unseen.
#![deny(unsafe_code)]

use std::fs::File;
use std::path::Path;

/// A whole file mapped read-only into memory; it dereferences to the file's bytes.
///
/// The mapping is made once, at [`MappedFile::open`], and removed when the value is dropped;
/// the file handle is closed as soon as the map exists. An empty file is not mapped (some
/// platforms refuse empty maps) and gives an empty slice.
///
/// **Assumption:** the file is not truncated or modified, by this process or any other, while
/// a `MappedFile` of it exists. If it is modified, the bytes seen through the map change while
/// borrowed (undefined behaviour; in practice, inconsistent reads); if it is truncated, reading
/// past the new end raises `SIGBUS` on Unix and kills the process. Read the file with
/// [`std::fs::read`] where the assumption cannot be made. See the [crate documentation](crate).
pub struct MappedFile {
    /// `None` for an empty file.
    map: Option<memmap2::Mmap>,
}

impl MappedFile {
    /// Map the file at `path` read-only into memory.
    ///
    /// The file must not be truncated or modified while the returned value exists (see the
    /// [type documentation](MappedFile)).
    ///
    /// # Errors
    ///
    /// Any error opening the file, reading its metadata or mapping it, as the operating system
    /// reports it (a file too large for the address space is an error here).
    pub fn open(path: impl AsRef<Path>) -> std::io::Result<Self> {
        let file = File::open(path.as_ref())?;
        if file.metadata()?.len() == 0 {
            return Ok(Self { map: None });
        }
        // SAFETY: `Mmap::map` is unsafe only because the mapped bytes are the file's, and the
        // file could change under a `&[u8]` borrowed from the map. We assume that no process
        // (this one included) truncates or modifies the file while this `MappedFile` exists,
        // as the type's documentation requires of callers. If one does, the borrowed bytes
        // change while borrowed (undefined behaviour) or, after truncation, reading past the
        // new end raises SIGBUS on Unix. The map is read-only, so we never write through it.
        #[allow(unsafe_code)]
        let map = unsafe { memmap2::Mmap::map(&file) }?;
        Ok(Self { map: Some(map) })
    }

    /// The file's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }
}

impl std::ops::Deref for MappedFile {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl AsRef<[u8]> for MappedFile {
    fn as_ref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl std::fmt::Debug for MappedFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MappedFile")
            .field("len", &self.as_bytes().len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::MappedFile;
    use std::io::Write;

    #[test]
    fn maps_the_whole_file() {
        let data: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(&data).unwrap();
        file.flush().unwrap();
        let map = MappedFile::open(file.path()).unwrap();
        assert_eq!(map.as_bytes(), &data[..]);
        assert_eq!(&*map, &data[..]);
        assert_eq!(map.as_ref(), &data[..]);
        assert_eq!(format!("{map:?}"), "MappedFile { len: 10000 }");
    }

    #[test]
    fn an_empty_file_is_an_empty_slice() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let map = MappedFile::open(file.path()).unwrap();
        assert!(map.is_empty());
    }

    #[test]
    fn a_missing_file_is_an_io_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = MappedFile::open(dir.path().join("absent.bin")).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    }
}
