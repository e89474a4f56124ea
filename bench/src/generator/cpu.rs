//! The server's CPU time, read from its Prometheus endpoint or from `/proc`.

use hyper::Method;

use super::client::Http;

/// Where the server's CPU time is read.
#[derive(Debug, Clone)]
pub(super) enum CpuSource {
    /// Its Prometheus endpoint.
    Metrics(String),
    /// `/proc/PID/stat` on this machine.
    Pid(u32),
}

impl CpuSource {
    pub(super) async fn seconds(&self) -> Result<f64, String> {
        match self {
            CpuSource::Metrics(url) => server_cpu_seconds(url).await,
            CpuSource::Pid(pid) => {
                let path = format!("/proc/{pid}/stat");
                let stat = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
                proc_stat_cpu_seconds(&stat).ok_or_else(|| format!("{path}: unexpected format"))
            }
        }
    }
}

/// utime + stime of a `/proc/PID/stat` line, in seconds. Fields 14 and 15, counted after the command name
/// (which is in parentheses and may hold spaces); in clock ticks of `USER_HZ`, 100 on Linux.
pub(super) fn proc_stat_cpu_seconds(stat: &str) -> Option<f64> {
    const USER_HZ: f64 = 100.0;
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / USER_HZ)
}

/// The server's `process_cpu_seconds_total`, from its Prometheus text at `url`.
pub(super) async fn server_cpu_seconds(url: &str) -> Result<f64, String> {
    let mut http = Http::new(url)?;
    let (status, body) = http.request(Method::GET, "", None).await?;
    if status != 200 {
        return Err(format!("{url} answered {status}"));
    }
    let text = String::from_utf8_lossy(&body);
    parse_cpu_seconds(&text).ok_or_else(|| format!("{url} has no process_cpu_seconds_total"))
}

pub(super) fn parse_cpu_seconds(prometheus_text: &str) -> Option<f64> {
    prometheus_text.lines().find_map(|line| {
        let value = line.strip_prefix("process_cpu_seconds_total ")?;
        value.trim().parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::{parse_cpu_seconds, proc_stat_cpu_seconds};

    #[test]
    pub(super) fn cpu_time_is_read_from_prometheus_text_and_proc_stat() {
        let text = "# TYPE process_cpu_seconds_total gauge\nprocess_cpu_seconds_total 12.34\n\
                    process_cpu_seconds_total_other 1\n";
        assert_eq!(parse_cpu_seconds(text), Some(12.34));
        assert_eq!(parse_cpu_seconds("process_threads 3\n"), None);
        // A command name with spaces and a parenthesis; utime 250 and stime 50 ticks.
        let stat = "4242 (strata (x) y) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0";
        assert_eq!(proc_stat_cpu_seconds(stat), Some(3.0));
        let own = std::fs::read_to_string("/proc/self/stat").unwrap();
        assert!(proc_stat_cpu_seconds(&own).is_some(), "{own}");
    }
}
