//! A one-shot Lambda Runtime API on loopback, to time a function binary from
//! process start to its first answered invocation (its cold start), without
//! anything else in between.

use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

const REQUEST_ID: &str = "bench-cold-start-1";

/// Serves `event` once; sends the response body (or error) when it arrives.
pub async fn serve_once(
    event: String,
) -> std::io::Result<(u16, mpsc::Receiver<(Instant, Result<String, String>)>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let (answered, answers) = mpsc::channel(1);
    tokio::spawn(async move {
        let mut served = false;
        while let Ok((stream, _)) = listener.accept().await {
            let event = event.clone();
            let answered = answered.clone();
            let first = !served;
            served = true;
            tokio::spawn(connection(stream, event, first, answered));
        }
    });
    Ok((port, answers))
}

async fn connection(
    stream: TcpStream,
    event: String,
    mut give_event: bool,
    answered: mpsc::Sender<(Instant, Result<String, String>)>,
) {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).await.unwrap_or(0) == 0 {
            return;
        }
        let mut content_length = 0usize;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).await.unwrap_or(0) == 0 {
                return;
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                content_length = value.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0u8; content_length];
        if reader.read_exact(&mut body).await.is_err() {
            return;
        }
        let path = request_line
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_owned();
        if path.ends_with("/invocation/next") {
            if !give_event {
                // Later polls wait here until the process is stopped.
                tokio::time::sleep(Duration::from_secs(3600)).await;
                return;
            }
            give_event = false;
            let deadline = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() + 30_000)
                .unwrap_or(0);
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nlambda-runtime-aws-request-id: {REQUEST_ID}\r\n\
                 lambda-runtime-deadline-ms: {deadline}\r\nlambda-runtime-invoked-function-arn: arn:aws:lambda:us-east-1:123456789012:function:config-api\r\n\
                 lambda-runtime-trace-id: Root=1-00000000-000000000000000000000000\r\ncontent-length: {}\r\n\r\n",
                event.len()
            );
            if write.write_all(head.as_bytes()).await.is_err()
                || write.write_all(event.as_bytes()).await.is_err()
            {
                return;
            }
            continue;
        }
        let text = String::from_utf8_lossy(&body).into_owned();
        let outcome = if path.ends_with("/response") {
            Ok(text)
        } else {
            Err(format!("{path}: {text}"))
        };
        let _ = answered.send((Instant::now(), outcome)).await;
        let _ = write
            .write_all(b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n")
            .await;
    }
}
