//! The format version of everything the store writes.
//!
//! Every value written to fjall starts with one byte, [`VERSION`]: the layout of the bytes after it. A reader
//! checks it before anything else and refuses a value of any other version with an error naming the version
//! found and the one this build reads, so a value is never misread as another layout. Keys carry no version
//! byte: they are sorted and compared as they are, and their layouts have not changed.
//!
//! The data directory carries the version too, in the file [`MARKER`], written (and synced) before the
//! database is first created. A directory that holds anything but no marker was written by a build from before
//! format versions: its values have no version byte, and reading them as if they had one would misread them,
//! so [`check_data_dir`] refuses to open it, naming the directory and what to do; so does a marker of another
//! version. Nothing is migrated: an older data directory is served by the build that wrote it, or its data is
//! read out through the API and written anew.

use std::io::Write;
use std::path::Path;
use strata_core::Error;

/// The format of values and of the data directory this build writes and reads.
pub const VERSION: u8 = 1;

/// The file in the data directory that holds its format version (as text, e.g. `1`).
pub const MARKER: &str = "STRATA_FORMAT";

/// A value of `capacity` bytes after the version byte, with the version byte in place.
pub fn versioned(capacity: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + capacity);
    out.push(VERSION);
    out
}

/// The bytes after the version byte of a stored `what` (e.g. "key/value record"), or the error for a
/// version this build does not read.
pub fn payload<'a>(what: &str, bytes: &'a [u8]) -> Result<&'a [u8], Error> {
    match bytes.split_first() {
        Some((&VERSION, rest)) => Ok(rest),
        Some((found, _)) => Err(unsupported(what, &found.to_string())),
        None => Err(Error::internal(format!(
            "corrupt {what}: empty, without a format version"
        ))),
    }
}

fn unsupported(what: &str, found: &str) -> Error {
    Error::internal(format!(
        "{what} of format version {found}, which this build does not read (it reads version {VERSION} only)"
    ))
}

/// Checks the data directory's format before the database opens, and marks a new (empty) directory with
/// [`VERSION`]. See the module documentation for what is refused.
pub fn check_data_dir(dir: &Path) -> Result<(), Error> {
    let marker = dir.join(MARKER);
    match std::fs::read_to_string(&marker) {
        Ok(text) if text.trim() == VERSION.to_string() => Ok(()),
        Ok(text) => Err(Error::unavailable(format!(
            "data directory {} is of format version {} (its {MARKER}); this build reads version {VERSION} \
             only: serve it with the build that wrote it",
            dir.display(),
            text.trim()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let empty = std::fs::read_dir(dir)
                .map_err(|e| cannot(dir, &e))?
                .next()
                .is_none();
            if !empty {
                return Err(Error::unavailable(format!(
                    "data directory {} has no {MARKER}: it was written by a build from before format \
                     versions (this build reads version {VERSION} only, and would misread it); serve it with \
                     the build that wrote it, or start from an empty directory",
                    dir.display()
                )));
            }
            // Synced, file and directory, before the database exists: a crash leaves either an empty
            // directory or a marked one, never a database without its marker.
            let mut file = std::fs::File::create(&marker).map_err(|e| cannot(dir, &e))?;
            file.write_all(format!("{VERSION}\n").as_bytes())
                .and_then(|()| file.sync_all())
                .and_then(|()| std::fs::File::open(dir)?.sync_all())
                .map_err(|e| cannot(dir, &e))
        }
        Err(e) => Err(cannot(dir, &e)),
    }
}

fn cannot(dir: &Path, e: &std::io::Error) -> Error {
    Error::unavailable(format!(
        "cannot read or mark the format of data directory {}: {e}",
        dir.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_of_an_unknown_version_is_refused_naming_both_versions() {
        let mut value = versioned(3);
        value.extend_from_slice(b"abc");
        assert_eq!(payload("widget record", &value).unwrap(), b"abc");
        let error = payload("widget record", &[VERSION + 1, 1, 2, 3]).unwrap_err();
        assert_eq!(error.kind, strata_core::Kind::Internal);
        assert!(
            error.message.contains("widget record of format version 2")
                && error.message.contains("reads version 1 only"),
            "{}",
            error.message
        );
        assert!(payload("widget record", &[]).is_err());
    }

    #[test]
    fn a_new_directory_is_marked_and_an_unmarked_or_other_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        check_data_dir(dir.path()).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join(MARKER)).unwrap(),
            "1\n"
        );
        check_data_dir(dir.path()).unwrap();

        let older = tempfile::tempdir().unwrap();
        std::fs::write(older.path().join("journals"), b"").unwrap();
        let error = check_data_dir(older.path()).unwrap_err();
        assert!(
            error.message.contains("no STRATA_FORMAT"),
            "{}",
            error.message
        );
        assert!(!older.path().join(MARKER).exists(), "nothing written");

        let newer = tempfile::tempdir().unwrap();
        std::fs::write(newer.path().join(MARKER), "7\n").unwrap();
        let error = check_data_dir(newer.path()).unwrap_err();
        assert!(
            error.message.contains("format version 7") && error.message.contains("version 1 only"),
            "{}",
            error.message
        );
    }
}
