//! A stand-in for API Gateway's control plane, which moto does not serve
//! (no stage cache, no FlushStageCache). It answers FlushStageCache
//! (`DELETE /restapis/{id}/stages/{stage}/cache/data`) as API Gateway does
//! (202, empty body) and records when each flush arrived, so tests and the
//! benchmark can count flushes made by the real SDK adapter in config-refresh.
//! It also answers UpdateStage (`PATCH /restapis/{id}/stages/{stage}`) and
//! records its patch operations, for `tenant-config-admin stage-settings`, and
//! GetStage (`GET /restapis/{id}/stages/{stage}`) with the method settings
//! those patches produced, for `tenant-config-admin verify`.
//! Anything else is a 404.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// The recorded flushes: (REST API id, stage, when).
pub type Flushes = Arc<Mutex<Vec<(String, String, Instant)>>>;
/// The recorded UpdateStage patch operations: (stage, op, path, value).
pub type StagePatches = Arc<Mutex<Vec<(String, String, String, String)>>>;

#[derive(Clone, Default)]
struct Recorded {
    flushes: Flushes,
    patches: StagePatches,
}

pub struct StageCacheStub {
    pub address: SocketAddr,
    recorded: Recorded,
    task: JoinHandle<()>,
}

impl StageCacheStub {
    pub async fn start() -> Result<Self, String> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| e.to_string())?;
        let address = listener.local_addr().map_err(|e| e.to_string())?;
        let recorded = Recorded::default();
        let shared = recorded.clone();
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(answer(socket, shared.clone()));
            }
        });
        Ok(Self {
            address,
            recorded,
            task,
        })
    }

    /// The endpoint URL for `AWS_ENDPOINT_URL_API_GATEWAY`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Flushes so far, in arrival order.
    pub fn flushes(&self) -> Vec<(String, String, Instant)> {
        self.recorded
            .flushes
            .lock()
            .map(|f| f.clone())
            .unwrap_or_default()
    }

    /// UpdateStage patch operations so far: (stage, op, path, value).
    pub fn stage_patches(&self) -> Vec<(String, String, String, String)> {
        self.recorded
            .patches
            .lock()
            .map(|p| p.clone())
            .unwrap_or_default()
    }
}

impl Drop for StageCacheStub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A stage's method settings as GetStage answers them: the template's cached
/// methods (caching on, as CloudFormation leaves them) and the stage-wide
/// `*/*`, with every recorded `replace` patch of this stage applied.
fn method_settings(
    stage: &str,
    patches: &[(String, String, String, String)],
) -> serde_json::Map<String, serde_json::Value> {
    use tenant_config_shared::stage_settings::{ALL_METHODS, CACHED_METHODS, method_settings_path};
    let key = |path: &str| path.trim_start_matches('/').to_owned();
    let mut settings = serde_json::Map::new();
    settings.insert(
        key(ALL_METHODS),
        serde_json::json!({"cachingEnabled": false}),
    );
    for (resource, method) in CACHED_METHODS {
        settings.insert(
            key(&method_settings_path(resource, method)),
            serde_json::json!({"cachingEnabled": true, "cacheTtlInSeconds": 300}),
        );
    }
    for (patched_stage, op, path, value) in patches {
        let Some((methods, field)) = path.split_once("/caching/") else {
            continue;
        };
        if patched_stage != stage || op != "replace" {
            continue;
        }
        let value = match value.as_str() {
            "true" => serde_json::Value::Bool(true),
            "false" => serde_json::Value::Bool(false),
            text => serde_json::Value::String(text.to_owned()),
        };
        if let Some(entry) = settings
            .entry(key(methods))
            .or_insert_with(|| serde_json::json!({}))
            .as_object_mut()
        {
            entry.insert(field.to_owned(), value);
        }
    }
    settings
}

/// Reads one request (headers, then the body its Content-Length announces),
/// answers it and closes the connection.
async fn answer(mut socket: TcpStream, recorded: Recorded) {
    let mut request = Vec::new();
    let mut buffer = [0u8; 4096];
    let header_end = loop {
        match socket.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buffer[..n]),
        }
        if let Some(end) = request.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        if request.len() > 64 * 1024 {
            return;
        }
    };
    let head = String::from_utf8_lossy(&request[..header_end]).to_string();
    let length: usize = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.trim()
                .eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    while request.len() < header_end + length {
        match socket.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => request.extend_from_slice(&buffer[..n]),
        }
    }
    let mut words = head.split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let segments: Vec<&str> = path.split('?').next().unwrap_or("").split('/').collect();
    let response = match (method, segments.as_slice()) {
        ("PATCH", ["", "restapis", _api, "stages", stage]) => {
            let body: serde_json::Value =
                serde_json::from_slice(&request[header_end..]).unwrap_or_default();
            let operations = body["patchOperations"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if let Ok(mut patches) = recorded.patches.lock() {
                for operation in &operations {
                    let text = |name: &str| operation[name].as_str().unwrap_or("").to_owned();
                    patches.push(((*stage).to_owned(), text("op"), text("path"), text("value")));
                }
            }
            let body = serde_json::json!({"stageName": stage}).to_string();
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
        }
        ("GET", ["", "restapis", _api, "stages", stage]) => {
            let patches = recorded
                .patches
                .lock()
                .map(|p| p.clone())
                .unwrap_or_default();
            let body = serde_json::json!({
                "stageName": stage,
                "cacheClusterEnabled": true,
                "methodSettings": method_settings(stage, &patches),
            })
            .to_string();
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
        }
        ("DELETE", ["", "restapis", api, "stages", stage, "cache", "data"]) => {
            if let Ok(mut flushes) = recorded.flushes.lock() {
                flushes.push(((*api).to_owned(), (*stage).to_owned(), Instant::now()));
            }
            "HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_owned()
        }
        _ => {
            let body = r#"{"message":"Invalid stage identifier specified"}"#;
            format!(
                "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nx-amzn-ErrorType: NotFoundException\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
        }
    };
    let _ = socket.write_all(response.as_bytes()).await;
    let _ = socket.shutdown().await;
}
