//! Data keys from KMS: `GenerateDataKey` (AES-256) for a new snapshot,
//! `Decrypt` for the one on disk, both under one encryption context so a
//! key policy (and CloudTrail) can tell snapshot keys from any other use.

use aws_sdk_kms::Client;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::DataKeySpec;

use super::sealed::{DataKey, DataKeys, SealError};

/// The encryption context of every snapshot data key.
pub const CONTEXT_KEY: &str = "purpose";
pub const CONTEXT_VALUE: &str = "tenant-config-agent-snapshot";

pub struct KmsDataKeys {
    client: Client,
    key_id: String,
}

impl KmsDataKeys {
    pub fn new(client: Client, key_id: impl Into<String>) -> Self {
        Self {
            client,
            key_id: key_id.into(),
        }
    }
}

fn plaintext(blob: Option<Blob>) -> Result<[u8; 32], SealError> {
    blob.and_then(|b| <[u8; 32]>::try_from(b.into_inner()).ok())
        .ok_or_else(|| SealError::DataKey("KMS answered no 256-bit key".into()))
}

#[async_trait::async_trait]
impl DataKeys for KmsDataKeys {
    async fn generate(&self) -> Result<DataKey, SealError> {
        let answer = self
            .client
            .generate_data_key()
            .key_id(&self.key_id)
            .key_spec(DataKeySpec::Aes256)
            .encryption_context(CONTEXT_KEY, CONTEXT_VALUE)
            .send()
            .await
            .map_err(|e| {
                SealError::DataKey(format!(
                    "GenerateDataKey: {}",
                    aws_sdk_kms::error::DisplayErrorContext(&e)
                ))
            })?;
        let encrypted = answer
            .ciphertext_blob
            .map(Blob::into_inner)
            .ok_or_else(|| SealError::DataKey("KMS answered no encrypted key".into()))?;
        Ok(DataKey::new(plaintext(answer.plaintext)?, encrypted))
    }

    async fn decrypt(&self, encrypted: &[u8]) -> Result<DataKey, SealError> {
        let answer = self
            .client
            .decrypt()
            .key_id(&self.key_id)
            .ciphertext_blob(Blob::new(encrypted))
            .encryption_context(CONTEXT_KEY, CONTEXT_VALUE)
            .send()
            .await
            .map_err(|e| {
                SealError::DataKey(format!(
                    "Decrypt: {}",
                    aws_sdk_kms::error::DisplayErrorContext(&e)
                ))
            })?;
        Ok(DataKey::new(
            plaintext(answer.plaintext)?,
            encrypted.to_vec(),
        ))
    }
}
