//! The spool folder: `*.json` files dropped in `agent.spool_dir` are taken in. Writers
//! should write under another name (`x.json.tmp`) and rename, which is atomic; files
//! changed in the last half second are left for the next pass in case a writer did not.
//!
//! A taken file moves to `processed/`; a refused one to `rejected/` with `NAME.error`
//! beside it saying why. The idempotency key is the file name plus a hash of its content,
//! so a crash between storing and moving the file never stores it twice.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::{SubmitError, fnv1a64, submit};
use crate::config::Config;
use crate::store::{Replay, Store};

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
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_path_buf(),
        source,
    }
}

const SETTLE: Duration = Duration::from_millis(500);

/// One pass over the spool folder.
pub fn scan(
    config: &Config,
    store: &Store,
    dir: &Path,
    now: jiff::Timestamp,
) -> Result<Vec<Taken>, SpoolError> {
    for sub in ["processed", "rejected"] {
        std::fs::create_dir_all(dir.join(sub)).map_err(io(dir))?;
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io(dir))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.path())
        .filter(|p| {
            p.extension().is_some_and(|x| x == "json")
                && !p
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with('.'))
        })
        .collect();
    files.sort();
    let mut out = Vec::new();
    for path in files {
        let fresh = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|m| SystemTime::now().duration_since(m).ok())
            .is_some_and(|age| age < SETTLE);
        if fresh {
            continue;
        }
        out.push(take(config, store, dir, &path, now)?);
    }
    Ok(out)
}

fn take(
    config: &Config,
    store: &Store,
    dir: &Path,
    path: &Path,
    now: jiff::Timestamp,
) -> Result<Taken, SpoolError> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("request.json")
        .to_string();
    let body = std::fs::read(path).map_err(io(path))?;
    let key = format!("spool:{name}:{:016x}", fnv1a64(&body));
    match submit(config, store, now, &body, "spool", Some(&key)) {
        Ok(replay) => {
            let replayed = matches!(replay, Replay::Replayed(_));
            let request_id = replay.accepted().request_id.clone();
            let dest = free_name(&dir.join("processed"), &name);
            std::fs::rename(path, &dest).map_err(io(path))?;
            Ok(Taken::Accepted {
                file: dest,
                request_id,
                replayed,
            })
        }
        Err(e @ (SubmitError::Invalid(_) | SubmitError::KeyReused { .. })) => {
            let dest = free_name(&dir.join("rejected"), &name);
            let mut reason = String::new();
            match e {
                SubmitError::Invalid(invalid) => {
                    for e in &invalid.0 {
                        reason.push_str(&e.to_string());
                        reason.push('\n');
                    }
                }
                other => reason = format!("{other}\n"),
            }
            // The reason first: a crash in between leaves the file to be refused again.
            let error_file = PathBuf::from(format!("{}.error", dest.display()));
            std::fs::write(&error_file, &reason).map_err(io(&error_file))?;
            std::fs::rename(path, &dest).map_err(io(path))?;
            Ok(Taken::Rejected {
                file: dest,
                reason: reason.trim_end().to_string(),
            })
        }
        Err(SubmitError::Store(e)) => Err(e.into()),
    }
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
