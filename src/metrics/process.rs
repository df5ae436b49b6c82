//! The process's own metrics, under the names every Prometheus client library uses
//! (`process_resident_memory_bytes`, `process_open_fds`, `process_cpu_seconds_total`, ...), so
//! the usual dashboards and alerts work unchanged.
//!
//! Read from `/proc/self` at scrape time, never in between: nothing here runs unless a scraper
//! asks. Where `/proc` cannot be read (another OS, a restricted sandbox) the metric is left
//! out rather than shown as zero.

use std::fs;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Unit;

/// Reads `/proc/self` on every scrape.
#[derive(Debug)]
pub(crate) struct ProcessCollector;

/// What `/proc/self/stat` says, in its own units.
#[derive(Debug, PartialEq)]
struct Stat {
    /// User and system CPU time, in clock ticks.
    utime: u64,
    stime: u64,
    /// Start time after boot, in clock ticks.
    starttime: u64,
    /// Resident set size, in pages.
    rss: u64,
}

/// Parses `/proc/self/stat`. The command name (field 2) is in parentheses and may hold spaces
/// and parentheses itself, so fields are counted from the last `)`.
fn parse_stat(text: &str) -> Option<Stat> {
    let after_name = &text[text.rfind(')')? + 1..];
    // Fields 3 onwards; field N is at index N - 3.
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(Stat {
        utime: field(14)?,
        stime: field(15)?,
        starttime: field(22)?,
        rss: field(24)?,
    })
}

/// The boot time, from `/proc/stat`'s `btime` line, in Unix seconds.
fn parse_boot_time(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

#[cfg(unix)]
fn sysconf(name: libc::c_int) -> Option<u64> {
    // SAFETY: sysconf only reads the name it is given; it returns -1 for an unknown one.
    let value = unsafe { libc::sysconf(name) };
    u64::try_from(value).ok().filter(|&v| v > 0)
}

#[cfg(unix)]
fn max_fds() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes only into the struct it is given, which outlives the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    (limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur)
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        #[cfg(unix)]
        {
            let stat = fs::read_to_string("/proc/self/stat")
                .ok()
                .and_then(|text| parse_stat(&text));
            let ticks = sysconf(libc::_SC_CLK_TCK);
            if let (Some(stat), Some(ticks)) = (&stat, ticks) {
                let cpu = ConstCounter::new((stat.utime + stat.stime) as f64 / ticks as f64);
                let metric = encoder.encode_descriptor(
                    "process_cpu",
                    "Total user and system CPU time spent",
                    Some(&Unit::Seconds),
                    cpu.metric_type(),
                )?;
                cpu.encode(metric)?;
                let boot = fs::read_to_string("/proc/stat")
                    .ok()
                    .and_then(|text| parse_boot_time(&text));
                if let Some(boot) = boot {
                    let start = ConstGauge::new(boot as f64 + stat.starttime as f64 / ticks as f64);
                    let metric = encoder.encode_descriptor(
                        "process_start_time",
                        "Start time of the process since the Unix epoch",
                        Some(&Unit::Seconds),
                        start.metric_type(),
                    )?;
                    start.encode(metric)?;
                }
            }
            if let (Some(stat), Some(page)) = (&stat, sysconf(libc::_SC_PAGESIZE)) {
                let resident = ConstGauge::new(stat.rss.saturating_mul(page) as f64);
                let metric = encoder.encode_descriptor(
                    "process_resident_memory",
                    "Resident memory size",
                    Some(&Unit::Bytes),
                    resident.metric_type(),
                )?;
                resident.encode(metric)?;
            }
            if let Ok(fds) = fs::read_dir("/proc/self/fd") {
                let open = ConstGauge::new(fds.count() as i64);
                let metric = encoder.encode_descriptor(
                    "process_open_fds",
                    "Open file descriptors",
                    None,
                    open.metric_type(),
                )?;
                open.encode(metric)?;
            }
            if let Some(max) = max_fds() {
                let max = ConstGauge::new(i64::try_from(max).unwrap_or(i64::MAX));
                let metric = encoder.encode_descriptor(
                    "process_max_fds",
                    "The limit on open file descriptors",
                    None,
                    max.metric_type(),
                )?;
                max.encode(metric)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_counted_from_the_end_of_the_command_name() {
        let line = "4242 (a) b (c) S 1 4242 4242 0 -1 4194560 1500 0 0 0 \
                    120 30 0 0 20 0 8 0 9876 123456789 2048 18446744073709551615";
        assert_eq!(
            parse_stat(line),
            Some(Stat {
                utime: 120,
                stime: 30,
                starttime: 9876,
                rss: 2048,
            })
        );
        assert_eq!(parse_stat("4242 (truncated"), None);
    }

    #[test]
    fn boot_time_comes_from_the_btime_line() {
        let text = "cpu  1 2 3\nintr 5\nbtime 1700000000\nprocesses 9\n";
        assert_eq!(parse_boot_time(text), Some(1_700_000_000));
        assert_eq!(parse_boot_time("cpu 1\n"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_reads_its_own_stat() {
        let text = fs::read_to_string("/proc/self/stat").expect("procfs");
        let stat = parse_stat(&text).expect("parsable");
        assert!(stat.rss > 0, "{text}");
    }
}
