//! The real `corsgate` binary as a child process: started, followed through its log, signalled
//! and inspected through /proc, killed when the test ends however it ends.

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::eventually;

/// The real `corsgate` binary, killed when the test ends however it ends.
pub struct Binary(pub Child, pub BinaryInfo);

/// What the binary said about itself.
#[derive(Clone, Debug, Default)]
pub struct BinaryInfo {
    /// The admin listener (the harness asks for an ephemeral port unless the test names one).
    pub admin: Option<SocketAddr>,
    /// Every log line so far.
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Binary {
    /// Runs `corsgate ARGS` in `dir` and waits until it says where it listens.
    pub fn start(args: &[&str], dir: &str) -> (Binary, SocketAddr) {
        Binary::start_with_env(args, dir, &[])
    }

    /// `corsgate serve --listen 127.0.0.1:0 --origin ORIGIN ARGS` in the crate's directory, with
    /// extra environment variables: the gateway most tests run.
    pub fn serve(origin: &str, args: &[&str], env: &[(&str, &str)]) -> (Binary, SocketAddr) {
        let mut all = vec!["serve", "--listen", "127.0.0.1:0", "--origin", origin];
        all.extend_from_slice(args);
        Binary::start_with_env(&all, env!("CARGO_MANIFEST_DIR"), env)
    }

    /// Like [`Binary::start`], with extra environment variables.
    pub fn start_with_env(args: &[&str], dir: &str, env: &[(&str, &str)]) -> (Binary, SocketAddr) {
        let mut command = Binary::command(args, dir);
        command.envs(env.iter().copied());
        Binary::follow(command)
    }

    /// `corsgate ARGS` in the crate's directory with its descriptor limit (soft and hard) set to
    /// `nofile` before it starts, as `ulimit -n` would; waits until it says where it listens.
    pub fn start_with_nofile(args: &[&str], nofile: u64) -> (Binary, SocketAddr) {
        let mut command = Binary::command(args, env!("CARGO_MANIFEST_DIR"));
        let limit = libc::rlimit {
            rlim_cur: nofile,
            rlim_max: nofile,
        };
        // SAFETY: between fork and exec only setrlimit runs, which is async-signal-safe and
        // reads a struct copied into the closure.
        unsafe {
            command.pre_exec(move || {
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
        Binary::follow(command)
    }

    /// `corsgate ARGS` in `dir`, logging at `info` to a pipe.
    fn command(args: &[&str], dir: &str) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_corsgate"));
        command.args(args);
        // Parallel tests must not fight over the default admin port.
        if args.first() == Some(&"serve") && !args.contains(&"--admin") {
            command.args(["--admin", "127.0.0.1:0"]);
        }
        command
            .current_dir(dir)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        command
    }

    /// Starts `command` and reads its log until it says where it listens, then keeps reading it
    /// so the gateway never blocks on a full pipe.
    fn follow(mut command: Command) -> (Binary, SocketAddr) {
        use std::io::{BufRead, BufReader};
        let mut child = command.spawn().expect("start the corsgate binary");
        let stderr = child.stderr.take().expect("piped stderr");
        let mut info = BinaryInfo::default();
        let mut lines = BufReader::new(stderr).lines();
        let addr = loop {
            let line = lines
                .next()
                .expect("corsgate says where it listens before exiting")
                .expect("readable stderr");
            info.log.lock().expect("log").push(line.clone());
            if let Some(rest) = line.split("admin listening on http://").nth(1) {
                info.admin = Some(rest.trim().parse().expect("admin address"));
            }
            let rest = line.split("corsgate listening on ").nth(1);
            if let Some(addr) = rest.and_then(|r| r.split("://").nth(1)) {
                break addr.trim().parse().expect("listen address");
            }
        };
        let log = Arc::clone(&info.log);
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                log.lock().expect("log").push(line);
            }
        });
        (Binary(child, info), addr)
    }

    pub fn admin(&self) -> SocketAddr {
        self.1.admin.expect("the binary runs an admin listener")
    }

    /// The log lines so far that contain `needle`.
    pub fn log_lines(&self, needle: &str) -> Vec<String> {
        self.1
            .log
            .lock()
            .expect("log")
            .iter()
            .filter(|l| l.contains(needle))
            .cloned()
            .collect()
    }

    /// Sends `SIGHUP`: reload.
    pub fn hangup(&self) {
        self.signal(libc::SIGHUP);
    }

    /// Sends `SIGTERM`: drain, then stop.
    pub fn terminate(&self) {
        self.signal(libc::SIGTERM);
    }

    fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.0.id()).expect("pid fits pid_t");
        // SAFETY: kill(2) only reads its arguments; the pid is our own child's.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(rc, 0, "kill -{signal} {pid}");
    }

    /// How the binary ended, if it has (without waiting).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.0.try_wait().expect("wait for corsgate")
    }

    /// Waits up to `within` for the binary to end on its own; how it ended, if it did.
    pub async fn exits(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Waits up to `within` for a log line containing `needle`.
    pub async fn logged(&self, needle: &str, within: Duration) -> bool {
        eventually(within, || async { !self.log_lines(needle).is_empty() }).await
    }

    /// Descriptors the binary has open now.
    pub fn open_descriptors(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.0.id()))
            .expect("the binary's /proc entry")
            .count()
    }

    /// CPU time the binary has used so far (user and system).
    pub fn cpu_time(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.0.id()))
            .expect("the binary's /proc stat");
        // Fields after the command name (which may hold spaces) start at the state, field 3;
        // utime and stime are fields 14 and 15, in clock ticks.
        let after_name = &stat[stat.rfind(')').expect("stat has a command name") + 2..];
        let fields: Vec<u64> = after_name
            .split(' ')
            .skip(11)
            .take(2)
            .map(|f| f.parse().expect("tick count"))
            .collect();
        // SAFETY: sysconf only reads a configuration value.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        let ticks = u64::try_from(ticks).expect("clock ticks per second");
        Duration::from_millis((fields[0] + fields[1]) * 1000 / ticks)
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// How a `corsgate` run that was expected to stop on its own ended.
#[derive(Debug)]
pub struct Exited {
    /// `None` when a signal ended it.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `corsgate ARGS` in the crate's directory with these extra environment variables (and
/// without those in `unset`) and waits up to `within` for it to exit; `None` if it was still
/// running then (it is killed).
pub fn run_to_exit(
    args: &[&str],
    env: &[(&str, &str)],
    unset: &[&str],
    within: Duration,
) -> Option<Exited> {
    use std::io::Read;
    let mut command = Command::new(env!("CARGO_BIN_EXE_corsgate"));
    command
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for name in unset {
        command.env_remove(name);
    }
    let mut child = command.spawn().expect("start the corsgate binary");
    // Both pipes drained as they fill, so the process never blocks on a full one.
    fn drain(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    }
    let stdout = drain(child.stdout.take().expect("piped stdout"));
    let stderr = drain(child.stderr.take().expect("piped stderr"));
    let deadline = std::time::Instant::now() + within;
    let status = loop {
        match child.try_wait().expect("wait for corsgate") {
            Some(status) => break Some(status),
            None if std::time::Instant::now() >= deadline => break None,
            None => std::thread::sleep(Duration::from_millis(25)),
        }
    };
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        return None;
    };
    Some(Exited {
        code: status.code(),
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    })
}
