//! The marker of the store in `agent.state_dir` (DESIGN §25): which store this agent
//! last ran on. SQLite makes a new, empty store wherever its file is missing, and a new
//! PostgreSQL database is migrated from nothing: without the marker, a store deleted or
//! replaced between two starts would be replaced by an empty one without a word, and
//! every request accepted into it lost.

use std::path::{Path, PathBuf};

/// The marker's file name in the state directory.
pub const FILE: &str = "store.marker";

/// What the marker says: where the store was and which store it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marker {
    pub location: String,
    pub store_id: String,
}

impl Marker {
    fn text(&self) -> String {
        format!(
            "# provd: the store this agent runs on; see `provd run --new-store`\nlocation={}\nstore_id={}\n",
            self.location, self.store_id
        )
    }

    fn parse(text: &str) -> Option<Self> {
        let value = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
                .map(str::to_string)
        };
        Some(Self {
            location: value("location")?,
            store_id: value("store_id")?,
        })
    }
}

pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(FILE)
}

/// The marker, if there is one (an unreadable one is an error: it may be the only
/// record that a store existed).
pub fn read(state_dir: &Path) -> Result<Option<Marker>, String> {
    let p = path(state_dir);
    match std::fs::read_to_string(&p) {
        Ok(text) => Marker::parse(&text).map(Some).ok_or_else(|| {
            format!(
                "{}: not a store marker; move it away if the store it named is gone for good",
                p.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", p.display())),
    }
}

/// Writes the marker whole (temporary file, then rename).
pub fn write(state_dir: &Path, m: &Marker) -> std::io::Result<()> {
    let p = path(state_dir);
    let tmp = state_dir.join(format!(".{FILE}.tmp"));
    std::fs::write(&tmp, m.text())?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, &p)
}

/// Whether the agent may start on the store it found. A store at another location was
/// moved on purpose (a new `[store]`, `provd store migrate`); at the same location it must
/// be the same store, unless the operator says `--new-store`.
pub fn verdict(marker: Option<&Marker>, found: &Marker, new_store: bool) -> Result<(), String> {
    match marker {
        None => Ok(()),
        Some(m) if m.location != found.location || m.store_id == found.store_id => Ok(()),
        Some(_) if new_store => Ok(()),
        Some(m) => Err(format!(
            "the store at {} is not the one this agent last ran on (store {}, now {}): it was deleted or replaced, and every request accepted into it is missing. Restore it from a backup, or start with `provd run --new-store` to go on with this one",
            m.location, m.store_id, found.store_id
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(location: &str, id: &str) -> Marker {
        Marker {
            location: location.into(),
            store_id: id.into(),
        }
    }

    #[test]
    fn a_different_store_at_the_same_place_is_refused_unless_told() {
        let was = m("/var/lib/provd/provd.db", "a1");
        assert!(verdict(None, &was, false).is_ok(), "first start");
        assert!(verdict(Some(&was), &was, false).is_ok(), "same store");
        let e = verdict(Some(&was), &m("/var/lib/provd/provd.db", "b2"), false).unwrap_err();
        assert!(e.contains("--new-store") && e.contains("a1"), "{e}");
        assert!(verdict(Some(&was), &m("/var/lib/provd/provd.db", "b2"), true).is_ok());
        assert!(
            verdict(Some(&was), &m("postgres://db/provd", "c3"), false).is_ok(),
            "moved"
        );
    }

    #[test]
    fn the_marker_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()).unwrap(), None);
        let was = m("/x/provd.db", "a1");
        write(dir.path(), &was).unwrap();
        assert_eq!(read(dir.path()).unwrap(), Some(was));
        std::fs::write(path(dir.path()), "junk").unwrap();
        assert!(read(dir.path()).is_err());
    }
}
