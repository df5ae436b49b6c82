//! An S3 endpoint route under a flood of made-up bucket names: what each name may cost the origin
//! (one `GET ?cors`, at a bounded rate, remembered when missing) and that nothing keeps polling
//! buckets nobody asks for. Against the small S3-compatible origin, which counts its `GET ?cors`
//! per bucket.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::common::*;
use corsgate::rules::{EndpointSource, RulesSource};
use corsgate::s3::Addressing;
use http::StatusCode;

const ALLOW_A: &str = "<CORSConfiguration><CORSRule><AllowedOrigin>https://a.example</AllowedOrigin><AllowedMethod>GET</AllowedMethod></CORSRule></CORSConfiguration>";
const A: &str = "https://a.example";
const BUCKET_NOT_FOUND: &str = "CORSResponse: Bucket not found";
const NOT_ENABLED: &str = "CORSResponse: CORS is not enabled for this bucket.";

/// The flood bounds of one test; anything not named is long enough not to matter.
struct Bounds {
    poll: Duration,
    max_buckets: u64,
    negative_ttl: Duration,
    max_fetches_per_second: u32,
    bucket_idle: Duration,
}

impl Default for Bounds {
    fn default() -> Self {
        Bounds {
            poll: Duration::from_secs(3600),
            max_buckets: 1000,
            negative_ttl: Duration::from_secs(3600),
            max_fetches_per_second: 20,
            bucket_idle: Duration::from_secs(3600),
        }
    }
}

async fn gateway(s3: &FakeS3, bounds: Bounds) -> corsgate::gateway::Running {
    let source = EndpointSource {
        poll: bounds.poll,
        max_buckets: bounds.max_buckets,
        negative_ttl: bounds.negative_ttl,
        max_fetches_per_second: bounds.max_fetches_per_second,
        bucket_idle: bounds.bucket_idle,
        ..EndpointSource::defaults(Addressing::Path)
    };
    start(config(vec![route_to(
        &s3.url(),
        RulesSource::Endpoint(source),
    )]))
    .await
}

async fn preflight(gateway: SocketAddr, bucket: &str) -> Answer {
    send(
        gateway,
        "OPTIONS",
        &format!("/{bucket}/k"),
        &[("origin", A), ("access-control-request-method", "GET")],
    )
    .await
}

/// S3's answer to a request over its rate, and nothing that would grant CORS.
fn assert_slow_down(answer: &Answer, what: &str) {
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE, "{what}");
    assert_eq!(answer.xml("Code").as_deref(), Some("SlowDown"), "{what}");
    assert_eq!(
        answer.xml("Message").as_deref(),
        Some("Please reduce your request rate."),
        "{what}"
    );
    assert_eq!(answer.header("retry-after"), Some("1"), "{what}");
    assert_eq!(
        answer.header("content-type"),
        Some("application/xml"),
        "{what}"
    );
    assert_eq!(answer.cors_headers(), [], "{what}");
}

/// Waits until none of `buckets` is fetched over `window` (longer than a poll interval, jitter
/// included); false if that never happens within `within`.
async fn polls_stop(s3: &FakeS3, buckets: &[String], window: Duration, within: Duration) -> bool {
    let total = || {
        let counts = s3.cors_gets_by_bucket();
        buckets
            .iter()
            .map(|b| counts.get(b).copied().unwrap_or(0))
            .sum::<usize>()
    };
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        let before = total();
        tokio::time::sleep(window).await;
        if total() == before {
            return true;
        }
    }
    false
}

#[tokio::test]
async fn concurrent_first_requests_for_a_new_name_make_exactly_one_fetch() {
    let s3 = FakeS3::start().await;
    s3.put_bucket("photos", Some(ALLOW_A));
    // Slow enough that every request arrives while the one fetch is in flight.
    s3.set_delay(Duration::from_millis(200));
    let gateway = gateway(&s3, Bounds::default()).await;
    let addr = gateway.addr();

    for (bucket, status) in [("photos", StatusCode::OK), ("ghost", StatusCode::FORBIDDEN)] {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..50 {
            tasks.spawn(async move { preflight(addr, bucket).await.status });
        }
        while let Some(answer) = tasks.join_next().await {
            // Waiting for a fetch in flight takes nothing from the rate: none is refused.
            assert_eq!(answer.expect("task"), status, "{bucket}");
        }
        assert_eq!(s3.cors_gets_of(bucket), 1, "{bucket}");
    }
    // Nor is a name fetched again soon after its first fetch (the poll is an hour away).
    let names = ["photos".to_string(), "ghost".to_string()];
    let window = Duration::from_millis(1500);
    assert!(polls_stop(&s3, &names, window, Duration::from_secs(10)).await);
    assert_eq!(s3.cors_gets_of("photos"), 1);
    assert_eq!(s3.cors_gets_of("ghost"), 1);
    gateway.shutdown().await;
}

#[tokio::test]
async fn a_flood_of_made_up_names_costs_one_fetch_each_at_the_configured_rate() {
    const NAMES: usize = 300;
    const RATE: u32 = 20;
    let s3 = FakeS3::start().await;
    s3.put_bucket("real", Some(ALLOW_A));
    let gateway = gateway(
        &s3,
        Bounds {
            max_fetches_per_second: RATE,
            ..Bounds::default()
        },
    )
    .await;
    let addr = gateway.addr();
    assert_eq!(preflight(addr, "real").await.status, StatusCode::OK);

    let started = Instant::now();
    let limit = Arc::new(tokio::sync::Semaphore::new(32));
    let mut flood = tokio::task::JoinSet::new();
    let mut real = tokio::task::JoinSet::new();
    for i in 0..NAMES {
        let permits = Arc::clone(&limit);
        flood.spawn(async move {
            let _permit = permits.acquire_owned().await.expect("semaphore open");
            let name = format!("made-up-{i:03}");
            // Forwarded requests too: a new name over the rate must not reach the origin.
            let forwarded = i % 3 == 0;
            let answer = if forwarded {
                send(addr, "GET", &format!("/{name}/k"), &[("origin", A)]).await
            } else {
                preflight(addr, &name).await
            };
            (name, forwarded, answer)
        });
        if i % 25 == 0 {
            let permits = Arc::clone(&limit);
            real.spawn(async move {
                let _permit = permits.acquire_owned().await.expect("semaphore open");
                preflight(addr, "real").await
            });
        }
    }
    let mut answers = Vec::new();
    while let Some(done) = flood.join_next().await {
        answers.push(done.expect("task"));
    }
    let elapsed = started.elapsed();
    while let Some(done) = real.join_next().await {
        let answer = done.expect("task");
        assert_eq!(answer.status, StatusCode::OK, "the known bucket is served");
        assert_eq!(answer.header("access-control-allow-origin"), Some(A));
    }
    assert_eq!(
        s3.cors_gets_of("real"),
        1,
        "the known bucket is not fetched again"
    );

    let counts = s3.cors_gets_by_bucket();
    let mut fetched = 0;
    let mut refused = Vec::new();
    for (name, forwarded, answer) in &answers {
        let gets = counts.get(name).copied().unwrap_or(0);
        assert!(gets <= 1, "{name} fetched {gets} times");
        if gets == 1 {
            fetched += 1;
            if *forwarded {
                assert_eq!(answer.status, StatusCode::OK, "{name} forwarded");
                assert_eq!(answer.body, format!("object {name}/k"));
            } else {
                assert_eq!(answer.status, StatusCode::FORBIDDEN, "{name}");
                assert_eq!(answer.xml("Message").as_deref(), Some(BUCKET_NOT_FOUND));
            }
        } else {
            assert_slow_down(answer, name);
            refused.push(name.clone());
        }
    }
    let allowed = f64::from(RATE) * elapsed.as_secs_f64() + f64::from(RATE);
    assert!(
        fetched as f64 <= allowed.ceil(),
        "{fetched} fetches in {elapsed:?} at {RATE}/s"
    );
    assert!(
        !refused.is_empty(),
        "{NAMES} names in {elapsed:?} never went over {RATE}/s"
    );

    // A refused name was not remembered as missing: once the rate allows, it is fetched.
    let name = &refused[0];
    let answered = eventually(Duration::from_secs(5), || async {
        preflight(addr, name).await.status != StatusCode::SERVICE_UNAVAILABLE
    })
    .await;
    assert!(answered, "{name} is still refused");
    assert_eq!(s3.cors_gets_of(name), 1);
    let again = preflight(addr, name).await;
    assert_eq!(again.xml("Message").as_deref(), Some(BUCKET_NOT_FOUND));
    assert_eq!(s3.cors_gets_of(name), 1);
    gateway.shutdown().await;
}

#[tokio::test]
async fn a_missing_bucket_is_remembered_for_the_negative_ttl_and_never_polled() {
    let negative_ttl = Duration::from_secs(2);
    let s3 = FakeS3::start().await;
    let gateway = gateway(
        &s3,
        Bounds {
            // Shorter than the TTL: a poll of the missing name would show before it ends.
            poll: Duration::from_secs(1),
            negative_ttl,
            ..Bounds::default()
        },
    )
    .await;
    let addr = gateway.addr();

    let first = preflight(addr, "ghost").await;
    let learnt = Instant::now();
    assert_eq!(first.status, StatusCode::FORBIDDEN);
    assert_eq!(first.xml("Message").as_deref(), Some(BUCKET_NOT_FOUND));
    assert_eq!(s3.cors_gets_of("ghost"), 1);

    // Judged from memory, exactly as the fetched answer judged it.
    for _ in 0..5 {
        let again = preflight(addr, "ghost").await;
        assert_eq!(again.status, first.status);
        assert_eq!(again.xml("Code"), first.xml("Code"));
        assert_eq!(again.xml("Message"), first.xml("Message"));
        assert_eq!(again.xml("ResourceType"), first.xml("ResourceType"));
        assert_eq!(again.cors_headers(), first.cors_headers());
    }
    // Requests other than preflights still go to the origin, which answers them.
    let get = send(addr, "GET", "/ghost/k", &[("origin", A)]).await;
    assert_eq!(get.body, "object ghost/k");
    assert_eq!(s3.cors_gets_of("ghost"), 1);

    // The last moment the name was still answered from memory.
    let remembered_until = Cell::new(learnt);
    let refetched = eventually(Duration::from_secs(10), || async {
        let answer = preflight(addr, "ghost").await;
        assert_eq!(answer.xml("Message").as_deref(), Some(BUCKET_NOT_FOUND));
        if s3.cors_gets_of("ghost") == 1 {
            remembered_until.set(Instant::now());
            false
        } else {
            true
        }
    })
    .await;
    assert!(refetched, "the name was never fetched again");
    let remembered = remembered_until.get().duration_since(learnt);
    assert!(
        remembered >= negative_ttl - Duration::from_millis(500),
        "fetched again after {remembered:?}"
    );
    assert_eq!(s3.cors_gets_of("ghost"), 2, "one fetch after the TTL");
    preflight(addr, "ghost").await;
    assert_eq!(s3.cors_gets_of("ghost"), 2, "and remembered again");
    gateway.shutdown().await;
}

#[tokio::test]
async fn buckets_unseen_for_bucket_idle_stop_polling_and_are_fetched_again_when_asked() {
    let poll = Duration::from_millis(500);
    let s3 = FakeS3::start().await;
    let idle: Vec<String> = (0..10).map(|i| format!("idle-{i}")).collect();
    for bucket in &idle {
        s3.put_bucket(bucket, None);
    }
    s3.put_bucket("hot", Some(ALLOW_A));
    let gateway = gateway(
        &s3,
        Bounds {
            poll,
            bucket_idle: Duration::from_millis(1500),
            ..Bounds::default()
        },
    )
    .await;
    let addr = gateway.addr();
    for bucket in &idle {
        let answer = preflight(addr, bucket).await;
        assert_eq!(answer.xml("Message").as_deref(), Some(NOT_ENABLED));
    }
    // One bucket stays in demand all along, and so stays polled.
    let stop = Arc::new(AtomicBool::new(false));
    let hot = tokio::spawn({
        let stop = Arc::clone(&stop);
        async move {
            while !stop.load(Ordering::Relaxed) {
                assert_eq!(preflight(addr, "hot").await.status, StatusCode::OK);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });

    let polled = eventually(Duration::from_secs(10), || async {
        idle.iter().any(|b| s3.cors_gets_of(b) >= 2)
    })
    .await;
    assert!(polled, "the buckets were polled while recently requested");
    let window = poll * 2;
    assert!(
        polls_stop(&s3, &idle, window, Duration::from_secs(10)).await,
        "idle buckets are still polled: {:?}",
        s3.cors_gets_by_bucket()
    );
    let hot_before = s3.cors_gets_of("hot");
    assert!(polls_stop(&s3, &idle, window, Duration::from_secs(5)).await);
    assert!(
        s3.cors_gets_of("hot") > hot_before,
        "the bucket in demand is still polled"
    );
    stop.store(true, Ordering::Relaxed);
    hot.await.expect("hot bucket requests");

    let fetches = s3.cors_gets_of("idle-0");
    let again = preflight(addr, "idle-0").await;
    assert_eq!(again.xml("Message").as_deref(), Some(NOT_ENABLED));
    assert_eq!(s3.cors_gets_of("idle-0"), fetches + 1, "fetched again");
    gateway.shutdown().await;
}

#[tokio::test]
async fn buckets_dropped_to_keep_max_buckets_stop_polling() {
    let poll = Duration::from_millis(500);
    let max_buckets = 4;
    let s3 = FakeS3::start().await;
    let names: Vec<String> = (0..16).map(|i| format!("bucket-{i:02}")).collect();
    for bucket in &names {
        s3.put_bucket(bucket, None);
    }
    let gateway = gateway(
        &s3,
        Bounds {
            poll,
            max_buckets,
            ..Bounds::default()
        },
    )
    .await;
    let addr = gateway.addr();
    for bucket in &names {
        let answer = preflight(addr, bucket).await;
        assert_eq!(answer.xml("Message").as_deref(), Some(NOT_ENABLED));
    }

    // Over a window of two poll intervals every bucket held is polled; at most max_buckets are.
    let window = poll * 2;
    let polled_in_window = RefCell::new(HashMap::new());
    let bounded = eventually(Duration::from_secs(15), || async {
        let before = s3.cors_gets_by_bucket();
        tokio::time::sleep(window).await;
        let after = s3.cors_gets_by_bucket();
        let polled: HashMap<String, usize> = after
            .into_iter()
            .filter(|(b, n)| before.get(b).copied().unwrap_or(0) < *n)
            .collect();
        let bounded = !polled.is_empty() && polled.len() as u64 <= max_buckets;
        *polled_in_window.borrow_mut() = polled;
        bounded
    })
    .await;
    let polled_in_window = polled_in_window.into_inner();
    assert!(
        bounded,
        "polled in the last window: {polled_in_window:?} (max_buckets {max_buckets})"
    );

    let dropped = names
        .iter()
        .find(|b| !polled_in_window.contains_key(*b))
        .expect("a bucket beyond max_buckets");
    let fetches = s3.cors_gets_of(dropped);
    let again = preflight(addr, dropped).await;
    assert_eq!(again.xml("Message").as_deref(), Some(NOT_ENABLED));
    assert_eq!(
        s3.cors_gets_of(dropped),
        fetches + 1,
        "{dropped} fetched again"
    );
    gateway.shutdown().await;
}

#[test]
fn a_flood_of_made_up_names_logs_no_line_per_name() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let s3 = runtime.block_on(FakeS3::start());
    let url = s3.url();
    let (binary, addr) = Binary::serve(&url, &["--s3-endpoint", "path"], &[]);
    runtime.block_on(async {
        let limit = Arc::new(tokio::sync::Semaphore::new(16));
        let mut flood = tokio::task::JoinSet::new();
        for i in 0..300 {
            let limit = Arc::clone(&limit);
            flood.spawn(async move {
                let _permit = limit.acquire_owned().await.expect("semaphore open");
                preflight(addr, &format!("flood-{i:03}")).await
            });
        }
        let mut slowed = 0;
        while let Some(done) = flood.join_next().await {
            let answer = done.expect("task");
            if answer.status == StatusCode::SERVICE_UNAVAILABLE {
                assert_slow_down(&answer, "flood");
                slowed += 1;
            } else {
                assert_eq!(answer.xml("Message").as_deref(), Some(BUCKET_NOT_FOUND));
            }
        }
        assert!(slowed > 0, "the flood stayed under the default rate");
    });
    // Every line the flood caused was written before this one.
    binary.hangup();
    let marked = runtime.block_on(eventually(Duration::from_secs(10), || async {
        !binary.log_lines("SIGHUP: reloading").is_empty()
    }));
    assert!(marked, "no SIGHUP log line");
    let about_names: Vec<String> = binary
        .log_lines("flood-")
        .into_iter()
        // Access lines (one per request, by design) start with their time.
        .filter(|line| !line.starts_with("time="))
        .collect();
    assert!(about_names.len() <= 2, "{about_names:#?}");
    let warnings = binary.log_lines("WARN");
    assert!(warnings.len() <= 2, "{warnings:#?}");
    assert!(
        !binary.log_lines("answered 503 SlowDown").is_empty(),
        "the operator is told about the refusals: {warnings:#?}"
    );
}
