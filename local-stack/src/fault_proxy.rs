//! A fault-injecting HTTP proxy in front of moto, for what moto cannot do:
//! throttle, refuse or stall one AWS service (or Cognito's JWKS endpoint)
//! while the others keep working. The functions reach Parameter Store, Cloud
//! Map, STS and the JWKS through it when the stack is started with
//! `StackOptions::fault_proxy`; every request is forwarded unchanged unless a
//! fault is set for its route, and each one is recorded (route, operation,
//! parameter name, time) so tests can count store calls.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Which upstream a request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    ParameterStore,
    /// Only when the stack routes DynamoDB through the proxy
    /// (`StackOptions::dynamodb_through_proxy`), to count its calls.
    DynamoDb,
    CloudMap,
    Jwks,
    /// STS (AssumeRole for tenant credentials).
    Sts,
    Other,
}

/// What the proxy does with a route's requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forward to moto.
    Pass,
    /// Answer 400 `ThrottlingException`, as AWS does when a quota is exceeded.
    Throttle,
    /// Close the connection without an answer.
    Refuse,
    /// Hold the connection and never answer (until the fault is lifted).
    Stall,
}

/// One request the proxy saw.
#[derive(Debug, Clone)]
pub struct Call {
    pub route: Route,
    /// `X-Amz-Target` operation (e.g. `AmazonSSM.GetParameter`), or the path.
    pub operation: String,
    /// The `Name` member of the JSON body (a parameter's name), else its
    /// `TableName` (a DynamoDB call's table), else an STS call's `RoleArn`.
    pub name: Option<String>,
    pub at: Instant,
    pub fault: Fault,
}

#[derive(Default)]
struct State {
    faults: HashMap<Route, Fault>,
    calls: Vec<Call>,
}

pub struct FaultProxy {
    pub address: SocketAddr,
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
}

impl FaultProxy {
    /// Listens on a free loopback port and forwards to `upstream` (moto).
    pub async fn start(upstream: &str) -> Result<Self, String> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| e.to_string())?;
        let address = listener.local_addr().map_err(|e| e.to_string())?;
        let state: Arc<Mutex<State>> = Arc::default();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| e.to_string())?;
        let upstream = upstream.trim_end_matches('/').to_owned();
        let shared = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(serve(
                    socket,
                    shared.clone(),
                    client.clone(),
                    upstream.clone(),
                ));
            }
        });
        Ok(Self {
            address,
            state,
            task,
        })
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.address)
    }

    pub fn set_fault(&self, route: Route, fault: Fault) {
        if let Ok(mut state) = self.state.lock() {
            state.faults.insert(route, fault);
        }
    }

    /// Every request seen so far, in arrival order.
    pub fn calls(&self) -> Vec<Call> {
        self.state
            .lock()
            .map(|s| s.calls.clone())
            .unwrap_or_default()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn fault_for(state: &Mutex<State>, route: Route) -> Fault {
    state
        .lock()
        .ok()
        .and_then(|s| s.faults.get(&route).copied())
        .unwrap_or(Fault::Pass)
}

fn classify(path: &str, target: Option<&str>, body: &[u8]) -> Route {
    match target {
        None if form_value(body, "Action").is_some_and(|a| a.starts_with("AssumeRole")) => {
            Route::Sts
        }
        Some(t) if t.starts_with("AmazonSSM.") => Route::ParameterStore,
        Some(t) if t.starts_with("DynamoDB_") => Route::DynamoDb,
        Some(t) if t.starts_with("Route53AutoNaming") => Route::CloudMap,
        _ if path.ends_with("/.well-known/jwks.json") => Route::Jwks,
        _ => Route::Other,
    }
}

/// A member of a form-encoded (AWS query protocol) body, decoded.
fn form_value(body: &[u8], name: &str) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    text.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (key == name).then(|| percent_decode(value))
    })
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match u8::from_str_radix(&text[i + 1..i + 3], 16) {
                Ok(byte) => {
                    out.push(byte);
                    i += 3;
                    continue;
                }
                Err(_) => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            other => out.push(other),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

async fn read_request(socket: &mut TcpStream) -> Option<Request> {
    let mut data = Vec::new();
    let mut buffer = [0u8; 8192];
    let header_end = loop {
        let n = socket.read(&mut buffer).await.ok()?;
        if n == 0 {
            return None;
        }
        data.extend_from_slice(&buffer[..n]);
        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        if data.len() > 1024 * 1024 {
            return None;
        }
    };
    let head = String::from_utf8_lossy(&data[..header_end]).to_string();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next()?.split(' ');
    let method = request_line.next()?.to_owned();
    let path = request_line.next()?.to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = data[header_end..].to_vec();
    while body.len() < length {
        let n = socket.read(&mut buffer).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&buffer[..n]);
    }
    Some(Request {
        method,
        path,
        headers,
        body,
    })
}

async fn serve(
    mut socket: TcpStream,
    state: Arc<Mutex<State>>,
    client: reqwest::Client,
    upstream: String,
) {
    // One request per connection: every answer says `connection: close`.
    let Some(request) = read_request(&mut socket).await else {
        return;
    };
    let route = classify(&request.path, request.header("x-amz-target"), &request.body);
    let fault = fault_for(&state, route);
    let name = serde_json::from_slice::<serde_json::Value>(&request.body)
        .ok()
        .and_then(|body| {
            body["Name"]
                .as_str()
                .or_else(|| body["TableName"].as_str())
                .map(str::to_owned)
        })
        .or_else(|| form_value(&request.body, "RoleArn"));
    if let Ok(mut state) = state.lock() {
        state.calls.push(Call {
            route,
            operation: request
                .header("x-amz-target")
                .map_or_else(|| request.path.clone(), str::to_owned),
            name,
            at: Instant::now(),
            fault,
        });
    }
    let (status, headers, body) = match fault {
        Fault::Refuse => return,
        Fault::Stall => {
            // Hold the connection until the fault is lifted (or a minute).
            let deadline = Instant::now() + Duration::from_secs(60);
            while fault_for(&state, route) == Fault::Stall && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            return;
        }
        Fault::Throttle => (
            400,
            vec![
                (
                    "content-type".to_owned(),
                    "application/x-amz-json-1.1".to_owned(),
                ),
                (
                    "x-amzn-errortype".to_owned(),
                    "ThrottlingException".to_owned(),
                ),
            ],
            br#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#.to_vec(),
        ),
        Fault::Pass => match forward(&client, &upstream, &request).await {
            Some(answer) => answer,
            None => return,
        },
    };
    let mut head = format!("HTTP/1.1 {status} X\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!(
        "content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    ));
    let _ = socket.write_all(head.as_bytes()).await;
    let _ = socket.write_all(&body).await;
    let _ = socket.shutdown().await;
}

async fn forward(
    client: &reqwest::Client,
    upstream: &str,
    request: &Request,
) -> Option<(u16, Vec<(String, String)>, Vec<u8>)> {
    let method = reqwest::Method::from_bytes(request.method.as_bytes()).ok()?;
    let mut outgoing = client.request(method, format!("{upstream}{}", request.path));
    for (name, value) in &request.headers {
        if !["host", "content-length", "connection", "transfer-encoding"]
            .iter()
            .any(|skip| name.eq_ignore_ascii_case(skip))
        {
            outgoing = outgoing.header(name, value);
        }
    }
    let response = outgoing.body(request.body.clone()).send().await.ok()?;
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .filter(|(name, _)| {
            !["content-length", "connection", "transfer-encoding"].contains(&name.as_str())
        })
        .filter_map(|(name, value)| Some((name.to_string(), value.to_str().ok()?.to_owned())))
        .collect();
    let body = response.bytes().await.ok()?.to_vec();
    Some((status, headers, body))
}
