//! Where the client gets the caller's ID token: asked before every stream
//! it opens and every secret it reads, so a source that refreshes tokens
//! keeps a long-lived client authenticated (a stream ends `UNAUTHENTICATED`
//! when its token expires; the client then opens a new one).

/// A source of the service's current Cognito ID token.
#[async_trait::async_trait]
pub trait TokenSource: Send + Sync + 'static {
    /// The token to send now; an error is logged and retried with backoff.
    async fn token(&self) -> Result<String, String>;
}

/// One token for the client's whole life (tests, short jobs): when it
/// expires the client can no longer reconnect.
pub struct StaticToken(pub String);

#[async_trait::async_trait]
impl TokenSource for StaticToken {
    async fn token(&self) -> Result<String, String> {
        Ok(self.0.clone())
    }
}

/// Any function that returns the current token (e.g. one that reads a
/// token file your sidecar refreshes).
#[async_trait::async_trait]
impl<F> TokenSource for F
where
    F: Fn() -> Result<String, String> + Send + Sync + 'static,
{
    async fn token(&self) -> Result<String, String> {
        self()
    }
}
