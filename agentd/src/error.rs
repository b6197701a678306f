//! The one error for a file operation on a path: what was being done, to
//! which path, and the operating system's error as its source. Every
//! module's error enum wraps it instead of carrying its own copy.
use std::path::{Path, PathBuf};

/// A file operation on `path` failed.
#[derive(Debug, thiserror::Error)]
#[error("{op} {}: {source}", path.display())]
pub struct PathError {
    /// What was being done (`mkdir`, `write`, `open`...).
    pub op: &'static str,
    /// The path.
    pub path: PathBuf,
    /// The operating system's error.
    #[source]
    pub source: std::io::Error,
}

impl PathError {
    /// `op` on `path` failed with `source`.
    pub fn new(op: &'static str, path: &Path, source: std::io::Error) -> Self {
        Self {
            op,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Names the operation and path of an I/O error.
pub trait AtPath<T> {
    /// `op` on `path` failed with this error.
    fn at(self, op: &'static str, path: &Path) -> Result<T, PathError>;
}

impl<T> AtPath<T> for std::io::Result<T> {
    fn at(self, op: &'static str, path: &Path) -> Result<T, PathError> {
        self.map_err(|source| PathError::new(op, path, source))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_operation_path_and_cause() {
        let e = std::fs::read("/nonexistent/x")
            .at("read", Path::new("/nonexistent/x"))
            .unwrap_err();
        assert!(e.to_string().starts_with("read /nonexistent/x: "), "{e}");
        assert_eq!(e.source.kind(), std::io::ErrorKind::NotFound);
        assert!(std::error::Error::source(&e).is_some());
    }
}
