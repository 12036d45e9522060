//! The connect phase: open the connections one at a time, each pinged before the next
//! ([`crate::stream`] says why), and deal them out to the load-generator threads.

use std::io::{self, ErrorKind};
use std::time::{Duration, Instant};

use crate::progress::Progress;
use crate::proxy::ProxyVersion;
use crate::stream::{self, Stream};
use crate::target::Target;

/// The whole connect phase gives up after this long (or after one `--connect-timeout`, or
/// [`CONNECT_TIME_EACH`] per connection, if that is longer).
const CONNECT_PHASE_LIMIT: Duration = Duration::from_secs(20);
/// The connect phase's time per connection, for phases so large that 20 s would not do: a
/// hundred thousand connections may take 100 s (a machine opens several thousand a second).
const CONNECT_TIME_EACH: Duration = Duration::from_millis(1);

/// The outcome of the connect phase.
pub struct Connected {
    /// The connections that opened and answered their ping.
    pub streams: Vec<Stream>,
    /// How many opened.
    pub opened: usize,
    /// How many did not.
    pub failed: usize,
    /// Why the first one failed.
    pub first_error: Option<String>,
    /// How long the phase took.
    pub elapsed: Duration,
}

impl Connected {
    /// Not one connection opened: the first error says why.
    pub fn into_error(self) -> io::Error {
        let reason = self.first_error.unwrap_or_else(|| "no connection could be opened".into());
        io::Error::new(ErrorKind::ConnectionRefused, reason)
    }
}

/// Open `count` connections to `target` one at a time, each pinged (with `ping`) before the
/// next (after a PROXY header, with `proxy`); each connect and ping gives up after `timeout`.
pub fn connect_all(
    target: &Target,
    count: usize,
    ping: &[u8],
    proxy: Option<ProxyVersion>,
    timeout: Duration,
    progress: &Progress,
) -> Connected {
    progress.connecting(count as u64);
    let start = Instant::now();
    let each = CONNECT_TIME_EACH.saturating_mul(u32::try_from(count).unwrap_or(u32::MAX));
    let phase_limit = CONNECT_PHASE_LIMIT.max(timeout).max(each);
    let deadline = start + phase_limit;
    let mut streams = Vec::with_capacity(count);
    let (mut failed, mut first_error) = (0, None);
    for _ in 0..count {
        let left = deadline.saturating_duration_since(Instant::now());
        let result = if left.is_zero() {
            let msg = format!("the connect phase took longer than {}s", phase_limit.as_secs_f64());
            Err(io::Error::new(ErrorKind::TimedOut, msg))
        } else {
            stream::connect(target, ping, proxy, left.min(timeout))
        };
        match result {
            Ok(stream) => streams.push(stream),
            Err(e) => {
                failed += 1;
                first_error.get_or_insert_with(|| e.to_string());
            }
        }
        progress.connected_one();
    }
    Connected { opened: streams.len(), streams, failed, first_error, elapsed: start.elapsed() }
}

/// Deal connections round-robin to `threads` workers, each numbered (the number picks its
/// place in the pattern).
pub fn deal(streams: Vec<Stream>, threads: usize) -> Vec<Vec<(u64, Stream)>> {
    let workers = threads.clamp(1, streams.len().max(1));
    let mut shares: Vec<Vec<(u64, Stream)>> = (0..workers).map(|_| Vec::new()).collect();
    for (i, stream) in streams.into_iter().enumerate() {
        shares[i % workers].push((i as u64, stream));
    }
    shares
}
