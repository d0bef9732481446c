//! The snapshot file: AES-256-GCM under a data key that KMS generated and
//! only KMS can decrypt (envelope encryption), written by atomic replace.
//!
//! Layout: `MAGIC`, the encrypted data key's length (u32, big endian) and
//! bytes, a 12-byte nonce, then the ciphertext with its tag. The magic and
//! the encrypted key are the AEAD's associated data, so neither can be
//! swapped without the open failing.

use std::path::Path;
use std::sync::Arc;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use thiserror::Error;

const MAGIC: &[u8; 12] = b"TCAGENTSNAP1";

#[derive(Debug, Error)]
pub enum SealError {
    #[error("the data key could not be had: {0}")]
    DataKey(String),
    #[error("the snapshot file is not one of ours or is damaged: {0}")]
    Malformed(&'static str),
    #[error("the snapshot does not decrypt under its data key (altered, or another key's)")]
    Tampered,
    #[error("snapshot file: {0}")]
    Io(#[from] std::io::Error),
}

/// A plaintext data key and the same key encrypted by KMS.
pub struct DataKey {
    plaintext: [u8; 32],
    pub encrypted: Vec<u8>,
}

impl DataKey {
    pub fn new(plaintext: [u8; 32], encrypted: Vec<u8>) -> Self {
        Self {
            plaintext,
            encrypted,
        }
    }
}

impl Drop for DataKey {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.plaintext);
    }
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(<redacted>)")
    }
}

/// Where data keys come from (KMS `GenerateDataKey` and `Decrypt`).
#[async_trait::async_trait]
pub trait DataKeys: Send + Sync {
    async fn generate(&self) -> Result<DataKey, SealError>;
    async fn decrypt(&self, encrypted: &[u8]) -> Result<DataKey, SealError>;
}

fn aead(key: &DataKey) -> Result<LessSafeKey, SealError> {
    UnboundKey::new(&AES_256_GCM, &key.plaintext)
        .map(LessSafeKey::new)
        .map_err(|_| SealError::DataKey("not an AES-256 key".into()))
}

fn associated(encrypted_key: &[u8]) -> Vec<u8> {
    [MAGIC.as_slice(), encrypted_key].concat()
}

/// `plaintext` sealed under `key`, as the file holds it.
pub fn seal(key: &DataKey, plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
    let mut nonce = [0u8; NONCE_LEN];
    aws_lc_rs::rand::fill(&mut nonce).map_err(|_| SealError::DataKey("no randomness".into()))?;
    let mut body = plaintext.to_vec();
    aead(key)?
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(associated(&key.encrypted)),
            &mut body,
        )
        .map_err(|_| SealError::Tampered)?;
    let length = u32::try_from(key.encrypted.len())
        .map_err(|_| SealError::Malformed("encrypted data key too long"))?;
    let mut file =
        Vec::with_capacity(MAGIC.len() + 4 + key.encrypted.len() + NONCE_LEN + body.len());
    file.extend_from_slice(MAGIC);
    file.extend_from_slice(&length.to_be_bytes());
    file.extend_from_slice(&key.encrypted);
    file.extend_from_slice(&nonce);
    file.extend_from_slice(&body);
    Ok(file)
}

/// The encrypted data key a sealed file names (to have KMS decrypt it).
pub fn encrypted_key(file: &[u8]) -> Result<&[u8], SealError> {
    let rest = file
        .strip_prefix(MAGIC.as_slice())
        .ok_or(SealError::Malformed("no snapshot header"))?;
    let (length, rest) = rest
        .split_first_chunk::<4>()
        .ok_or(SealError::Malformed("truncated header"))?;
    let length = u32::from_be_bytes(*length) as usize;
    rest.get(..length)
        .ok_or(SealError::Malformed("truncated data key"))
}

/// The plaintext of a sealed file, with `key` (its data key, decrypted).
pub fn open(key: &DataKey, file: &[u8]) -> Result<Vec<u8>, SealError> {
    let encrypted = encrypted_key(file)?;
    if encrypted != key.encrypted.as_slice() {
        return Err(SealError::Tampered);
    }
    let rest = &file[MAGIC.len() + 4 + encrypted.len()..];
    let (nonce, sealed) = rest
        .split_first_chunk::<NONCE_LEN>()
        .ok_or(SealError::Malformed("truncated nonce"))?;
    let mut body = sealed.to_vec();
    let plaintext = aead(key)?
        .open_in_place(
            Nonce::assume_unique_for_key(*nonce),
            Aad::from(associated(encrypted)),
            &mut body,
        )
        .map_err(|_| SealError::Tampered)?;
    Ok(plaintext.to_vec())
}

/// Replaces `path` with `bytes` so a reader (or a crash) sees the old file
/// or the new one, never a part: a new temporary file beside it (a random
/// name, created exclusively, never through a link), flushed to disk,
/// renamed over it, and the directory flushed. Owner-only (0600).
pub fn replace_atomically(path: &Path, bytes: &[u8]) -> Result<(), SealError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let directory = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or(SealError::Malformed("the snapshot path names no file"))?;
    let mut suffix = [0u8; 8];
    aws_lc_rs::rand::fill(&mut suffix).map_err(|_| SealError::DataKey("no randomness".into()))?;
    let temporary = directory.join(format!(
        ".{}.{:016x}.tmp",
        name.to_string_lossy(),
        u64::from_be_bytes(suffix)
    ));
    let written = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)?;
        std::fs::File::open(directory)?.sync_all()
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    Ok(written?)
}

/// The file at `path` if it is a regular file (not a link, a FIFO or a
/// device) of at most `limit` bytes; `None` when there is none.
pub fn read_bounded(path: &Path, limit: u64) -> Result<Option<Vec<u8>>, SealError> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let metadata = file.metadata()?;
    if !metadata.is_file() {
        return Err(SealError::Malformed("not a regular file"));
    }
    if metadata.len() > limit {
        return Err(SealError::Malformed("larger than the snapshot bound"));
    }
    let mut bytes = Vec::with_capacity(metadata.len() as usize);
    file.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(SealError::Malformed("larger than the snapshot bound"));
    }
    Ok(Some(bytes))
}

/// Data keys held in memory: for tests and the benchmark, never for a
/// deploy (a "decrypt" here is a lookup).
#[derive(Default)]
pub struct MemoryDataKeys {
    issued: std::sync::Mutex<Vec<([u8; 32], Vec<u8>)>>,
}

#[async_trait::async_trait]
impl DataKeys for MemoryDataKeys {
    async fn generate(&self) -> Result<DataKey, SealError> {
        let mut plaintext = [0u8; 32];
        aws_lc_rs::rand::fill(&mut plaintext)
            .map_err(|_| SealError::DataKey("no randomness".into()))?;
        let mut handle = vec![0u8; 16];
        aws_lc_rs::rand::fill(&mut handle)
            .map_err(|_| SealError::DataKey("no randomness".into()))?;
        if let Ok(mut issued) = self.issued.lock() {
            issued.push((plaintext, handle.clone()));
        }
        Ok(DataKey::new(plaintext, handle))
    }

    async fn decrypt(&self, encrypted: &[u8]) -> Result<DataKey, SealError> {
        let issued = self
            .issued
            .lock()
            .map_err(|_| SealError::DataKey("poisoned".into()))?;
        issued
            .iter()
            .find(|(_, handle)| handle.as_slice() == encrypted)
            .map(|(plaintext, handle)| DataKey::new(*plaintext, handle.clone()))
            .ok_or_else(|| SealError::DataKey("not a key this source issued".into()))
    }
}

/// Shares one [`DataKeys`] between the loader and the writer.
pub type SharedDataKeys = Arc<dyn DataKeys>;

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_sealed_snapshot_opens_only_unaltered_and_under_its_own_key() {
        let keys = MemoryDataKeys::default();
        let key = keys.generate().await.unwrap();
        let file = seal(&key, br#"{"values":"plain text"}"#).unwrap();
        // THEN the file holds no plaintext
        assert!(!file.windows(10).any(|w| w == b"plain text"));
        // AND it opens with the key KMS gives back for its encrypted key
        let again = keys.decrypt(encrypted_key(&file).unwrap()).await.unwrap();
        assert_eq!(open(&again, &file).unwrap(), br#"{"values":"plain text"}"#);
        // AND one flipped bit anywhere after the header is refused
        for at in [MAGIC.len() + 4 + 2, file.len() - 1, file.len() / 2] {
            let mut altered = file.clone();
            altered[at] ^= 1;
            assert!(open(&again, &altered).is_err(), "flipped byte {at}");
        }
        // AND another key cannot open it
        let other = keys.generate().await.unwrap();
        assert!(matches!(open(&other, &file), Err(SealError::Tampered)));
        // AND what is not a snapshot is told apart
        assert!(matches!(
            encrypted_key(b"hello"),
            Err(SealError::Malformed(_))
        ));
    }

    #[test]
    fn a_replace_leaves_the_new_file_whole_owner_only_and_no_temporary() {
        use std::os::unix::fs::PermissionsExt;
        let directory = std::env::temp_dir().join(format!("snap-test-{}", std::process::id()));
        std::fs::create_dir_all(&directory).unwrap();
        let path = directory.join("agent.snapshot");
        replace_atomically(&path, b"first").unwrap();
        replace_atomically(&path, b"second").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let left: Vec<_> = std::fs::read_dir(&directory).unwrap().collect();
        assert_eq!(left.len(), 1, "{left:?}");
        // AND reading it back is bounded, and refuses what is not a plain file
        assert_eq!(read_bounded(&path, 6).unwrap().unwrap(), b"second");
        assert!(read_bounded(&path, 5).is_err());
        assert!(read_bounded(&directory.join("none"), 5).unwrap().is_none());
        let link = directory.join("link");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert!(read_bounded(&link, 100).is_err(), "a link is not followed");
        std::fs::remove_dir_all(&directory).unwrap();
    }
}
