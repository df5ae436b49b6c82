//! A fleet of corsgate replicas behind a round-robin load balancer (nginx), all serving one
//! bucket's rules from a real S3-compatible server (moto's): `s3cmd setcors` through the load
//! balancer reaches one replica, which refetches at once (write-through); every replica answers
//! by the new document at most `poll × 1.1` + a fetch after it was stored, and none ever answers
//! by the old one again.
//!
//! The measured convergence times are printed on lines starting `replicas:` (run with
//! `--nocapture` to see them).
//!
//! Needs `.venv/bin/moto_server`, `.venv/bin/s3cmd` and nginx (`scripts/test.sh` installs them),
//! or `CORSGATE_MOTO_SERVER` / `CORSGATE_S3CMD` / `CORSGATE_NGINX` naming other executables.
//! Fails when they are missing.
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use crate::common::*;
use http::StatusCode;
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

const BUCKET: &str = "fleet";
const REPLICAS: usize = 3;
const POLL: Duration = Duration::from_secs(2);
/// The poller waits between `MIN_JITTER × poll` and `MAX_JITTER × poll` (uniformly drawn, each
/// time: `rules::bucket::jitter`), so replicas started together never fetch in step.
const MIN_JITTER: f64 = 0.9;
const MAX_JITTER: f64 = 1.1;
/// The fetch that reads the new document (and the one in flight when it was stored), plus the
/// sampling below, on a machine shared with other builds.
const FETCH_ALLOWANCE: Duration = Duration::from_millis(800);
/// How often each replica is asked.
const SAMPLE_EVERY: Duration = Duration::from_millis(50);

const ORIGIN_A: &str = "https://a.example";
const ORIGIN_B: &str = "https://b.example";
const DOC_A: &str = "<CORSConfiguration><CORSRule><AllowedOrigin>https://a.example</AllowedOrigin><AllowedMethod>GET</AllowedMethod></CORSRule></CORSConfiguration>";
const DOC_B: &str = "<CORSConfiguration><CORSRule><AllowedOrigin>https://b.example</AllowedOrigin><AllowedMethod>GET</AllowedMethod><AllowedMethod>PUT</AllowedMethod></CORSRule></CORSConfiguration>";
const NOT_ALLOWED: &str = "CORSResponse: This CORS request is not allowed.";

/// A replica answers by the new document at most this long after it was stored.
fn convergence_bound() -> Duration {
    POLL.mul_f64(MAX_JITTER) + FETCH_ALLOWANCE
}

/// Which document a preflight answer was decided by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Doc {
    A,
    B,
}

/// One preflight answer of one replica.
#[derive(Clone, Copy, Debug)]
struct Observation {
    sent: SystemTime,
    received: SystemTime,
    doc: Doc,
}

/// What one replica was seen doing while the fleet converged.
#[derive(Debug, Default)]
struct Samples {
    /// In the order they were asked: one after the other, on fresh connections.
    answers: Vec<Observation>,
    /// Each successful load of the bucket's rules (`loaded_at` of `GET /-/rules`), in order.
    loads: Vec<SystemTime>,
    /// Answers that were by neither document.
    odd: Vec<String>,
}

/// The route's rules as the replica's admin listener shows them.
#[derive(Debug)]
struct RulesView {
    generation: u64,
    loaded_at: SystemTime,
    changed_at: SystemTime,
}

/// One corsgate process, the real binary, with a configuration file of its own.
struct Replica {
    binary: Binary,
    addr: SocketAddr,
}

impl Replica {
    fn start(origin: &str) -> Replica {
        let config = replica_config(origin);
        let (binary, addr) = Binary::start_with_env(
            &[
                "serve",
                "--config",
                &config.to_string_lossy(),
                "--listen",
                "127.0.0.1:0",
            ],
            env!("CARGO_MANIFEST_DIR"),
            &[
                ("AWS_ACCESS_KEY_ID", "testing"),
                ("AWS_SECRET_ACCESS_KEY", "testing"),
            ],
        );
        Replica { binary, addr }
    }

    fn admin(&self) -> SocketAddr {
        self.binary.admin()
    }
}

fn replica_config(origin: &str) -> PathBuf {
    let path = scratch_dir("replica").join("corsgate.toml");
    let poll = humantime::format_duration(POLL);
    std::fs::write(
        &path,
        format!(
            "[server]\n\
             listen = [\"127.0.0.1:0\"]\n\
             \n\
             [[route]]\n\
             hosts = [\"*\"]\n\
             origin = \"{origin}\"\n\
             rules = {{ bucket = \"{BUCKET}\", poll = \"{poll}\" }}\n\
             # s3cmd signs the Host it sends to the load balancer: moto must see that one.\n\
             preserve_host = true\n"
        ),
    )
    .expect("write the replica's configuration");
    path
}

/// Everything the test started; each process is stopped when this is dropped, the test
/// passing or not.
struct Fleet {
    // Dropped in this order: the front first.
    balancer: Nginx,
    replicas: Vec<Replica>,
    moto: Moto,
}

impl Fleet {
    /// moto with the bucket holding document A, the replicas (each has loaded A when it starts
    /// listening), nginx in front of them.
    fn start() -> Fleet {
        let moto = Moto::start();
        let direct = S3cmd::new(moto.addr);
        direct.ok(&["mb", &format!("s3://{BUCKET}")]);
        let (ok, said) = direct.setcors(DOC_A, BUCKET);
        assert!(ok, "setcors A on moto:\n{said}");
        let replicas: Vec<Replica> = (0..REPLICAS).map(|_| Replica::start(&moto.url())).collect();
        let upstreams: Vec<SocketAddr> = replicas.iter().map(|r| r.addr).collect();
        let balancer = Nginx::round_robin(&upstreams);
        Fleet {
            balancer,
            replicas,
            moto,
        }
    }

    fn replica_at(&self, upstream: &str) -> Option<usize> {
        self.replicas
            .iter()
            .position(|r| r.addr.to_string() == upstream)
    }
}

/// A preflight from `origin` to `replica`, and the document that decided it.
async fn judge(replica: SocketAddr, origin: &str) -> Result<Doc, String> {
    let answer = send(
        replica,
        "OPTIONS",
        &format!("/{BUCKET}/cat.jpg"),
        &[("origin", origin), ("access-control-request-method", "GET")],
    )
    .await;
    let allowed = match answer.status {
        StatusCode::OK if answer.header("access-control-allow-origin") == Some(origin) => true,
        StatusCode::FORBIDDEN
            if answer
                .xml("Message")
                .is_some_and(|m| m.starts_with(NOT_ALLOWED)) =>
        {
            false
        }
        status => {
            return Err(format!(
                "{replica}, preflight from {origin}: {status} {:?} {}",
                answer.cors_headers(),
                String::from_utf8_lossy(&answer.body)
            ));
        }
    };
    // A allows only a.example, B only b.example.
    Ok(if allowed == (origin == ORIGIN_A) {
        Doc::A
    } else {
        Doc::B
    })
}

async fn rules_view(admin_addr: SocketAddr) -> Option<RulesView> {
    let (status, view) = admin(admin_addr, "GET", "/-/rules").await;
    if status != StatusCode::OK {
        return None;
    }
    let rules = &view["routes"][0]["rules"];
    let time = |key: &str| {
        rules[key]
            .as_str()
            .and_then(|t| humantime::parse_rfc3339(t).ok())
    };
    Some(RulesView {
        generation: rules["generation"].as_u64()?,
        loaded_at: time("loaded_at")?,
        changed_at: time("changed_at")?,
    })
}

/// Asks `replica` by both origins, one after the other, every `SAMPLE_EVERY`, and reads its
/// admin view, until `stop` flips.
async fn sample(
    replica: SocketAddr,
    admin: SocketAddr,
    mut stop: watch::Receiver<bool>,
) -> Samples {
    let mut samples = Samples::default();
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return samples,
        }
        for origin in [ORIGIN_A, ORIGIN_B] {
            let sent = SystemTime::now();
            match judge(replica, origin).await {
                Ok(doc) => samples.answers.push(Observation {
                    sent,
                    received: SystemTime::now(),
                    doc,
                }),
                Err(odd) => samples.odd.push(odd),
            }
        }
        if let Some(view) = rules_view(admin).await
            && samples.loads.last() != Some(&view.loaded_at)
        {
            samples.loads.push(view.loaded_at);
        }
    }
}

fn millis(d: Duration) -> String {
    format!("{} ms", d.as_millis())
}

/// `later - earlier`, or zero if the clock says otherwise.
fn since(later: SystemTime, earlier: SystemTime) -> Duration {
    later.duration_since(earlier).unwrap_or_default()
}

/// Every replica sampled in the background.
struct Sampling {
    stop: watch::Sender<bool>,
    samplers: Vec<tokio::task::JoinHandle<Samples>>,
}

impl Sampling {
    fn start(fleet: &Fleet) -> Sampling {
        let (stop, stopped) = watch::channel(false);
        let samplers = fleet
            .replicas
            .iter()
            .map(|r| tokio::spawn(sample(r.addr, r.admin(), stopped.clone())))
            .collect();
        Sampling { stop, samplers }
    }

    async fn stop(self) -> Vec<Samples> {
        let _ = self.stop.send(true);
        let mut samples = Vec::new();
        for sampler in self.samplers {
            samples.push(sampler.await.expect("a sampler ends when told"));
        }
        samples
    }
}

/// The new document's way in: one `PUT ?cors` through the balancer.
struct Write {
    put: Proxied,
    /// The replica that carried it.
    writer: usize,
    s3cmd_returned: SystemTime,
}

impl Fleet {
    /// Each replica answers by A, and says which generation of rules that is.
    async fn all_on_a(&self) -> Vec<RulesView> {
        let mut views = Vec::new();
        for (i, replica) in self.replicas.iter().enumerate() {
            for origin in [ORIGIN_A, ORIGIN_B] {
                assert_eq!(
                    judge(replica.addr, origin).await,
                    Ok(Doc::A),
                    "replica {i} before setcors"
                );
            }
            let view = rules_view(replica.admin()).await;
            views.push(view.expect("the replica shows its loaded rules"));
        }
        views
    }

    async fn assert_balancer_reaches_every_replica(&self) {
        for _ in 0..REPLICAS {
            assert_eq!(judge(self.balancer.addr, ORIGIN_A).await, Ok(Doc::A));
        }
        let every = |log: &[Proxied]| {
            (0..REPLICAS).all(|i| log.iter().any(|p| self.replica_at(&p.upstream) == Some(i)))
        };
        let spread = eventually(Duration::from_secs(5), || {
            std::future::ready(every(&self.balancer.access_log()))
        })
        .await;
        assert!(
            spread,
            "nginx did not use every replica: {:?}",
            self.balancer.access_log()
        );
    }

    /// `s3cmd setcors` pointed at the balancer, and what nginx logged of its `PUT ?cors`.
    async fn setcors_through_balancer(&self, xml: &'static str) -> Write {
        let s3cmd = S3cmd::new(self.balancer.addr);
        let (ok, said) = tokio::task::spawn_blocking(move || s3cmd.setcors(xml, BUCKET))
            .await
            .expect("s3cmd task");
        let s3cmd_returned = SystemTime::now();
        assert!(ok, "setcors through nginx:\n{said}");
        // nginx logs a request once it has answered it: the line may trail s3cmd's exit.
        let mut put = None;
        let logged = eventually(Duration::from_secs(5), || {
            put = self
                .balancer
                .access_log()
                .into_iter()
                .find(|p| p.method == "PUT" && p.target.ends_with("?cors") && p.status == 200);
            std::future::ready(put.is_some())
        })
        .await;
        let Some(put) = put.filter(|_| logged) else {
            panic!(
                "nginx logged no successful PUT ?cors: {:?}",
                self.balancer.access_log()
            );
        };
        let writer = self
            .replica_at(&put.upstream)
            .unwrap_or_else(|| panic!("the PUT went to {}, not a replica", put.upstream));
        Write {
            put,
            writer,
            s3cmd_returned,
        }
    }

    /// Waits until every replica has installed rules since `stored` and fetched once more
    /// after that (a fetch that could bring the old document back has had its chance).
    async fn settle(&self, stored: SystemTime) -> bool {
        let replicas = &self.replicas;
        eventually(convergence_bound() + POLL * 4, || async move {
            for replica in replicas {
                match rules_view(replica.admin()).await {
                    Some(v) if v.changed_at >= stored && v.loaded_at > v.changed_at => {}
                    _ => return false,
                }
            }
            true
        })
        .await
    }

    async fn rules_views(&self) -> Vec<Option<RulesView>> {
        let mut views = Vec::new();
        for replica in &self.replicas {
            views.push(rules_view(replica.admin()).await);
        }
        views
    }
}

/// What one replica did from the write on.
struct Verdict {
    /// From the `PUT` reaching nginx to the first answer by B.
    converged: Option<Duration>,
    /// Printed, `replicas:` lines.
    report: Vec<String>,
    failures: Vec<String>,
}

fn judge_replica(
    i: usize,
    samples: &Samples,
    write: &Write,
    before: &RulesView,
    after: Option<&RulesView>,
) -> Verdict {
    let stored = write.put.arrived;
    let mut report = Vec::new();
    let mut failures = Vec::new();
    let answers = &samples.answers;
    let first_b = answers.iter().position(|o| o.doc == Doc::B);
    let converged = first_b.map(|j| since(answers[j].received, stored));
    match first_b {
        None => failures.push(format!(
            "replica {i} never answered by B ({} answers)",
            answers.len()
        )),
        Some(first_b) => {
            let took = since(answers[first_b].received, stored);
            let last_a = first_b.checked_sub(1).map_or_else(
                || "never".into(),
                |j| millis(since(answers[j].sent, stored)),
            );
            let flaps = answers[first_b..]
                .iter()
                .filter(|o| o.doc == Doc::A)
                .count();
            report.push(format!(
                "replica {i}{}: answers by B {} after the PUT reached nginx (last asked while on A at {last_a}); {} answers, {flaps} by A after the first by B",
                if i == write.writer { " (write-through)" } else { "" },
                millis(took),
                answers.len()
            ));
            if answers[first_b].received < stored {
                failures.push(format!(
                    "replica {i} answered by B before the PUT reached nginx"
                ));
            }
            if took > convergence_bound() {
                failures.push(format!(
                    "replica {i} answered by B {} after the PUT, past the bound {}",
                    millis(took),
                    millis(convergence_bound())
                ));
            }
            if flaps > 0 {
                failures.push(format!(
                    "replica {i} flapped: {flaps} answers by A after answering by B"
                ));
            }
        }
    }
    // The write-through is done before the client hears back.
    if i == write.writer
        && let Some(stale) = answers
            .iter()
            .find(|o| o.sent >= write.s3cmd_returned && o.doc == Doc::A)
    {
        failures.push(format!(
            "replica {i} carried the write but answered by A to a preflight sent {} after s3cmd returned",
            millis(since(stale.sent, write.s3cmd_returned))
        ));
    }
    if !samples.odd.is_empty() {
        failures.push(format!(
            "replica {i} answered by neither document: {:?}",
            samples.odd
        ));
    }
    // One swap, A to B: a replica that went back to A and forward again, however briefly,
    // would show more.
    if after.is_none_or(|a| a.generation != before.generation + 1) {
        failures.push(format!(
            "replica {i}: generation {} before the write, {after:?} after: expected exactly one change",
            before.generation
        ));
    }

    let intervals = poll_intervals(samples, (i == write.writer).then_some(&write.put));
    report.push(format!(
        "replica {i}: from one poll to the next: {}",
        if intervals.is_empty() {
            "none seen but next to the write-through".into()
        } else {
            intervals
                .iter()
                .map(|d| millis(*d))
                .collect::<Vec<_>>()
                .join(", ")
        }
    ));
    let shortest = POLL.mul_f64(MIN_JITTER);
    let longest = POLL.mul_f64(MAX_JITTER) + FETCH_ALLOWANCE;
    // The admin view's timestamps are whole milliseconds.
    let resolution = Duration::from_millis(1);
    if let Some(d) = intervals
        .iter()
        .find(|d| **d + resolution < shortest || **d > longest)
    {
        failures.push(format!(
            "replica {i} polled {} after its previous poll, outside {}..{}",
            millis(*d),
            millis(shortest),
            millis(longest)
        ));
    }
    Verdict {
        converged,
        report,
        failures,
    }
}

/// The time between successive loads of a replica's rules, but for those next to the load
/// the write-through did (which is no poll).
fn poll_intervals(samples: &Samples, write: Option<&Proxied>) -> Vec<Duration> {
    let by_write = |at: &SystemTime| write.is_some_and(|p| *at >= p.arrived && *at <= p.answered);
    samples
        .loads
        .windows(2)
        .filter(|w| !by_write(&w[0]) && !by_write(&w[1]))
        .map(|w| since(w[1], w[0]))
        .collect()
}

#[test]
fn replicas_behind_a_load_balancer_converge_on_a_new_bucket_document_within_one_jittered_poll() {
    let fleet = Fleet::start();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let before = fleet.all_on_a().await;
        fleet.assert_balancer_reaches_every_replica().await;

        let sampling = Sampling::start(&fleet);
        let write = fleet.setcors_through_balancer(DOC_B).await;
        let settled = fleet.settle(write.put.arrived).await;
        let after = fleet.rules_views().await;
        let samples = sampling.stop().await;

        println!(
            "replicas: moto at {}, nginx at {} in front of replicas {:?}",
            fleet.moto.addr,
            fleet.balancer.addr,
            fleet.replicas.iter().map(|r| r.addr).collect::<Vec<_>>()
        );
        println!(
            "replicas: poll {}, bound {} (poll × {MAX_JITTER} + {} for fetching), each replica asked every {}",
            millis(POLL),
            millis(convergence_bound()),
            millis(FETCH_ALLOWANCE),
            millis(SAMPLE_EVERY)
        );
        println!(
            "replicas: the PUT ?cors reached nginx at t=0 and was answered at {} by replica {} (write-through); s3cmd returned at {}",
            millis(since(write.put.answered, write.put.arrived)),
            write.writer,
            millis(since(write.s3cmd_returned, write.put.arrived)),
        );
        let mut worst = Some(Duration::ZERO);
        let mut failures = Vec::new();
        for (i, samples) in samples.iter().enumerate() {
            let verdict = judge_replica(i, samples, &write, &before[i], after[i].as_ref());
            for line in &verdict.report {
                println!("replicas: {line}");
            }
            worst = worst.zip(verdict.converged).map(|(w, c)| w.max(c));
            failures.extend(verdict.failures);
        }
        println!(
            "replicas: max convergence {}",
            worst.map_or_else(|| "never".into(), millis)
        );
        assert!(
            settled,
            "the replicas did not all load B and poll again: {after:?}"
        );
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    });
}
