//! A regular file mapped read-only, for `audit --threads`: the workers
//! decode its lines where the page cache holds them, instead of a reader
//! copying every byte into buffers first (a `read` of the whole input was
//! a seventh of the run's CPU on two cores).
//!
//! Truncating a file while it is audited ends the run with SIGBUS, as it
//! does for every tool that maps its input (docs/decisions.md, "audit maps
//! its input"). Standard input, pipes and other special files are read.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

pub(super) struct Mapped {
    ptr: std::ptr::NonNull<u8>,
    len: usize,
}

// The mapping is read-only and lives until drop: shared as `&[u8]`.
unsafe impl Send for Mapped {}
unsafe impl Sync for Mapped {}

impl Mapped {
    /// The whole of `file` if it is a regular, non-empty file that can be
    /// mapped; `None` for anything else (it is then read as a stream):
    /// sysfs and some FUSE file systems refuse to map what they read.
    pub(super) fn of(file: &File) -> io::Result<Option<Mapped>> {
        let meta = file.metadata()?;
        if !meta.file_type().is_file() || meta.len() == 0 {
            return Ok(None);
        }
        let Ok(len) = usize::try_from(meta.len()) else {
            return Ok(None);
        };
        // SAFETY: a fresh private read-only mapping of an open descriptor;
        // the kernel checks `len` and the descriptor.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            let error = io::Error::last_os_error();
            tracing::debug!(%error, "the input cannot be mapped; it is read");
            return Ok(None);
        }
        // Read once, front to back: the kernel reads ahead further and
        // drops pages behind. Only a hint: its failure changes nothing.
        // SAFETY: the range is the mapping just made.
        unsafe { libc::madvise(ptr, len, libc::MADV_SEQUENTIAL) };
        Ok(std::ptr::NonNull::new(ptr.cast::<u8>()).map(|ptr| Mapped { ptr, len }))
    }

    pub(super) fn bytes(&self) -> &[u8] {
        // SAFETY: `len` bytes mapped readable at `ptr` until drop. Another
        // process writing the file changes what is read, never its bounds;
        // one truncating it raises SIGBUS (the module's note).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `of`, once.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}
