//! The secret of an ASYNC invocation must survive a restart (the callback needs it), but
//! the store's readable text must never hold it. It is stored sealed: ChaCha20-Poly1305
//! under a key kept in a file beside the store (mode 0600), bound to its invocation's id.

use std::io::Write;
use std::path::Path;

use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use secrecy::SecretString;

use crate::model::hex::{decode as unhex, encode as hex};

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("{path}: {message}")]
    Key { path: String, message: String },
    #[error("a sealed secret could not be opened (another key file, or a damaged row)")]
    Open,
    #[error("the OS random source failed")]
    Random,
}

pub struct Sealer(LessSafeKey);

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(..)")
    }
}

impl Sealer {
    pub fn from_key(key: &[u8; 32]) -> Result<Self, SealError> {
        let key = UnboundKey::new(&CHACHA20_POLY1305, key).map_err(|_| SealError::Open)?;
        Ok(Self(LessSafeKey::new(key)))
    }

    /// The key in `path`, made (32 random bytes, hex, mode 0600) if the file is missing.
    pub fn load_or_create(path: &Path) -> Result<Self, SealError> {
        let err = |message: String| SealError::Key {
            path: path.display().to_string(),
            message,
        };
        if !path.exists() {
            let mut key = [0u8; 32];
            getrandom::fill(&mut key).map_err(|_| SealError::Random)?;
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            match options.open(path) {
                Ok(mut f) => {
                    f.write_all(format!("{}\n", hex(&key)).as_bytes())
                        .and_then(|()| f.sync_all())
                        .map_err(|e| err(e.to_string()))?;
                }
                // Another agent made it first: read theirs.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(err(e.to_string())),
            }
        }
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let key: [u8; 32] = unhex(text.trim())
            .and_then(|k| k.try_into().ok())
            .ok_or_else(|| err("not a key (64 hex digits)".into()))?;
        Self::from_key(&key)
    }

    /// `v1:` and the hex of nonce, ciphertext and tag.
    pub fn seal(&self, id: &str, secret: &str) -> Result<String, SealError> {
        let mut nonce = [0u8; 12];
        getrandom::fill(&mut nonce).map_err(|_| SealError::Random)?;
        let mut data = secret.as_bytes().to_vec();
        self.0
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(id.as_bytes()),
                &mut data,
            )
            .map_err(|_| SealError::Open)?;
        Ok(format!("v1:{}{}", hex(&nonce), hex(&data)))
    }

    pub fn open(&self, id: &str, sealed: &str) -> Result<SecretString, SealError> {
        let bytes = sealed
            .strip_prefix("v1:")
            .and_then(unhex)
            .filter(|b| b.len() >= 12 + 16)
            .ok_or(SealError::Open)?;
        let (nonce, rest) = bytes.split_at(12);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError::Open)?;
        let mut data = rest.to_vec();
        let plain = self
            .0
            .open_in_place(nonce, Aad::from(id.as_bytes()), &mut data)
            .map_err(|_| SealError::Open)?;
        let text = String::from_utf8(plain.to_vec()).map_err(|_| SealError::Open)?;
        Ok(SecretString::from(text))
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    #[test]
    fn sealed_secrets_open_only_with_their_key_and_id() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let s = Sealer::load_or_create(&path).unwrap();
        let sealed = s.seal("inv-1", "top-secret").unwrap();
        assert!(!sealed.contains("top-secret"));
        assert_eq!(
            s.open("inv-1", &sealed).unwrap().expose_secret(),
            "top-secret"
        );
        assert!(s.open("inv-2", &sealed).is_err(), "bound to its invocation");
        let again = Sealer::load_or_create(&path).unwrap();
        assert_eq!(
            again.open("inv-1", &sealed).unwrap().expose_secret(),
            "top-secret"
        );
        let other = Sealer::from_key(&[7; 32]).unwrap();
        assert!(other.open("inv-1", &sealed).is_err());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
