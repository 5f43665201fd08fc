//! The spool folder: `*.json` files dropped in `agent.spool_dir` are taken in. Writers
//! should write under another name (`x.json.tmp`) and rename, which is atomic; files
//! changed in the last half second are left for the next pass in case a writer did not.
//!
//! A taken file moves to `processed/`; a refused one to `rejected/` with `NAME.error`
//! beside it saying why. The idempotency key is the file name, a hash of its content and
//! the file's identity on disk (inode and modification time): a crash between storing and
//! moving the file never stores it twice, while the same name and content dropped again
//! later (after its request was revoked, say) is a new request.
//!
//! Nothing is ignored silently: `*.json` in any letter case is taken; dot files and
//! `*.tmp` / `*.part` / `*~` are a writer's work in progress; anything else is reported
//! (once) as not taken. A file over 1 MiB is refused without being read. A file whose JSON
//! ends early is a writer that paused: it is left for later passes for
//! [`INCOMPLETE_GRACE`] after its last change, then refused.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::validate::MAX_BODY;
use super::{Intake, SubmitError, fnv1a64};
use crate::store::Replay;

/// What happened to one file.
#[derive(Debug)]
pub enum Taken {
    Accepted {
        file: PathBuf,
        request_id: String,
        replayed: bool,
    },
    Rejected {
        file: PathBuf,
        reason: String,
    },
    /// Not a request file: left in place, reported.
    Ignored {
        file: PathBuf,
    },
    /// JSON that ends early, written less than [`INCOMPLETE_GRACE`] ago: tried again later.
    Incomplete {
        file: PathBuf,
    },
}

/// How long a file whose JSON ends early may stay unchanged before it is refused.
pub const INCOMPLETE_GRACE: Duration = Duration::from_secs(60);

/// Names of a writer's work in progress, never taken nor reported.
fn in_progress(name: &str) -> bool {
    name.starts_with('.')
        || name.ends_with('~')
        || [".tmp", ".part", ".swp"]
            .iter()
            .any(|x| name.to_ascii_lowercase().ends_with(x))
}

fn is_request_file(name: &str) -> bool {
    Path::new(name)
        .extension()
        .and_then(|x| x.to_str())
        .is_some_and(|x| x.eq_ignore_ascii_case("json"))
}

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("spool: {0}")]
    Internal(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_path_buf(),
        source,
    }
}

const SETTLE: Duration = Duration::from_millis(500);

/// One pass over the spool folder. Blocking (file I/O): run it on the blocking pool.
pub fn scan(intake: &Intake, dir: &Path) -> Result<Vec<Taken>, SpoolError> {
    for sub in ["processed", "rejected"] {
        std::fs::create_dir_all(dir.join(sub)).map_err(io(dir))?;
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io(dir))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.path())
        .filter(|p| {
            !p.file_name()
                .map(|n| n.to_string_lossy())
                .is_some_and(|n| in_progress(&n))
        })
        .collect();
    files.sort();
    let mut out = Vec::new();
    for path in files {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        if !name.as_deref().is_some_and(is_request_file) {
            out.push(Taken::Ignored { file: path });
            continue;
        }
        let Ok(meta) = std::fs::metadata(&path) else {
            continue; // gone meanwhile
        };
        let age = meta
            .modified()
            .ok()
            .and_then(|m| SystemTime::now().duration_since(m).ok());
        if age.is_some_and(|age| age < SETTLE) {
            continue;
        }
        out.push(take(intake, dir, &path, &meta, age)?);
    }
    Ok(out)
}

/// The file's identity on disk, part of its idempotency key.
fn disk_identity(meta: &std::fs::Metadata) -> String {
    use std::os::unix::fs::MetadataExt;
    format!("{}.{}.{}", meta.ino(), meta.mtime(), meta.mtime_nsec())
}

fn take(
    intake: &Intake,
    dir: &Path,
    path: &Path,
    meta: &std::fs::Metadata,
    age: Option<Duration>,
) -> Result<Taken, SpoolError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "request.json".into());
    if meta.len() > MAX_BODY as u64 {
        // Refused without reading: a 1 GiB file must not cost 1 GiB of memory.
        let reason = format!(
            "body: is {} bytes; the limit is {MAX_BODY} (1 MiB)",
            meta.len()
        );
        return reject(dir, path, &name, reason);
    }
    let body = std::fs::read(path).map_err(io(path))?;
    if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&body)
        && e.is_eof()
        && age.is_none_or(|a| a < INCOMPLETE_GRACE)
    {
        return Ok(Taken::Incomplete {
            file: path.to_path_buf(),
        });
    }
    let key = format!(
        "spool:{name}:{:016x}:{}",
        fnv1a64(&body),
        disk_identity(meta)
    );
    // The scan runs on the blocking pool (it reads and moves files); the submit is async.
    let submitted = tokio::runtime::Handle::try_current()
        .map_err(|e| SpoolError::Internal(e.to_string()))?
        .block_on(intake.submit(&body, &crate::model::Requester::spool(), Some(&key)));
    match submitted {
        Ok(replay) => {
            let replayed = matches!(replay, Replay::Replayed(_));
            let request_id = replay.accepted().request_id.clone();
            let dest = free_name(&dir.join("processed"), &name);
            std::fs::rename(path, &dest).map_err(io(path))?;
            private(&dest);
            Ok(Taken::Accepted {
                file: dest,
                request_id,
                replayed,
            })
        }
        Err(SubmitError::Invalid(invalid)) => {
            let reason: Vec<String> = invalid.0.iter().map(ToString::to_string).collect();
            reject(dir, path, &name, reason.join("\n"))
        }
        Err(e @ SubmitError::KeyReused { .. }) => reject(dir, path, &name, e.to_string()),
        Err(SubmitError::Store(e)) => Err(e.into()),
        Err(SubmitError::Internal(e)) => Err(SpoolError::Internal(e)),
    }
}

/// A request kept in `processed/` or `rejected/` is provd's to keep now, readable by its
/// user only, whatever mode the writer gave it.
fn private(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
}

/// Moves a refused file to `rejected/`, with `NAME.error` beside it saying why.
fn reject(dir: &Path, path: &Path, name: &str, reason: String) -> Result<Taken, SpoolError> {
    let dest = free_name(&dir.join("rejected"), name);
    // The reason first: a crash in between leaves the file to be refused again.
    let error_file = PathBuf::from(format!("{}.error", dest.display()));
    std::fs::write(&error_file, format!("{reason}\n")).map_err(io(&error_file))?;
    std::fs::rename(path, &dest).map_err(io(path))?;
    private(&dest);
    Ok(Taken::Rejected { file: dest, reason })
}

/// `dir/name`, or `dir/name.N` if that is taken (the same name dropped again later).
fn free_name(dir: &Path, name: &str) -> PathBuf {
    let first = dir.join(name);
    if !first.exists() {
        return first;
    }
    (1..)
        .map(|n| dir.join(format!("{name}.{n}")))
        .find(|p| !p.exists() && !PathBuf::from(format!("{}.error", p.display())).exists())
        .unwrap_or(first)
}
