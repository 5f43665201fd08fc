//! Files the CLI writes for the agent keep the agent's owner (issue 35). The agent runs
//! as the `provd` user; an operator runs the CLI with sudo. A file the CLI rewrote as
//! root (`tokens add`), or made in the agent's state directory (the SQLite store's
//! journal, the gate key), would be root's and unreadable to the agent: its next reload
//! refused the tokens file and its next start exited.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

/// Who a file written at a path is to belong to, read before writing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
    /// The mode to keep (the file's, when it existed); None: as created.
    pub mode: Option<u32>,
}

impl Owner {
    /// The same owner, with a mode no more open than `mask` (a secret file is never made
    /// readable to more people by being rewritten).
    pub fn at_most(self, mask: u32) -> Owner {
        Owner {
            mode: self.mode.map(|m| m & mask),
            ..self
        }
    }
}

/// The owner of what is written at `path`: the file's own owner, group and mode when it
/// exists, else its directory's owner and group. None when neither can be read.
pub fn of(path: &Path) -> Option<Owner> {
    if let Ok(m) = std::fs::metadata(path) {
        return Some(Owner {
            uid: m.uid(),
            gid: m.gid(),
            mode: Some(m.permissions().mode() & 0o7777),
        });
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::metadata(dir).ok().map(|m| Owner {
        uid: m.uid(),
        gid: m.gid(),
        mode: None,
    })
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Gives `written` to `owner` when running as root (anyone else can only make files of
/// their own, which is what they asked for). The mode is set first, so that the file is
/// never readable by more than it was.
pub fn hand_over(written: &Path, owner: Option<Owner>) -> std::io::Result<()> {
    let Some(owner) = owner else { return Ok(()) };
    if let Some(mode) = owner.mode {
        std::fs::set_permissions(written, std::fs::Permissions::from_mode(mode))?;
    }
    if !is_root() {
        return Ok(());
    }
    std::os::unix::fs::chown(written, Some(owner.uid), Some(owner.gid))
}

/// Gives every file of `names` in `dir` that exists to the directory's owner, when
/// running as root: what the agent must write again (a SQLite store and its journal).
pub fn hand_over_in(dir: &Path, names: &[String]) -> std::io::Result<()> {
    if !is_root() {
        return Ok(());
    }
    let Ok(m) = std::fs::metadata(dir) else {
        return Ok(());
    };
    for name in names {
        let path = dir.join(name);
        if path.exists() {
            std::os::unix::fs::chown(&path, Some(m.uid()), Some(m.gid()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rewritten_file_keeps_its_mode_and_a_new_one_takes_its_directory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(&path, "a").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let owner = of(&path).unwrap();
        assert_eq!(owner.mode, Some(0o640));
        let tmp = dir.path().join("tokens.tmp");
        std::fs::write(&tmp, "b").unwrap();
        hand_over(&tmp, Some(owner)).unwrap();
        let m = std::fs::metadata(&tmp).unwrap();
        assert_eq!(m.permissions().mode() & 0o7777, 0o640);
        assert_eq!((m.uid(), m.gid()), (owner.uid, owner.gid));
        let fresh = of(&dir.path().join("new")).unwrap();
        assert_eq!(fresh.mode, None);
        let d = std::fs::metadata(dir.path()).unwrap();
        assert_eq!((fresh.uid, fresh.gid), (d.uid(), d.gid()));
    }
}
