//! A real ClickHouse server for the tests: the suite's (scripts/test.sh
//! starts one and sets `GATEWATCH_CLICKHOUSE_URL`), or a private one a test
//! starts, stops and starts again (outages).

use std::path::PathBuf;
use std::process::Command;

/// The script that installs, starts and stops servers (the one CI uses).
fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/services/clickhouse.sh")
}

/// A server, and a database of the test's own in it.
pub struct ClickHouse {
    pub url: String,
    pub database: String,
    /// A private server's directory (data, logs), kept across stop and start.
    private: Option<(tempfile::TempDir, u16)>,
}

fn fresh_database() -> String {
    let n = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_nanos();
    format!("gwtest_{}_{}", std::process::id(), n % 1_000_000_000_000)
}

impl ClickHouse {
    /// The suite's server, or a private one when the tests run without it
    /// (`cargo test` by hand with ClickHouse installed).
    pub fn shared() -> ClickHouse {
        match std::env::var("GATEWATCH_CLICKHOUSE_URL") {
            Ok(url) if !url.is_empty() => ClickHouse { url, database: fresh_database(), private: None },
            _ => ClickHouse::private(),
        }
    }

    /// A server of this test's own.
    pub fn private() -> ClickHouse {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = super::free_port();
        let mut ch = ClickHouse {
            url: format!("http://127.0.0.1:{port}"),
            database: fresh_database(),
            private: Some((dir, port)),
        };
        ch.start();
        ch
    }

    /// Starts the private server (again, on the same port and data).
    pub fn start(&mut self) {
        let (dir, port) = self.private.as_ref().expect("a private server");
        let out = Command::new("bash")
            .arg(script())
            .arg("start")
            .arg(dir.path())
            .arg(port.to_string())
            .output()
            .expect("bash");
        assert!(
            out.status.success(),
            "clickhouse-server is installed (scripts/services/clickhouse.sh) and starts: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Stops the private server (an outage).
    pub fn stop(&mut self) {
        let (dir, _) = self.private.as_ref().expect("a private server");
        let status = Command::new("bash").arg(script()).arg("stop").arg(dir.path()).status().expect("bash");
        assert!(status.success());
    }

    /// Runs `sql`; the body of a 200 answer, trimmed (panics otherwise).
    pub fn sql(&self, sql: &str) -> String {
        let (code, body) = self.try_sql(sql);
        assert_eq!(code, 200, "{sql}: {body}");
        body.trim().to_string()
    }

    /// Runs `sql`: (status, body); status 0 when nothing answered.
    pub fn try_sql(&self, sql: &str) -> (u16, String) {
        let addr = self.url.trim_start_matches("http://");
        if std::net::TcpStream::connect(addr).is_err() {
            return (0, String::new());
        }
        let (code, headers, body) = super::http(addr, "POST", "/", &[], sql);
        let chunked = headers.iter().any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
        (code, if chunked { dechunk(&body) } else { body })
    }

    /// A number `sql` answers.
    pub fn count(&self, sql: &str) -> u64 {
        let v = self.sql(sql);
        v.parse().unwrap_or_else(|_| panic!("{sql}: not a number: {v}"))
    }

    /// A `[[sinks]]` entry writing to this server's database.
    pub fn sink_toml(&self, extra: &str) -> String {
        format!("[[sinks]]\ntype = \"clickhouse\"\nurl = \"{}\"\ndatabase = \"{}\"\n{extra}\n", self.url, self.database)
    }
}

/// The body of a chunked HTTP/1.1 answer.
fn dechunk(raw: &str) -> String {
    let mut out = String::new();
    let mut rest = raw;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16).unwrap_or(0);
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].strip_prefix("\r\n").unwrap_or(&after[n..]);
    }
    out
}

impl Drop for ClickHouse {
    fn drop(&mut self) {
        if self.private.is_some() {
            self.stop();
        } else {
            let _ = self.try_sql(&format!("DROP DATABASE IF EXISTS {}", self.database));
        }
    }
}
