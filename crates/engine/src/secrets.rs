//! Provider credentials at rest: sealed with the server's key (XChaCha20-Poly1305), so a
//! copy of the database alone does not give away a Twilio Auth Token.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use std::path::Path;

#[derive(Clone)]
pub struct Sealer {
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(..)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("RAPPORT_SECRET_KEY must be 32 bytes, base64-encoded")]
    BadKey,
    #[error("cannot read or create the key file {0}: {1}")]
    KeyFile(String, String),
    #[error("a sealed secret could not be opened (wrong key, or corrupted)")]
    Unseal,
}

impl Sealer {
    pub fn from_key(key: &[u8; 32]) -> Self {
        Self {
            cipher: XChaCha20Poly1305::new(key.into()),
        }
    }

    /// A sealer with a fresh random key (tests, or a server that never stores secrets).
    pub fn ephemeral() -> Self {
        Self::from_key(&rand::random())
    }

    /// The key from `RAPPORT_SECRET_KEY` when given, else from `file`, created (0600) with a
    /// random key on first use.
    pub fn load(env_key: Option<&str>, file: &Path) -> Result<Self, SecretError> {
        if let Some(text) = env_key {
            return Self::from_base64(text);
        }
        match std::fs::read_to_string(file) {
            Ok(text) => Self::from_base64(text.trim()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key: [u8; 32] = rand::random();
                write_private(file, &STANDARD.encode(key))
                    .map_err(|e| SecretError::KeyFile(file.display().to_string(), e.to_string()))?;
                Ok(Self::from_key(&key))
            }
            Err(e) => Err(SecretError::KeyFile(
                file.display().to_string(),
                e.to_string(),
            )),
        }
    }

    fn from_base64(text: &str) -> Result<Self, SecretError> {
        let bytes = STANDARD
            .decode(text.trim())
            .map_err(|_| SecretError::BadKey)?;
        let key: [u8; 32] = bytes.try_into().map_err(|_| SecretError::BadKey)?;
        Ok(Self::from_key(&key))
    }

    pub fn seal(&self, secret: &str) -> String {
        let nonce: [u8; 24] = rand::random();
        // Encryption with a valid key and nonce cannot fail for in-memory input.
        let sealed = self
            .cipher
            .encrypt(XNonce::from_slice(&nonce), secret.as_bytes())
            .unwrap_or_default();
        format!("v1:{}:{}", STANDARD.encode(nonce), STANDARD.encode(sealed))
    }

    pub fn unseal(&self, sealed: &str) -> Result<String, SecretError> {
        let mut parts = sealed.splitn(3, ':');
        let (Some("v1"), Some(nonce), Some(data)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(SecretError::Unseal);
        };
        let nonce = STANDARD.decode(nonce).map_err(|_| SecretError::Unseal)?;
        let data = STANDARD.decode(data).map_err(|_| SecretError::Unseal)?;
        if nonce.len() != 24 {
            return Err(SecretError::Unseal);
        }
        let plain = self
            .cipher
            .decrypt(XNonce::from_slice(&nonce), data.as_ref())
            .map_err(|_| SecretError::Unseal)?;
        String::from_utf8(plain).map_err(|_| SecretError::Unseal)
    }
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir)?;
    }
    #[cfg(unix)]
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?;
        f.write_all(text.as_bytes())
    }
    #[cfg(not(unix))]
    {
        std::fs::write(path, text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_secrets_open_only_with_their_key() {
        let a = Sealer::ephemeral();
        let sealed = a.seal("auth-token-123");
        assert!(!sealed.contains("auth-token-123"));
        assert_ne!(sealed, a.seal("auth-token-123"), "a fresh nonce each time");
        assert_eq!(a.unseal(&sealed).unwrap(), "auth-token-123");
        assert!(Sealer::ephemeral().unseal(&sealed).is_err());
        let mut tampered = sealed.clone();
        tampered.pop();
        tampered.push('A');
        assert!(a.unseal(&tampered).is_err());
    }

    #[test]
    fn the_key_file_is_created_once_and_reused() {
        let file =
            std::env::temp_dir().join(format!("rapport-key-{}", uuid::Uuid::now_v7().simple()));
        let first = Sealer::load(None, &file).unwrap();
        let sealed = first.seal("x");
        let again = Sealer::load(None, &file).unwrap();
        assert_eq!(again.unseal(&sealed).unwrap(), "x");
        assert!(matches!(
            Sealer::load(Some("short"), &file),
            Err(SecretError::BadKey)
        ));
    }
}
