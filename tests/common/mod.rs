//! Helpers shared by the tests that talk HTTP to a running `gatewatch run`.

#![allow(dead_code)]

pub mod clickhouse;
pub mod labelled;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// One HTTP/1.1 request over a fresh connection: status, lower-cased headers, body.
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, Vec<(String, String)>, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: gatewatch\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() {
        req.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).expect("send");
    let mut raw = String::new();
    let _ = s.read_to_string(&mut raw);
    parse_response(&raw)
}

/// Polls until `f` holds, up to a generous bound (never a timing assertion).
pub fn until(what: &str, f: impl Fn() -> bool) -> Duration {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(20) {
        if f() {
            return started.elapsed();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} did not happen");
}

/// A pipeline in `dir` that extends the default one and keeps its state in `dir/state`.
pub fn live_pipeline(dir: &std::path::Path) -> std::path::PathBuf {
    let pipeline = dir.join("live.toml");
    std::fs::write(
        &pipeline,
        format!(
            "extends = \"{}\"\n[state]\ndir = \"state\"\n",
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/default.toml").display()
        ),
    )
    .expect("pipeline");
    pipeline
}

/// A temporary directory with a live pipeline and an empty followed log: (dir, pipeline, log).
pub fn live_setup() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let pipeline = live_pipeline(dir.path());
    let input = dir.path().join("access.log");
    std::fs::write(&input, "").expect("input");
    (dir, pipeline, input)
}

/// Runs a `gatewatch` command to completion; returns its trimmed stdout.
pub fn gatewatch(pipeline: &std::path::Path, args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gatewatch"))
        .arg("--pipeline")
        .arg(pipeline)
        .args(args)
        .output()
        .expect("runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8").trim().to_string()
}

/// Starts `gatewatch run` on a free loopback port; returns the child and the
/// address it announced. Its stderr keeps being echoed so it never blocks.
pub fn start_run(pipeline: &std::path::Path, input: &std::path::Path) -> (std::process::Child, String) {
    start_run_with(pipeline, input, None)
}

/// [`start_run`], with the process's open-file limit (soft and hard) set to
/// `open_files` when given.
pub fn start_run_with(
    pipeline: &std::path::Path,
    input: &std::path::Path,
    open_files: Option<u64>,
) -> (std::process::Child, String) {
    start_run_env(pipeline, input, open_files, &[])
}

/// [`start_run_with`], with `env` added to the process's environment.
pub fn start_run_env(
    pipeline: &std::path::Path,
    input: &std::path::Path,
    open_files: Option<u64>,
    env: &[(&str, &std::ffi::OsStr)],
) -> (std::process::Child, String) {
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_gatewatch"));
    cmd.envs(env.iter().copied());
    cmd.arg("--pipeline")
        .arg(pipeline)
        .args(["run", "--listen", "127.0.0.1:0", "--input"])
        .arg(input)
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null());
    if let Some(n) = open_files {
        // SAFETY: only setrlimit runs between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                let l = libc::rlimit { rlim_cur: n as libc::rlim_t, rlim_max: n as libc::rlim_t };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &l) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    spawn_run(&mut cmd)
}

/// Starts a `gatewatch run` command whose stderr is piped; returns the child
/// and the address it serves on, and forwards the rest of its stderr.
pub fn spawn_run(cmd: &mut std::process::Command) -> (std::process::Child, String) {
    use std::io::{BufRead, BufReader};
    let mut child = cmd.spawn().expect("gatewatch run starts");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let addr = loop {
        let line = lines.next().expect("gatewatch says where it listens").expect("utf-8");
        eprintln!("[gatewatch] {line}");
        // "serving decisions on http://ADDR", or for `--role engine`
        // "serving metrics and health checks on http://ADDR (...)".
        if line.starts_with("gatewatch: ")
            && let Some(addr) = line.split(" on http://").nth(1).and_then(|r| r.split_whitespace().next())
        {
            break addr.to_string();
        }
    };
    std::thread::spawn(move || lines.map_while(Result::ok).for_each(|l| eprintln!("[gatewatch] {l}")));
    (child, addr)
}

/// `n` failed password logins for different accounts from `ip`, stamped now.
pub fn stuffing_lines(ip: &str, n: usize) -> String {
    stuffing_lines_at(ip, n, 0)
}

/// [`stuffing_lines`] stamped `offset_ms` from now (a gateway whose clock is off).
pub fn stuffing_lines_at(ip: &str, n: usize, offset_ms: i64) -> String {
    (0..n)
        .map(|i| {
            let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis() as i64
                + offset_ms;
            format!(
                r#"{{"ts":"{}","client_ip":"{ip}","method":"POST","path":"/oauth/token","status":401,"grant_type":"password","auth_result":"invalid_credentials","user_id":"leaked{i}@example.com","api_key_id":"mobile-android"}}"#,
                gatewatch::event::time::format_rfc3339(ms)
            ) + "\n"
        })
        .collect()
}

/// A log line of `ip` opening the sign-in form in `session`, stamped now:
/// once the engine has read it, the session counts as one (`gatewatch::sessions`).
pub fn form_opened_line(ip: &str, session: &str) -> String {
    let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis() as i64;
    format!(
        r#"{{"ts":"{}","client_ip":"{ip}","method":"GET","path":"/login","status":200,"session_id":"{session}"}}"#,
        gatewatch::event::time::format_rfc3339(ms)
    ) + "\n"
}

pub struct Server {
    pub child: std::process::Child,
    pub addr: String,
    pub key: String,
}

pub fn create_key(pipeline: &std::path::Path, role: &str, name: &str) -> String {
    gatewatch(pipeline, &["keys", "create", "--role", role, "--name", name])
}

impl Server {
    pub fn start(pipeline: &std::path::Path, input: &std::path::Path, key: &str) -> Server {
        let (child, addr) = start_run(pipeline, input);
        Server { child, addr, key: key.to_string() }
    }

    pub fn get(&self, path: &str, headers: &[(&str, &str)]) -> (u16, Vec<(String, String)>, String) {
        let mut all = vec![("X-Api-Key", self.key.as_str())];
        all.extend_from_slice(headers);
        self.get_raw(path, &all)
    }

    pub fn get_raw(&self, path: &str, headers: &[(&str, &str)]) -> (u16, Vec<(String, String)>, String) {
        self.request("GET", path, headers, "")
    }

    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (u16, Vec<(String, String)>, String) {
        http(&self.addr, method, path, headers, body)
    }

    pub fn json(&self, path: &str) -> (u16, serde_json::Value) {
        let (status, _, body) = self.get(path, &[]);
        (status, serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: body is not JSON ({e}): {body}")))
    }

    pub fn signal(&mut self, sig: &str) -> std::process::ExitStatus {
        let ok = std::process::Command::new("kill").arg(sig).arg(self.child.id().to_string()).status().expect("kill");
        assert!(ok.success());
        self.child.wait().expect("wait")
    }

    /// One sample of `/metrics`, named as exposed (labels included:
    /// `gatewatch_sink_up{sink="parquet"}`).
    pub fn metric(&self, name: &str) -> f64 {
        let (_, _, body) = self.get("/metrics", &[]);
        body.lines()
            .find(|l| l.split(' ').next() == Some(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} not in /metrics:\n{body}"))
    }

    /// Polls until `f` holds, up to a generous bound (never a timing assertion).
    pub fn until(&self, what: &str, f: impl Fn(&Server) -> bool) -> std::time::Duration {
        until(what, || f(self))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The README's fenced block in language `lang` that contains `marker`: the
/// gateway tests run the configuration the README shows, not a copy of it.
pub fn readme_block(lang: &str, marker: &str) -> String {
    let readme =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).expect("README.md");
    let fence = format!("```{lang}\n");
    let mut rest = readme.as_str();
    while let Some(start) = rest.find(&fence) {
        let body = &rest[start + fence.len()..];
        let end = body.find("\n```").expect("a closed block");
        let block = &body[..end + 1];
        if block.contains(marker) {
            return block.to_string();
        }
        rest = &body[end..];
    }
    panic!("README.md has no ```{lang} block containing {marker:?}");
}

/// Replaces `from` by `to` in `text`, which must contain it (a README edit
/// that drops it must fail the test, not silently change what runs).
pub fn subst(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "the README block no longer contains {from:?}:\n{text}");
    text.replace(from, to)
}

/// A connection to `addr` from the loopback address `from` (127.0.0.x), so
/// that a test can play several clients, each with its own address.
pub fn connect_from(from: &str, addr: &str) -> std::io::Result<TcpStream> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_io().build()?;
    let (from, addr) = (format!("{from}:0"), addr.to_string());
    let s = rt.block_on(async move {
        let sock = tokio::net::TcpSocket::new_v4()?;
        sock.bind(from.parse().map_err(std::io::Error::other)?)?;
        sock.connect(addr.parse().map_err(std::io::Error::other)?).await
    })?;
    let s = s.into_std()?;
    s.set_nonblocking(false)?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    Ok(s)
}

/// `GET path` from the loopback address `from`: status, lower-cased headers,
/// body; status 0 when the server closed the connection without an answer.
pub fn get_from(from: &str, addr: &str, path: &str, headers: &[(&str, &str)]) -> (u16, Vec<(String, String)>, String) {
    request_from(from, addr, "GET", path, headers, "")
}

/// Any request from the loopback address `from` (see [`get_from`]).
pub fn request_from(
    from: &str,
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, Vec<(String, String)>, String) {
    let Ok(mut s) = connect_from(from, addr) else { return (0, Vec::new(), String::new()) };
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method != "GET" {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    req.push_str(body);
    if s.write_all(req.as_bytes()).is_err() {
        return (0, Vec::new(), String::new());
    }
    let mut raw = String::new();
    let _ = s.read_to_string(&mut raw);
    parse_response(&raw)
}

fn parse_response(raw: &str) -> (u16, Vec<(String, String)>, String) {
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((raw, ""));
    let mut lines = head.lines();
    let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|c| c.parse().ok()).unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, body.to_string())
}

/// A free loopback port (bound, then released).
pub fn free_port() -> u16 {
    free_ports::<1>()[0]
}

/// `N` distinct free loopback ports: all are held until the last is bound, so
/// two calls cannot hand out the same released port.
pub fn free_ports<const N: usize>() -> [u16; N] {
    let held: Vec<_> = (0..N).map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind")).collect();
    std::array::from_fn(|i| held[i].local_addr().expect("addr").port())
}

/// A child process killed when the test ends, however it ends.
pub struct Proc(pub std::process::Child);

impl Proc {
    /// Starts `cmd` with its stderr in `log` (stdout discarded); `what` says
    /// what to install when it cannot start.
    pub fn spawn(cmd: &mut std::process::Command, log: &std::path::Path, what: &str) -> Proc {
        let err = std::fs::File::create(log).expect("log");
        Proc(cmd.stdout(std::process::Stdio::null()).stderr(err).spawn().expect(what))
    }

    /// Waits until the process accepts connections on `addr`. A process that
    /// exits first, or never listens, fails the test with what it wrote to
    /// `log`, so a gateway that refuses its configuration or its port says why.
    pub fn until_listening(&mut self, addr: &str, log: &std::path::Path) {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(30) {
            if TcpStream::connect(addr).is_ok() {
                return;
            }
            if let Ok(Some(status)) = self.0.try_wait() {
                panic!("exited ({status}) before listening on {addr}:\n{}", read_log(log));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("not listening on {addr} after 30 s:\n{}", read_log(log));
    }
}

fn read_log(log: &std::path::Path) -> String {
    std::fs::read_to_string(log).unwrap_or_else(|e| format!("({}: {e})", log.display()))
}

/// `gatewatch run` with a gateway key named `gateway` (the server's) and an
/// admin key, once it is ready: (server, admin key).
pub fn serve_with_keys(pipeline: &std::path::Path, input: &std::path::Path, gateway: &str) -> (Server, String) {
    let key = create_key(pipeline, "gateway", gateway);
    let admin = create_key(pipeline, "admin", "ops");
    let server = Server::start(pipeline, input, &key);
    server.until("ready", |s| s.json("/readyz").0 == 200);
    (server, admin)
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
