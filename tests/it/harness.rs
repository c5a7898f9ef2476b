//! Runs the real `p2p` binary: relays, senders and receivers as child
//! processes with a cleared environment, bounded waits, and failure messages
//! that show what each process printed.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

pub const BIN: &str = env!("CARGO_BIN_EXE_p2p");

/// Upper bound for anything a test waits for; generous for a loaded 2-core
/// CI machine, still a bound.
pub const WAIT: Duration = Duration::from_secs(20);

/// A running `p2p` process. Killed when dropped.
pub struct Proc {
    pub name: String,
    pub child: Child,
    pub stdin: Option<ChildStdin>,
    /// Lines printed on stdout (text mode), in order.
    pub stdout_lines: mpsc::UnboundedReceiver<String>,
    /// Everything printed on stderr so far.
    pub stderr: Arc<Mutex<String>>,
}

pub struct Spawn {
    cmd: Command,
    name: String,
    raw_stdout: bool,
}

impl Spawn {
    pub fn new(name: &str, args: &[&str]) -> Self {
        Self::program(BIN, &[], name, args)
    }

    /// The binary inside network namespace `netns` (`ip netns exec`, which
    /// execs it: the child's pid is the binary's own).
    pub fn in_netns(netns: &str, name: &str, args: &[&str]) -> Self {
        Self::program("ip", &["netns", "exec", netns, BIN], name, args)
    }

    /// Cargo example `example` (built beside the binary by `cargo test
    /// --all-targets` or `cargo build --examples`) inside `netns`.
    pub fn example_in_netns(netns: &str, example: &str, args: &[&str]) -> Self {
        let path = std::path::Path::new(BIN)
            .with_file_name("examples")
            .join(example);
        assert!(
            path.exists(),
            "{} is missing: build it with `cargo build --examples`",
            path.display()
        );
        let path = path.to_str().expect("a UTF-8 target directory");
        Self::program("ip", &["netns", "exec", netns, path], example, args)
    }

    fn program(program: &str, prefix: &[&str], name: &str, args: &[&str]) -> Self {
        let mut cmd = Command::new(program);
        cmd.args(prefix)
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "p2p=debug,warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        Self {
            cmd,
            name: name.to_owned(),
            raw_stdout: false,
        }
    }

    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.cmd.env(k, v);
        self
    }

    /// At most `n` open files, as on a machine whose default limit is
    /// 1,024.
    pub fn limit_files(mut self, n: u64) -> Self {
        let limit = libc::rlimit {
            rlim_cur: n,
            rlim_max: n,
        };
        // SAFETY: only setrlimit, which is async-signal-safe, runs between
        // fork and exec.
        unsafe {
            self.cmd.pre_exec(move || {
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
        self
    }

    /// Leave stdout to the test (`Proc::child.stdout`), for binary data.
    pub fn raw_stdout(mut self) -> Self {
        self.raw_stdout = true;
        self
    }

    pub fn spawn(mut self) -> Proc {
        let mut child = self
            .cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {BIN}: {e}"));
        let stdin = child.stdin.take();
        let (tx, stdout_lines) = mpsc::unbounded_channel();
        if !self.raw_stdout {
            let out = child.stdout.take().expect("stdout piped");
            tokio::spawn(async move {
                let mut lines = BufReader::new(out).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        let stderr = Arc::new(Mutex::new(String::new()));
        let err = child.stderr.take().expect("stderr piped");
        let sink = stderr.clone();
        let name = self.name.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(err).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if std::env::var_os("P2P_TEST_ECHO").is_some() {
                    eprintln!("[{name}] {line}");
                }
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        Proc {
            name: self.name,
            child,
            stdin,
            stdout_lines,
            stderr,
        }
    }
}

impl Proc {
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Panics with everything the process printed.
    pub fn fail(&self, what: &str) -> ! {
        panic!(
            "{what}\n--- {} stderr ---\n{}\n--- end ---",
            self.name,
            self.stderr()
        )
    }

    /// Next stdout line, or fail after `WAIT`.
    pub async fn line(&mut self) -> String {
        match tokio::time::timeout(WAIT, self.stdout_lines.recv()).await {
            Ok(Some(l)) => l,
            Ok(None) => self.fail("stdout closed while waiting for a line"),
            Err(_) => self.fail("no stdout line within the wait"),
        }
    }

    /// Waits until stderr contains `needle`.
    pub async fn wait_stderr(&self, needle: &str) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while tokio::time::Instant::now() < deadline {
            if self.stderr().contains(needle) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.fail(&format!("stderr never said {needle:?}"));
    }

    /// Counts occurrences of `needle` in stderr.
    pub fn stderr_count(&self, needle: &str) -> usize {
        self.stderr().matches(needle).count()
    }

    pub async fn write_stdin(&mut self, data: &[u8]) {
        use tokio::io::AsyncWriteExt;
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(data).await.expect("write to stdin");
        stdin.flush().await.expect("flush stdin");
    }

    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    pub fn signal(&self, sig: &str) {
        let pid = self.child.id().expect("process running").to_string();
        let ok = std::process::Command::new("kill")
            .args([&format!("-{sig}"), &pid])
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill -{sig} {pid} failed");
    }

    /// Waits for exit; fails after `WAIT`.
    pub async fn wait_exit(&mut self) -> std::process::ExitStatus {
        match tokio::time::timeout(WAIT, self.child.wait()).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => self.fail(&format!("wait failed: {e}")),
            Err(_) => self.fail("did not exit within the wait"),
        }
    }
}

/// `p2p CMD --signal SIGNAL --room ROOM --events json EXTRA…`: a sender or
/// a receiver as most tests start one, to be spawned.
pub fn in_room(name: &str, cmd: &str, signal: &str, room: &str, extra: &[&str]) -> Spawn {
    let mut args = vec![cmd, "--signal", signal, "--room", room, "--events", "json"];
    args.extend_from_slice(extra);
    Spawn::new(name, &args)
}

/// A `p2p signal` relay on a free port.
pub struct Relay {
    pub proc: Proc,
    pub url: String,
}

impl Relay {
    pub async fn start(extra: &[&str]) -> Self {
        Self::start_on("127.0.0.1:0", extra).await
    }

    pub async fn start_on(listen: &str, extra: &[&str]) -> Self {
        let mut args = vec!["signal", "--listen", listen];
        args.extend_from_slice(extra);
        Self::started(Spawn::new("relay", &args)).await
    }

    /// A relay inside network namespace `netns`, listening on `listen`.
    pub async fn start_in(netns: &str, listen: &str) -> Self {
        Self::start_in_with(netns, listen, &[]).await
    }

    /// [`Relay::start_in`] with more options.
    pub async fn start_in_with(netns: &str, listen: &str, extra: &[&str]) -> Self {
        let mut args = vec!["signal", "--listen", listen];
        args.extend_from_slice(extra);
        Self::started(Spawn::in_netns(netns, "relay", &args)).await
    }

    /// A relay from a command line of its own (`spawn` prints its URL).
    pub async fn started(spawn: Spawn) -> Self {
        let mut proc = spawn.spawn();
        let url = proc.line().await;
        assert!(
            url.starts_with("ws://") || url.starts_with("wss://"),
            "relay printed {url:?}"
        );
        Self { proc, url }
    }

    pub async fn start_tls(cert: &std::path::Path, key: &std::path::Path) -> Self {
        let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
        Self::start_on("127.0.0.1:0", &["--tls-cert", cert, "--tls-key", key]).await
    }

    pub fn http_url(&self) -> String {
        self.url.replacen("ws://", "http://", 1)
    }

    pub fn port(&self) -> u16 {
        self.url.rsplit(':').next().unwrap().parse().unwrap()
    }
}

/// `data` as a client may write it: keys not in sorted order, a number past
/// 2^53, `\u` escapes (one a surrogate pair), spaces inside a string and odd
/// whitespace between tokens. A relay that parses and re-serializes `data`
/// changes every one of these; PROTOCOL.md §2 says it is relayed unchanged.
pub const UNUSUAL_DATA: &str = concat!(
    r#"{ "type" :"invoke","#,
    "\n\t",
    r#""id":"x" , "nested":{"b":1,"a":[true ,null]},"s":"  spaces  ","#,
    r#""big":9007199254740993,"u":"\u00e9\ud83d\ude00""#,
    "\r\n}",
);

/// An `emit` frame of [`UNUSUAL_DATA`] to `ns`, and the `message` frame the
/// relay must send for it, byte for byte, when it does not stamp the
/// emitter (over NATS; one relay puts `"from":"…"` before `data`).
pub fn unusual_frames(ns: &[&str]) -> (String, String) {
    let ns = serde_json::to_string(ns).unwrap();
    (
        format!(r#"{{"op":"emit","ns":{ns},"data":{UNUSUAL_DATA}}}"#),
        format!(r#"{{"op":"message","ns":{ns},"data":{UNUSUAL_DATA}}}"#),
    )
}

/// `got` is `message` (an unstamped `message` frame) with `"from":"…"`
/// put before `data`, as a relay stamps it, and nothing else changed.
/// Returns the stamp.
pub fn stamp_of(got: &str, message: &str) -> String {
    let at = message.find(r#","data":"#).expect("a message frame");
    let (head, tail) = message.split_at(at);
    got.strip_prefix(head)
        .and_then(|rest| rest.strip_suffix(tail))
        .and_then(|s| s.strip_prefix(r#","from":""#))
        .and_then(|s| s.strip_suffix('"'))
        .filter(|s| !s.is_empty() && !s.contains('"'))
        .unwrap_or_else(|| panic!("{got}\nis not\n{message}\nwith a stamp"))
        .to_owned()
}

/// A raw WebSocket client of the relay, speaking PROTOCOL.md §2 by hand.
pub struct WsClient {
    pub ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
}

impl WsClient {
    pub async fn connect(url: &str) -> Self {
        let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
            .await
            .expect("connect timed out")
            .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
        Self { ws }
    }

    /// Connects from `source`, one of this machine's addresses (any of
    /// 127/8 on loopback): another client, as the relay sees it.
    pub async fn connect_from(url: &str, source: std::net::IpAddr) -> Self {
        let addr: std::net::SocketAddr = url
            .trim_start_matches("ws://")
            .trim_end_matches('/')
            .parse()
            .expect("a ws://IP:PORT URL");
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind((source, 0).into()).unwrap();
        let tcp = tokio::time::timeout(WAIT, socket.connect(addr))
            .await
            .expect("connect timed out")
            .unwrap_or_else(|e| panic!("connect to {url} from {source}: {e}"));
        let stream = tokio_tungstenite::MaybeTlsStream::Plain(tcp);
        let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::client_async(url, stream))
            .await
            .expect("handshake timed out")
            .unwrap_or_else(|e| panic!("handshake with {url} from {source}: {e}"));
        Self { ws }
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws
            .send(Message::Text(text.to_owned().into()))
            .await
            .expect("send frame");
    }

    pub async fn on(&mut self, ns: &[&str]) {
        self.send_text(&json!({"op":"on","ns":ns}).to_string())
            .await;
    }

    pub async fn off(&mut self, ns: &[&str]) {
        self.send_text(&json!({"op":"off","ns":ns}).to_string())
            .await;
    }

    pub async fn emit(&mut self, ns: &[&str], data: Value) {
        self.send_text(&json!({"op":"emit","ns":ns,"data":data}).to_string())
            .await;
    }

    /// The next frame as JSON, or None when nothing comes within `wait`.
    pub async fn recv_within(&mut self, wait: Duration) -> Option<Value> {
        let text = self.recv_text_within(wait).await?;
        Some(serde_json::from_str(&text).expect("JSON frame"))
    }

    /// The next frame's text exactly as the relay sent it, or None when
    /// nothing comes within `wait`.
    pub async fn recv_text_within(&mut self, wait: Duration) -> Option<String> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .ok()??;
            match msg.ok()? {
                Message::Text(t) => return Some(t.as_str().to_owned()),
                Message::Close(_) => return None,
                _ => continue,
            }
        }
    }

    pub async fn recv_text(&mut self) -> String {
        self.recv_text_within(WAIT)
            .await
            .expect("no frame from the relay within the wait")
    }

    pub async fn recv(&mut self) -> Value {
        self.recv_within(WAIT)
            .await
            .expect("no frame from the relay within the wait")
    }

    /// A subscribe round trip: proves earlier frames were processed.
    pub async fn barrier(&mut self, url: &str) {
        let ns = format!("barrier-{}", uuid::Uuid::new_v4());
        self.on(&[&ns]).await;
        let mut other = WsClient::connect(url).await;
        // The relay handles one connection's frames in order, so once our
        // own `on` is in, a message from another client proves it.
        loop {
            other.emit(&[&ns], json!("ping")).await;
            if let Some(v) = self.recv_within(Duration::from_millis(200)).await {
                if v["ns"][0] == ns.as_str() {
                    return;
                }
            }
        }
    }
}

/// How a [`tamper_proxy`] changes one frame on its way: the frames to pass
/// on instead (none drops it, several inject).
pub type Rewrite = Arc<dyn Fn(Value) -> Vec<Value> + Send + Sync>;

/// A WebSocket proxy in front of the relay: its client's frames pass
/// through `up`, the relay's through `down`. What a hostile or unusual
/// client does, played by a real `p2p` behind it. Frames that are not JSON
/// pass unchanged. Returns the URL to give the client.
pub async fn tamper_proxy(relay_url: String, up: Rewrite, down: Rewrite) -> String {
    async fn pipe<S, R>(mut rx: R, mut tx: S, rewrite: Rewrite)
    where
        R: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>>
            + Unpin,
        S: futures_util::Sink<Message> + Unpin,
    {
        while let Some(Ok(m)) = rx.next().await {
            let out = match &m {
                Message::Text(t) => match serde_json::from_str::<Value>(t.as_str()) {
                    Ok(v) => rewrite(v)
                        .into_iter()
                        .map(|v| Message::Text(v.to_string().into()))
                        .collect(),
                    Err(_) => vec![m],
                },
                _ => vec![m],
            };
            for m in out {
                if tx.send(m).await.is_err() {
                    return;
                }
            }
        }
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (relay_url, up, down) = (relay_url.clone(), up.clone(), down.clone());
            tokio::spawn(async move {
                let Ok(client) = tokio_tungstenite::accept_async(tcp).await else {
                    return;
                };
                let Ok((upstream, _)) = tokio_tungstenite::connect_async(relay_url.as_str()).await
                else {
                    return;
                };
                let (c_tx, c_rx) = client.split();
                let (u_tx, u_rx) = upstream.split();
                tokio::select! {
                    () = pipe(c_rx, u_tx, up) => {},
                    () = pipe(u_rx, c_tx, down) => {},
                }
            });
        }
    });
    url
}

/// A [`Rewrite`] that passes every frame unchanged.
pub fn unchanged() -> Rewrite {
    Arc::new(|v| vec![v])
}

/// Waits until `p` has printed `needle` at least `n` times on stderr.
pub async fn wait_count(p: &Proc, needle: &str, n: usize) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while p.stderr_count(needle) < n {
        if tokio::time::Instant::now() > deadline {
            p.fail(&format!(
                "saw {needle} {} times, wanted {n}",
                p.stderr_count(needle)
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A `VmRSS:`/`VmHWM:` figure of a process, in KiB (0 once it is gone).
pub fn vm_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Runs a set-up command (`ip`, `nft`) to completion, `stdin` fed to it;
/// panics with what it printed if it fails.
pub fn run(args: &[&str], stdin: Option<&str>) {
    let mut cmd = std::process::Command::new(args[0]);
    cmd.args(&args[1..])
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e} (needs iproute2 and nftables)"));
    if let Some(text) = stdin {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Joins namespaces `a` and `b` with a veth pair (`dev_a` in `a`, `dev_b`
/// in `b`), gives each end its address on a /24, and brings both ends and
/// both loopbacks up.
pub fn veth_pair((a, dev_a, addr_a): (&str, &str, &str), (b, dev_b, addr_b): (&str, &str, &str)) {
    run(
        &[
            "ip", "link", "add", dev_a, "netns", a, "type", "veth", "peer", "name", dev_b, "netns",
            b,
        ],
        None,
    );
    for (ns, dev, addr) in [(a, dev_a, addr_a), (b, dev_b, addr_b)] {
        let cidr = format!("{addr}/24");
        run(&["ip", "-n", ns, "addr", "add", &cidr, "dev", dev], None);
        run(&["ip", "-n", ns, "link", "set", dev, "up"], None);
        run(&["ip", "-n", ns, "link", "set", "lo", "up"], None);
    }
}

/// A name for a test's network namespace, `p2p{role}-{pid}-{n}`: unique
/// per test process and call, and tied to the pid so a killed run's
/// namespaces can be found.
pub fn netns_name(role: &str) -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("p2p{role}-{}-{n}", std::process::id())
}

/// Deletes the namespaces of test runs that were killed before they could
/// clean up (named by [`netns_name`] after a pid that no longer runs).
pub fn remove_leftover_netns() {
    let Ok(out) = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
    else {
        return;
    };
    for name in String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
    {
        let mut parts = name.split('-');
        let (Some(prefix), Some(pid)) = (parts.next(), parts.next()) else {
            continue;
        };
        if !prefix.starts_with("p2p") || pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit())
        {
            continue;
        }
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", name])
                .status();
        }
    }
}

/// A self-signed certificate for `san` (e.g. `DNS:localhost,IP:127.0.0.1`),
/// made with the openssl command line: (certificate, key) in `dir`.
pub fn self_signed(dir: &std::path::Path, san: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let ok = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=p2p test server",
            "-addext",
            &format!("subjectAltName={san}"),
            "-addext",
            "basicConstraints=critical,CA:FALSE",
            "-addext",
            "extendedKeyUsage=serverAuth",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("run openssl")
        .success();
    assert!(ok, "openssl could not make a certificate");
    (cert, key)
}

/// Runs one of the page scripts of `tests/browser` (`script`, e.g.
/// `watch-page.mjs`) with node inside network namespace `netns`, and returns
/// whether it succeeded and the JSON line it printed last. Fails the test,
/// with the script's output, if it printed none or ran past `within`.
pub async fn page_script(
    netns: &str,
    script: &str,
    args: &[&str],
    within: Duration,
) -> (bool, Value) {
    page_script_in(Some(netns), script, args, within).await
}

/// `page_script`, in `netns` or (None) on this host.
pub async fn page_script_in(
    netns: Option<&str>,
    script: &str,
    args: &[&str],
    within: Duration,
) -> (bool, Value) {
    let out = run_page(netns, script, args, within).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let result = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| {
            panic!(
                "no result from {script}\nstdout:\n{stdout}\nstderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    (out.status.success(), result)
}

/// Runs page script `script` to its end, in `netns` or (None) on this
/// host; fails the test if it runs past `within`.
pub async fn run_page(
    netns: Option<&str>,
    script: &str,
    args: &[&str],
    within: Duration,
) -> std::process::Output {
    let path = format!("{}/tests/browser/{script}", env!("CARGO_MANIFEST_DIR"));
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, "node"]);
            c
        }
        None => Command::new("node"),
    };
    tokio::time::timeout(within, cmd.arg(&path).args(args).output())
        .await
        .unwrap_or_else(|_| panic!("{script} did not finish in {within:?}"))
        .expect("run node (tests/browser needs `npm ci`)")
}

/// One raw HTTP/1.1 request to an HTTP endpoint: status line and headers,
/// and body.
pub async fn http(
    url: &str,
    method: &str,
    path: &str,
    headers: &[&str],
    body: &str,
) -> (String, String) {
    let addr = url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    tokio::time::timeout(WAIT, s.read_to_string(&mut out))
        .await
        .expect("no answer")
        .unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    (head.to_owned(), body.to_owned())
}

/// Page script `script` on this host, run to its end with `args`: its
/// JSON lines on stdout. It must have succeeded (`who` names it then).
pub async fn page_lines(script: &str, args: &[&str], who: &str) -> Vec<Value> {
    let out = run_page(None, script, args, Duration::from_secs(90)).await;
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(
        out.status.success(),
        "{who} failed: {lines:?}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    lines
}
