//! Failed-attempt limiting for unauthenticated endpoints (`/v1/enroll`): a
//! source that failed too often within a window is refused with 429 until
//! the window ends, so a token secret cannot be guessed online.
//!
//! The table is in memory and bounded: when it is full, expired windows are
//! dropped first, then the oldest ones.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most sources tracked at once.
const CAPACITY: usize = 10_000;

/// Counts failures per source address in fixed windows.
#[derive(Debug)]
pub struct FailureLimiter {
    max_failures: u32,
    window: Duration,
    entries: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl FailureLimiter {
    /// Allows `max_failures` failures per source in each `window`.
    pub fn new(max_failures: u32, window: Duration) -> Self {
        Self {
            max_failures: max_failures.max(1),
            window,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// `Err(retry_after)` when `source` used up its failures for this window.
    pub fn check(&self, source: IpAddr) -> Result<(), Duration> {
        let key = normalize(source);
        let now = Instant::now();
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        match entries.get(&key) {
            Some((start, failures)) if *failures >= self.max_failures => {
                let ends = *start + self.window;
                if ends > now { Err(ends - now) } else { Ok(()) }
            }
            _ => Ok(()),
        }
    }

    /// Counts one failure of `source`.
    pub fn record_failure(&self, source: IpAddr) {
        let key = normalize(source);
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if !entries.contains_key(&key) && entries.len() >= CAPACITY {
            entries.retain(|_, (start, _)| now.duration_since(*start) < self.window);
            if entries.len() >= CAPACITY
                && let Some(oldest) = entries.iter().min_by_key(|(_, (start, _))| *start).map(|(k, _)| *k)
            {
                entries.remove(&oldest);
            }
        }
        let entry = entries.entry(key).or_insert((now, 0));
        if now.duration_since(entry.0) >= self.window {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
    }

    /// Sources tracked now.
    pub fn tracked(&self) -> usize {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// IPv6 clients usually hold a whole /64: count them as one source.
fn normalize(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut segments = v6.segments();
                segments[4..].fill(0);
                IpAddr::V6(segments.into())
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_after_the_limit_until_the_window_ends_and_stays_bounded() {
        let limiter = FailureLimiter::new(3, Duration::from_millis(200));
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..3 {
            assert!(limiter.check(ip).is_ok());
            limiter.record_failure(ip);
        }
        assert!(limiter.check(ip).is_err());
        assert!(limiter.check("192.0.2.2".parse().unwrap()).is_ok());
        std::thread::sleep(Duration::from_millis(250));
        assert!(limiter.check(ip).is_ok());

        let a: IpAddr = "2001:db8::1".parse().unwrap();
        let b: IpAddr = "2001:db8::2".parse().unwrap();
        for _ in 0..3 {
            limiter.record_failure(a);
        }
        assert!(limiter.check(b).is_err(), "one /64 is one source");

        for i in 0..(CAPACITY as u32 + 50) {
            limiter.record_failure(IpAddr::V4(i.into()));
        }
        assert!(limiter.tracked() <= CAPACITY);
    }
}
