//! corsgate as it is deployed: `--version`, `corsgate healthcheck` against ready, unready, silent
//! and absent instances, a Kubernetes ConfigMap update reaching a running gateway, and the files
//! of `deploy/` and the `Dockerfile` agreeing with the binary and with each other.
//!
//! With the `external` feature: `systemd-analyze verify` on the unit, and the kustomize base
//! rendered by `kubectl kustomize` and checked by `kubernetes-validate` (`.venv/bin`, installed
//! by `scripts/test.sh`, or `CORSGATE_KUBERNETES_VALIDATE`). Fails when they are missing.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::common::*;
use corsgate::config::{Config, Timeouts};
use corsgate::rules::RulesSource;
use http::StatusCode;

/// An origin no test request reaches: corsgate answers preflights itself.
const UNUSED_ORIGIN: &str = "http://127.0.0.1:9";

const ALLOW_A: &str = "<CORSConfiguration><CORSRule><AllowedOrigin>https://a.example</AllowedOrigin><AllowedMethod>GET</AllowedMethod></CORSRule></CORSConfiguration>";
const ALLOW_B: &str = "<CORSConfiguration><CORSRule><AllowedOrigin>https://b.example</AllowedOrigin><AllowedMethod>GET</AllowedMethod></CORSRule></CORSConfiguration>";

/// How long the gateway keeps serving after SIGTERM before it stops accepting (drain_delay's
/// default), which the stop timeouts must cover on top of shutdown_grace.
const DRAIN_DELAY: Duration = Duration::from_secs(5);

/// Where the Dockerfile installs the binary, which the image's and the pods' health checks run.
const IMAGE_BINARY: &str = "/usr/local/bin/corsgate";

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn corsgate(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_corsgate"))
        .args(args)
        .envs(env.iter().copied())
        .current_dir(manifest_dir())
        .output()
        .expect("the corsgate binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(manifest_dir().join(relative))
        .unwrap_or_else(|e| panic!("{relative}: {e}"))
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("corsgate-deploy-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// The whole-second value of `key: N` / `Key=Ns` in a deployment file.
fn seconds_after(text: &str, key: &str) -> u64 {
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with(key))
        .unwrap_or_else(|| panic!("no {key} in the file"));
    let digits: String = line[key.len()..]
        .chars()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(char::is_ascii_digit)
        .collect();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("{line}: no seconds"))
}

async fn allowed(gateway: std::net::SocketAddr, origin: &str) -> bool {
    send(
        gateway,
        "OPTIONS",
        "/k",
        &[("origin", origin), ("access-control-request-method", "GET")],
    )
    .await
    .status
        == StatusCode::OK
}

#[test]
fn version_names_the_crate_version_and_the_commit_of_a_checkout() {
    let out = corsgate(&["--version"], &[]);
    assert_eq!(out.status.code(), Some(0));
    let version = env!("CARGO_PKG_VERSION");
    let expected = if manifest_dir().join(".git").exists() {
        let git = Command::new("git")
            .args(["rev-parse", "--short", "HEAD"])
            .current_dir(manifest_dir())
            .output()
            .expect("git runs in a git checkout");
        assert!(git.status.success(), "{}", stderr(&git));
        let commit = stdout(&git).trim().to_string();
        format!("corsgate {version} ({commit})\n")
    } else {
        format!("corsgate {version}\n")
    };
    assert_eq!(stdout(&out), expected);
}

#[test]
fn healthcheck_passes_against_a_ready_gateway_and_says_so() {
    let (gateway, _) = Binary::serve(UNUSED_ORIGIN, &["--rules", "config/cors-app.xml"], &[]);
    let admin = gateway.admin().to_string();

    let out = corsgate(&["healthcheck", "--admin", &admin], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "ready\n");

    let out = corsgate(&["healthcheck", "--live", "--admin", &admin], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "live\n");
}

#[test]
fn healthcheck_of_an_absent_instance_exits_1_saying_it_cannot_connect() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port");
    let addr = closed.to_string();
    let out = corsgate(&["healthcheck", "--admin", &addr], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        format!("cannot connect to {addr}: Connection refused\n")
    );
    assert_eq!(stdout(&out), "");
}

#[test]
fn healthcheck_of_a_silent_instance_exits_1_when_its_time_is_up() {
    // Bound and listening, never accepting: the kernel completes the connection, nobody answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = silent.local_addr().expect("addr").to_string();
    let out = corsgate(
        &["healthcheck", "--admin", &addr, "--timeout", "300ms"],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        format!("no answer from {addr} within 300ms\n")
    );
}

#[test]
fn healthcheck_of_an_unready_instance_exits_1_with_its_status_and_reason() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let admin = runtime.block_on(Origin::start(Reply {
        status: StatusCode::SERVICE_UNAVAILABLE,
        body: "route[0]: rules not loaded\n".into(),
        ..Reply::default()
    }));
    // The configuration the server runs with: the check reads its [admin] table and ignores the
    // rest.
    let dir = temp_dir("unready");
    let config = dir.join("corsgate.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = [\"127.0.0.1:8080\"]\n\n[[route]]\nhosts = [\"*\"]\norigin = \"{UNUSED_ORIGIN}\"\n\n\
             [admin]\nlisten = \"{}\"\ntoken_env = \"CORSGATE_TEST_ADMIN_TOKEN\"\n",
            admin.addr
        ),
    )
    .expect("write config");
    let config = config.to_string_lossy();

    let out = corsgate(
        &["healthcheck", "--config", &config],
        &[("CORSGATE_TEST_ADMIN_TOKEN", "t0ken")],
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "not ready: 503 Service Unavailable: route[0]: rules not loaded\n"
    );

    let received = admin.received();
    assert_eq!(received.len(), 1);
    let request = &received[0];
    assert_eq!(request.method, http::Method::GET);
    assert_eq!(request.target, "/readyz");
    let header = |name: &str| request.headers.get(name).and_then(|v| v.to_str().ok());
    assert_eq!(header("host"), Some(admin.addr.to_string().as_str()));
    assert_eq!(header("authorization"), Some("Bearer t0ken"));

    // Without the variable, nothing is sent that the listener would refuse anyway.
    let out = corsgate(&["healthcheck", "--config", &config], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("admin.token_env names CORSGATE_TEST_ADMIN_TOKEN, which is not set"),
        "{}",
        stderr(&out)
    );
    assert_eq!(admin.count(), 1);
}

/// Kubernetes updates a mounted ConfigMap the way its kubelet's atomic writer does: the new
/// files in a new hidden directory, a `..data_tmp` symlink to it renamed over `..data`, the old
/// directory removed. The visible `cors.xml` is a symlink through `..data` that never changes.
#[test]
fn a_configmap_update_through_its_data_symlink_is_in_force_without_a_restart() {
    let volume = temp_dir("configmap");
    let version = |name: &str, rules: &str| {
        let dir = volume.join(name);
        std::fs::create_dir_all(&dir).expect("version dir");
        std::fs::write(dir.join("cors.xml"), rules).expect("write rules");
    };
    version("..2025_01_01_00_00_00.1", ALLOW_A);
    std::os::unix::fs::symlink("..2025_01_01_00_00_00.1", volume.join("..data")).expect("..data");
    std::os::unix::fs::symlink("..data/cors.xml", volume.join("cors.xml")).expect("cors.xml");

    let rules = volume.join("cors.xml");
    let (_gateway, addr) =
        Binary::serve(UNUSED_ORIGIN, &["--rules", &rules.to_string_lossy()], &[]);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        assert!(allowed(addr, "https://a.example").await);
        assert!(!allowed(addr, "https://b.example").await);

        version("..2025_01_01_00_01_00.2", ALLOW_B);
        std::os::unix::fs::symlink("..2025_01_01_00_01_00.2", volume.join("..data_tmp"))
            .expect("..data_tmp");
        std::fs::rename(volume.join("..data_tmp"), volume.join("..data")).expect("swap ..data");
        std::fs::remove_dir_all(volume.join("..2025_01_01_00_00_00.1")).expect("remove old");

        assert!(
            eventually(Duration::from_secs(5), || allowed(
                addr,
                "https://b.example"
            ))
            .await,
            "the swapped rules are in force"
        );
        assert!(!allowed(addr, "https://a.example").await);
    });
}

#[test]
fn the_kubernetes_configuration_loads_and_points_at_the_mounted_rules() {
    let config = Config::load(&manifest_dir().join("deploy/kubernetes/corsgate.toml"))
        .unwrap_or_else(|e| panic!("{e}"));
    let admin = config
        .admin
        .listen
        .expect("an admin listener for the probes");
    assert!(
        admin.ip().is_loopback(),
        "the probes run inside the pod: {admin}"
    );
    assert_eq!(config.routes.len(), 1);
    let RulesSource::File(rules) = &config.routes[0].rules else {
        panic!("the route's rules are a file: {:?}", config.routes[0].rules);
    };

    let deployment = read("deploy/kubernetes/deployment.yaml");
    let rules_dir = rules.parent().expect("the rules file is in a directory");
    assert!(
        deployment.contains(&format!("mountPath: {}\n", rules_dir.display())),
        "the rules ConfigMap is mounted as the directory {}",
        rules_dir.display()
    );
    assert!(deployment.contains("mountPath: /etc/corsgate/config\n"));
    let config_path = "/etc/corsgate/config/corsgate.toml";
    assert!(deployment.contains(&format!(r#"args: ["serve", "--config", "{config_path}"]"#)));
    assert!(deployment.contains(&format!(
        r#"command: ["{IMAGE_BINARY}", "healthcheck", "--config", "{config_path}"]"#
    )));
    assert!(deployment.contains(&format!(
        r#"command: ["{IMAGE_BINARY}", "healthcheck", "--live", "--config", "{config_path}"]"#
    )));

    let out = corsgate(&["check", "deploy/kubernetes/cors.xml"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).contains("0 warnings"), "{}", stdout(&out));

    let pre_stop = seconds_after(&deployment, "seconds:");
    assert_eq!(Duration::from_secs(pre_stop), DRAIN_DELAY);
    let grace = seconds_after(&deployment, "terminationGracePeriodSeconds:");
    let timeouts = config.server.timeouts;
    assert_eq!(
        timeouts.drain_delay, DRAIN_DELAY,
        "drain_delay is the preStop pause"
    );
    let needed = DRAIN_DELAY + timeouts.drain_delay + timeouts.shutdown_grace;
    assert!(
        Duration::from_secs(grace) > needed,
        "terminationGracePeriodSeconds {grace} must exceed preStop, drain_delay and shutdown_grace"
    );
}

#[test]
fn the_systemd_unit_waits_for_the_drain_and_checks_before_it_starts() {
    let unit = read("deploy/systemd/corsgate.service");
    let stop = seconds_after(&unit, "TimeoutStopSec=");
    let defaults = Timeouts::default();
    assert_eq!(defaults.drain_delay, DRAIN_DELAY);
    let needed = defaults.drain_delay + defaults.shutdown_grace;
    assert!(Duration::from_secs(stop) > needed, "TimeoutStopSec={stop}s");
    let config = "--config /etc/corsgate/corsgate.toml";
    assert!(unit.contains(&format!("\nExecStartPre={IMAGE_BINARY} check {config}\n")));
    assert!(unit.contains(&format!("\nExecStart={IMAGE_BINARY} serve {config}\n")));
}

#[test]
fn the_image_health_check_runs_the_binary_the_image_installs() {
    let dockerfile = read("Dockerfile");
    assert!(dockerfile.contains(&format!("COPY --from=build /corsgate {IMAGE_BINARY}\n")));
    assert!(dockerfile.contains(&format!(r#"ENTRYPOINT ["{IMAGE_BINARY}"]"#)));
    assert!(dockerfile.contains(&format!(
        r#"CMD ["{IMAGE_BINARY}", "healthcheck", "--config", "config/corsgate.toml"]"#
    )));
    // The image builds without .git: build.rs must be in it, or the binary has no version.
    assert!(
        dockerfile
            .lines()
            .any(|l| l.starts_with("COPY ") && l.contains(" build.rs ")),
        "build.rs is copied into the build stage"
    );
}

/// The build stage copies what `cargo build --release --locked --bin corsgate` reads, all of
/// which exists, and nothing else: the tests and benchmarks stay out of the image's build.
#[test]
fn the_image_build_copies_only_what_the_binary_is_built_from() {
    let dockerfile = read("Dockerfile");
    let build_stage = dockerfile
        .split("\nFROM ")
        .find(|stage| stage.contains(" AS build"))
        .expect("a build stage");
    let mut copied: Vec<&str> = build_stage
        .lines()
        .filter_map(|l| l.strip_prefix("COPY "))
        .flat_map(|args| {
            let words: Vec<&str> = args.split_whitespace().collect();
            words[..words.len() - 1].to_vec()
        })
        .collect();
    copied.sort_unstable();
    assert_eq!(copied, ["Cargo.lock", "Cargo.toml", "build.rs", "src"]);
    for path in copied {
        assert!(manifest_dir().join(path).exists(), "COPY {path}: missing");
    }
}

#[cfg(feature = "external")]
mod external {
    use super::*;

    fn run(mut command: Command, what: &str) -> Output {
        command.output().unwrap_or_else(|e| {
            panic!("{what} cannot run ({e}): run scripts/test.sh, which installs it")
        })
    }

    #[test]
    fn systemd_analyze_verifies_the_unit() {
        // verify insists that the Exec binaries exist: the unit is checked with the built one.
        let unit = read("deploy/systemd/corsgate.service")
            .replace(IMAGE_BINARY, env!("CARGO_BIN_EXE_corsgate"));
        let dir = temp_dir("systemd");
        let path = dir.join("corsgate.service");
        std::fs::write(&path, unit).expect("write unit");

        let mut command = Command::new("systemd-analyze");
        command.arg("verify").arg(&path);
        let out = run(command, "systemd-analyze");
        // verify exits 0 on unknown keys and bad values, only warning: those count as failures.
        let warnings: Vec<&str> = std::str::from_utf8(&out.stderr)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("corsgate.service"))
            .collect();
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(warnings.is_empty(), "{warnings:#?}");
    }

    #[test]
    fn the_kustomize_base_renders_and_validates() {
        let mut command = Command::new("kubectl");
        command
            .args(["kustomize", "deploy/kubernetes"])
            .current_dir(manifest_dir());
        let out = run(command, "kubectl");
        assert!(out.status.success(), "{}", stderr(&out));
        let rendered = stdout(&out);
        for kind in [
            "Deployment",
            "Service",
            "PodDisruptionBudget",
            "HorizontalPodAutoscaler",
        ] {
            assert_eq!(
                rendered.matches(&format!("\nkind: {kind}\n")).count(),
                1,
                "{kind}"
            );
        }
        // The configuration's name carries its hash, and the Deployment mounts that name: a change
        // rolls the pods out. The rules keep their name, to be updated in place.
        let hashed: Vec<&str> = rendered
            .lines()
            .filter_map(|l| l.trim().strip_prefix("name: corsgate-config-"))
            .collect();
        assert_eq!(hashed.len(), 2, "the ConfigMap and the volume: {hashed:?}");
        assert_eq!(hashed[0], hashed[1]);
        assert_eq!(rendered.matches("name: corsgate-rules\n").count(), 2);

        let file = temp_dir("kustomize").join("rendered.yaml");
        std::fs::write(&file, &rendered).expect("write rendered");
        let validate = std::env::var_os("CORSGATE_KUBERNETES_VALIDATE").map_or_else(
            || manifest_dir().join(".venv/bin/kubernetes-validate"),
            PathBuf::from,
        );
        assert!(
            validate.is_file(),
            "{} is missing: run scripts/test.sh (it installs kubernetes-validate into .venv/), or set CORSGATE_KUBERNETES_VALIDATE",
            validate.display()
        );
        // The oldest Kubernetes with the preStop sleep action, and the newest the validator knows.
        for version in [Some("1.30.0"), None] {
            let mut command = Command::new(&validate);
            command.arg("--strict");
            if let Some(version) = version {
                command.args(["--kubernetes-version", version]);
            }
            command.arg(&file);
            let out = run(command, "kubernetes-validate");
            assert!(
                out.status.success(),
                "{version:?}: {}{}",
                stdout(&out),
                stderr(&out)
            );
            assert_eq!(
                stdout(&out).matches(" passed for resource ").count(),
                6,
                "{}",
                stdout(&out)
            );
        }
    }
}
