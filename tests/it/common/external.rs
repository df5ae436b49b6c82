//! Outside programs the `external` tests drive: moto's S3 server, s3cmd, nginx.

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

/// An executable of the repo-local virtualenv, or the one the environment variable `var`
/// names; fails the test when it is missing.
pub fn venv_program(var: &str, name: &str) -> PathBuf {
    let path = std::env::var_os(var).map_or_else(
        || {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join(".venv/bin")
                .join(name)
        },
        PathBuf::from,
    );
    assert!(
        path.is_file(),
        "{} is missing: run scripts/test.sh (it installs moto[server] and s3cmd into .venv/), or set {var}",
        path.display()
    );
    path
}

/// A loopback port nothing listens on now (bound, then released): for a program that must
/// be told its port, or a configuration two processes share, which port 0 cannot express.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("an ephemeral loopback port")
        .port()
}

/// A fresh directory of its own under the tests' temp directory.
pub fn scratch_dir(what: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir()
        .join(format!("corsgate-tests-{}", std::process::id()))
        .join(format!("{what}-{}", N.fetch_add(1, Ordering::Relaxed)));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// Waits until `addr` accepts connections; fails the test, with what the program said in
/// `log`, if it exits first or takes longer than `within`.
fn wait_listening(child: &mut Child, addr: SocketAddr, what: &str, log: &Path, within: Duration) {
    let deadline = Instant::now() + within;
    while std::net::TcpStream::connect(addr).is_err() {
        let said = || std::fs::read_to_string(log).unwrap_or_default();
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "{what} exited ({status}) before listening on {addr}:\n{}",
                said()
            );
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not listen on {addr} within {within:?}:\n{}",
            said()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A child process killed (and reaped) when dropped, however the test ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// moto's S3 server on an ephemeral loopback port, stopped when dropped.
pub struct Moto {
    child: Killed,
    pub addr: SocketAddr,
}

impl Moto {
    pub fn start() -> Moto {
        Moto::start_with_env(&[])
    }

    /// moto with these environment variables besides (its switches are variables).
    pub fn start_with_env(env: &[(&str, &str)]) -> Moto {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let log = scratch_dir("moto").join("moto.log");
        let out = std::fs::File::create(&log).expect("moto log file");
        let child = Command::new(venv_program("CORSGATE_MOTO_SERVER", "moto_server"))
            .args(["-H", "127.0.0.1", "-p", &addr.port().to_string()])
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .expect("start moto_server");
        let mut moto = Moto {
            child: Killed(child),
            addr,
        };
        wait_listening(
            &mut moto.child.0,
            addr,
            "moto_server",
            &log,
            Duration::from_secs(30),
        );
        moto
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// s3cmd, configured for one endpoint, path-style, SigV4, moto's test keys.
pub struct S3cmd {
    config: PathBuf,
}

impl S3cmd {
    pub fn new(endpoint: SocketAddr) -> S3cmd {
        let config = scratch_dir("s3cmd").join("s3cfg");
        // `host_bucket` without `%(bucket)s`: path-style requests.
        std::fs::write(
            &config,
            format!(
                "[default]\naccess_key = testing\nsecret_key = testing\nhost_base = {endpoint}\n\
                 host_bucket = {endpoint}\nuse_https = False\nsignature_v2 = False\n\
                 bucket_location = us-east-1\n"
            ),
        )
        .expect("write s3cmd config");
        S3cmd { config }
    }

    /// Runs `s3cmd ARGS`; returns whether it succeeded and what it said.
    pub fn run(&self, args: &[&str]) -> (bool, String) {
        let output = Command::new(venv_program("CORSGATE_S3CMD", "s3cmd"))
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .output()
            .expect("run s3cmd");
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        (output.status.success(), said)
    }

    pub fn ok(&self, args: &[&str]) {
        let (ok, said) = self.run(args);
        assert!(ok, "s3cmd {args:?} failed:\n{said}");
    }

    pub fn setcors(&self, xml: &str, bucket: &str) -> (bool, String) {
        let file = super::rules_file(xml);
        self.run(&[
            "setcors",
            &file.to_string_lossy(),
            &format!("s3://{bucket}"),
        ])
    }
}

/// The nginx of the Debian package, or the one `CORSGATE_NGINX` names.
fn nginx_program() -> PathBuf {
    let path = std::env::var_os("CORSGATE_NGINX")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
                .map(|dir| dir.join("nginx"))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| PathBuf::from("/usr/sbin/nginx"));
    assert!(
        path.is_file(),
        "{} is missing: run scripts/test.sh (it installs nginx-light), or set CORSGATE_NGINX",
        path.display()
    );
    path
}

/// nginx as a round-robin HTTP load balancer on an ephemeral loopback port, in a prefix
/// directory of its own, stopped when dropped.
///
/// One process (`master_process off`): killing it leaves no orphaned worker behind. Each
/// request goes to the next upstream and is never retried on another, and the `Host` the
/// client signed reaches the upstream unchanged.
pub struct Nginx {
    child: Killed,
    pub addr: SocketAddr,
    dir: PathBuf,
}

/// One line of nginx's access log: a request it proxied.
#[derive(Clone, Debug)]
pub struct Proxied {
    /// When nginx read the request's first bytes.
    pub arrived: SystemTime,
    /// When nginx had sent the whole answer.
    pub answered: SystemTime,
    pub status: u16,
    /// The upstream that answered, as nginx names it (`127.0.0.1:PORT`).
    pub upstream: String,
    pub method: String,
    /// Path and query as the client sent them.
    pub target: String,
}

impl Nginx {
    pub fn round_robin(upstreams: &[SocketAddr]) -> Nginx {
        let dir = scratch_dir("nginx");
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let d = dir.display();
        let servers: String = upstreams
            .iter()
            .map(|u| format!("        server {u};\n"))
            .collect();
        let conf = format!(
            "daemon off;\n\
             master_process off;\n\
             pid {d}/nginx.pid;\n\
             error_log stderr;\n\
             events {{ worker_connections 256; }}\n\
             http {{\n\
             \x20   log_format timing '$msec $request_time $status $upstream_addr $request_method $request_uri';\n\
             \x20   access_log {d}/access.log timing;\n\
             \x20   client_body_temp_path {d}/client_body;\n\
             \x20   proxy_temp_path {d}/proxy;\n\
             \x20   fastcgi_temp_path {d}/fastcgi;\n\
             \x20   uwsgi_temp_path {d}/uwsgi;\n\
             \x20   scgi_temp_path {d}/scgi;\n\
             \x20   upstream replicas {{\n{servers}    }}\n\
             \x20   server {{\n\
             \x20       listen {addr};\n\
             \x20       location / {{\n\
             \x20           proxy_pass http://replicas;\n\
             \x20           proxy_set_header Host $http_host;\n\
             \x20           proxy_next_upstream off;\n\
             \x20       }}\n\
             \x20   }}\n\
             }}\n"
        );
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, conf).expect("write nginx.conf");
        let log = dir.join("stderr.log");
        let out = std::fs::File::create(&log).expect("nginx log file");
        let child = Command::new(nginx_program())
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(&conf_path)
            // Before reading its configuration nginx opens its compiled-in error log.
            .args(["-e", "stderr"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .expect("start nginx");
        let mut nginx = Nginx {
            child: Killed(child),
            addr,
            dir,
        };
        wait_listening(
            &mut nginx.child.0,
            addr,
            "nginx",
            &log,
            Duration::from_secs(10),
        );
        nginx
    }

    /// Every request proxied so far (a line nginx has not finished writing is left out).
    pub fn access_log(&self) -> Vec<Proxied> {
        let mut text = String::new();
        if let Ok(mut file) = std::fs::File::open(self.dir.join("access.log")) {
            let _ = file.read_to_string(&mut text);
        }
        text.lines().filter_map(parse_access_line).collect()
    }
}

/// `$msec $request_time $status $upstream_addr $request_method $request_uri`.
fn parse_access_line(line: &str) -> Option<Proxied> {
    let mut fields = line.splitn(6, ' ');
    let answered = std::time::UNIX_EPOCH + seconds(fields.next()?)?;
    let took = seconds(fields.next()?)?;
    Some(Proxied {
        arrived: answered.checked_sub(took)?,
        answered,
        status: fields.next()?.parse().ok()?,
        upstream: fields.next()?.to_string(),
        method: fields.next()?.to_string(),
        target: fields.next()?.to_string(),
    })
}

/// nginx's `SECONDS.MILLIS`.
fn seconds(text: &str) -> Option<Duration> {
    let (secs, millis) = text.split_once('.')?;
    Some(Duration::from_secs(secs.parse().ok()?) + Duration::from_millis(millis.parse().ok()?))
}
