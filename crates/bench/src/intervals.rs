//! Interval statistics (`--interval`, `--hdr-log`, `--csv`): the measured window cut into
//! intervals, each with its own round-trip histogram and counts, for plotting a run over
//! time and for HdrHistogram's own tools.
//!
//! Each load-generator thread counts its interval apart ([`IntervalClock`], no lock on the
//! hot path) and, at each boundary, hands it to the thread watching the run, which adds the
//! threads' parts of an interval together ([`IntervalLog`]) and writes it out: a live line
//! on a terminal, a row of CSV, and one histogram of the standard HdrHistogram interval log
//! (V2, compressed, written and read by the `hdrhistogram` crate; the Java
//! `HistogramLogProcessor` reads it too). Every round trip the report counts is in exactly
//! one interval, so the log adds up to the report. A round trip belongs to the interval in
//! which the thread recorded it; open loop, echoes that come back after the window (of
//! messages due inside it) go to the last interval, as the report counts them too.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant, SystemTime};

use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::serialization::interval_log::IntervalLogWriterBuilder;

use crate::histogram::RoundTrips;
use crate::human::{count, micros};
use crate::progress::Progress;

/// What `--interval`, `--hdr-log` and `--csv` ask for.
#[derive(Debug, Clone, PartialEq)]
pub struct IntervalOptions {
    /// The length of an interval.
    pub every: Duration,
    /// `--hdr-log PATH`.
    pub hdr_log: Option<PathBuf>,
    /// `--csv PATH`.
    pub csv: Option<PathBuf>,
    /// A line per interval on stderr (when it is a terminal).
    pub live: bool,
}

/// One interval's counts, from one thread or from all.
#[derive(Debug, Clone, Default)]
pub struct Interval {
    /// The round trips recorded in it (the report's, cut by time); its count is the
    /// number echoed.
    pub round_trips: RoundTrips,
    /// Messages wholly sent in it.
    pub sent: u64,
    /// Connections lost in it.
    pub errors: u64,
}

impl Interval {
    fn merge(&mut self, other: &Interval) {
        self.round_trips.merge(&other.round_trips);
        self.sent += other.sent;
        self.errors += other.errors;
    }
}

/// A load-generator thread's side: where the next boundary falls, and where to hand each
/// finished interval.
pub struct IntervalClock {
    every: Duration,
    /// The end of the interval being counted (never past `end`).
    next_at: Instant,
    end: Instant,
    index: u32,
    sink: Sender<(u32, Interval)>,
}

impl IntervalClock {
    /// Intervals of `every` from `from` (the window's start) to `end`.
    pub fn new(every: Duration, from: Instant, end: Instant, sink: Sender<(u32, Interval)>) -> IntervalClock {
        IntervalClock { every, next_at: (from + every).min(end), end, index: 0, sink }
    }

    /// The next boundary, while there is one before the end: the event loop wakes by then.
    pub fn next_boundary(&self) -> Option<Instant> {
        (self.next_at < self.end).then_some(self.next_at)
    }

    /// At or past a boundary, hand `current` on and start the next interval empty. The
    /// last interval is never rolled: [`IntervalClock::finish`] hands it on.
    pub fn roll(&mut self, now: Instant, current: &mut Interval) {
        while now >= self.next_at && self.next_at < self.end {
            // The watcher may be gone only if the run is ending anyway: nothing to do.
            let _ = self.sink.send((self.index, std::mem::take(current)));
            self.index += 1;
            self.next_at = (self.next_at + self.every).min(self.end);
        }
    }

    /// The thread is done: hand on the last interval.
    pub fn finish(self, last: Interval) {
        let _ = self.sink.send((self.index, last));
    }
}

/// The watching thread's side: adds up each interval over the threads, and writes it.
pub struct IntervalLog {
    every: Duration,
    live: bool,
    hdr: Option<HdrLog>,
    csv: Option<(PathBuf, BufWriter<File>)>,
    /// Threads that report each interval.
    threads: usize,
    /// The window's start and end, once the run has begun.
    window: Option<(Instant, Instant)>,
    /// Intervals some thread has reported, and how many threads have.
    pending: BTreeMap<u32, (usize, Interval)>,
    /// Written so far, over every interval: what the report's count must equal.
    echoed: u64,
}

impl IntervalLog {
    /// Open the files now, so that a path that cannot be written fails before any load.
    pub fn create(options: &IntervalOptions) -> io::Result<IntervalLog> {
        let hdr = options.hdr_log.as_deref().map(HdrLog::create).transpose()?;
        let csv = match &options.csv {
            Some(path) => Some((path.clone(), BufWriter::new(create(path)?))),
            None => None,
        };
        Ok(IntervalLog {
            every: options.every,
            live: options.live,
            hdr,
            csv,
            threads: 1,
            window: None,
            pending: BTreeMap::new(),
            echoed: 0,
        })
    }

    /// The length of an interval.
    pub fn every(&self) -> Duration {
        self.every
    }

    /// The run begins: `threads` will report intervals of the window `from`..`end`. Writes
    /// the files' headers.
    pub fn begin(&mut self, from: Instant, end: Instant, threads: usize) -> io::Result<()> {
        self.window = Some((from, end));
        self.threads = threads.max(1);
        // The wall-clock time of the window's start, for the log's StartTime and BaseTime.
        let wall = SystemTime::now() - Instant::now().saturating_duration_since(from);
        if let Some(hdr) = &mut self.hdr {
            hdr.begin(wall)?;
        }
        if let Some((path, csv)) = &mut self.csv {
            writeln!(csv, "time_s,sent,echoed,msgs_per_s,p50_us,p99_us,p999_us,max_us,errors")
                .map_err(|e| cannot_write(path, e))?;
        }
        Ok(())
    }

    /// One thread's part of interval `index`; writes out every interval that is complete.
    pub fn accept(&mut self, index: u32, part: &Interval, progress: &Progress) -> io::Result<()> {
        let (reported, sum) = self.pending.entry(index).or_default();
        *reported += 1;
        sum.merge(part);
        while let Some(entry) = self.pending.first_entry() {
            if entry.get().0 < self.threads {
                break;
            }
            let (index, (_, interval)) = entry.remove_entry();
            self.write(index, &interval, progress)?;
        }
        Ok(())
    }

    /// The run is over: write what is left (the intervals of a thread that failed are
    /// written with the parts that came), flush the files, and return how many round
    /// trips the intervals held in all.
    pub fn finish(&mut self, progress: &Progress) -> io::Result<u64> {
        while let Some((index, (_, interval))) = self.pending.pop_first() {
            self.write(index, &interval, progress)?;
        }
        if let Some(hdr) = &mut self.hdr {
            hdr.flush()?;
        }
        if let Some((path, csv)) = &mut self.csv {
            csv.flush().map_err(|e| cannot_write(path, e))?;
        }
        Ok(self.echoed)
    }

    /// Interval `index`: its start (seconds from the window's start) and its length.
    fn span(&self, index: u32) -> (Duration, Duration) {
        let start = self.every * index;
        let window = self.window.map_or(Duration::MAX, |(from, end)| end - from);
        (start, self.every.min(window.saturating_sub(start)).max(Duration::from_micros(1)))
    }

    fn write(&mut self, index: u32, interval: &Interval, progress: &Progress) -> io::Result<()> {
        let (start, length) = self.span(index);
        let echoed = interval.round_trips.count();
        self.echoed += echoed;
        let latency = interval.round_trips.latency();
        let per_s = echoed as f64 / length.as_secs_f64();
        if self.live {
            progress.warn(&format!(
                "{:>7.1}s  {}/s  p50 {}  p99 {}  p99.9 {}  max {}  errors {}",
                (start + length).as_secs_f64(),
                count(per_s),
                micros(latency.p50_us),
                micros(latency.p99_us),
                micros(latency.p999_us),
                micros(latency.max_us),
                interval.errors
            ));
        }
        if let Some((path, csv)) = &mut self.csv {
            let mut row = format!("{:.3},{},{echoed},{per_s:.1}", start.as_secs_f64(), interval.sent);
            for us in [latency.p50_us, latency.p99_us, latency.p999_us, latency.max_us] {
                let _ = write!(row, ",{us:.1}");
            }
            writeln!(csv, "{row},{}", interval.errors).map_err(|e| cannot_write(path, e))?;
        }
        if let Some(hdr) = &mut self.hdr {
            hdr.interval(&interval.round_trips, start, length)?;
        }
        Ok(())
    }
}

/// An HdrHistogram interval log being written.
struct HdrLog {
    path: PathBuf,
    file: BufWriter<File>,
    serializer: V2DeflateSerializer,
}

impl HdrLog {
    fn create(path: &Path) -> io::Result<HdrLog> {
        Ok(HdrLog {
            path: path.to_path_buf(),
            file: BufWriter::new(create(path)?),
            serializer: V2DeflateSerializer::new(),
        })
    }

    /// The header: what wrote it, the format version, StartTime and BaseTime (both the
    /// window's start, so each interval's timestamp is seconds into the window), and the
    /// legend line the Java tools write.
    fn begin(&mut self, start: SystemTime) -> io::Result<()> {
        let mut builder = IntervalLogWriterBuilder::new();
        builder
            .add_comment(
                "[Logged with echoloop bench: round trips in nanoseconds; Interval_Max in nanoseconds]",
            )
            .add_comment("[Histogram log format version 1.3]")
            .with_start_time(start)
            .with_base_time(start);
        let path = &self.path;
        builder.begin_log_with(&mut self.file, &mut self.serializer).map_err(|e| cannot_write(path, e))?;
        writeln!(
            self.file,
            "\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\""
        )
        .map_err(|e| cannot_write(path, e))
    }

    /// One interval: a line of start, length, max and the compressed histogram. (A writer
    /// built without comments or times writes no header lines, only the interval.)
    fn interval(&mut self, round_trips: &RoundTrips, start: Duration, length: Duration) -> io::Result<()> {
        let path = &self.path;
        let mut writer = IntervalLogWriterBuilder::new()
            .begin_log_with(&mut self.file, &mut self.serializer)
            .map_err(|e| cannot_write(path, e))?;
        writer
            .write_histogram(round_trips.histogram(), start, length, None)
            .map_err(|e| cannot_write(path, io::Error::other(e.to_string())))
    }

    fn flush(&mut self) -> io::Result<()> {
        let path = &self.path;
        self.file.flush().map_err(|e| cannot_write(path, e))
    }
}

fn create(path: &Path) -> io::Result<File> {
    File::create(path).map_err(|e| cannot_write(path, e))
}

fn cannot_write(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("cannot write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use hdrhistogram::serialization::Deserializer;
    use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
    use std::sync::mpsc;

    fn temp(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("echoloop-intervals-{}-{name}", std::process::id()))
    }

    fn interval(micros: &[u64], sent: u64) -> Interval {
        let mut round_trips = RoundTrips::new();
        micros.iter().for_each(|us| round_trips.record(Duration::from_micros(*us)));
        Interval { round_trips, sent, errors: 0 }
    }

    #[test]
    fn threads_hand_on_each_interval_and_the_last_at_the_end() {
        let (tx, rx) = mpsc::channel();
        let from = Instant::now();
        let end = from + Duration::from_millis(250);
        let mut clock = IntervalClock::new(Duration::from_millis(100), from, end, tx);
        let mut current = interval(&[5], 1);
        assert_eq!(clock.next_boundary(), Some(from + Duration::from_millis(100)));
        clock.roll(from + Duration::from_millis(50), &mut current); // not yet
        clock.roll(from + Duration::from_millis(230), &mut current); // two boundaries passed
        assert_eq!(clock.next_boundary(), None, "the last boundary is the end");
        clock.roll(end + Duration::from_secs(1), &mut current); // the last is never rolled
        current.round_trips.record(Duration::from_micros(7));
        clock.finish(current);
        let got: Vec<(u32, u64)> = rx.iter().map(|(i, part)| (i, part.round_trips.count())).collect();
        assert_eq!(got, [(0, 1), (1, 0), (2, 1)]);
    }

    #[test]
    fn the_log_adds_threads_up_and_reads_back_with_the_crates_reader() {
        let (hdr, csv) = (temp("log.hlog"), temp("log.csv"));
        let options = IntervalOptions {
            every: Duration::from_millis(500),
            hdr_log: Some(hdr.clone()),
            csv: Some(csv.clone()),
            live: false,
        };
        let mut log = IntervalLog::create(&options).unwrap();
        let from = Instant::now();
        log.begin(from, from + Duration::from_millis(1200), 2).unwrap();
        let hidden = Progress::hidden();
        log.accept(1, &interval(&[30, 40], 2), &hidden).unwrap(); // out of order, one thread
        log.accept(0, &interval(&[10], 1), &hidden).unwrap();
        log.accept(0, &interval(&[20, 20, 20], 3), &hidden).unwrap();
        log.accept(2, &interval(&[50], 1), &hidden).unwrap(); // a thread that never sent its part
        log.accept(1, &interval(&[], 0), &hidden).unwrap();
        assert_eq!(log.finish(&hidden).unwrap(), 7);

        let bytes = std::fs::read(&hdr).unwrap();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        assert!(text.contains("#[StartTime: ") && text.contains("#[BaseTime: "), "{text}");
        assert!(text.contains("\"StartTimestamp\",\"Interval_Length\""), "{text}");
        let mut counts = Vec::new();
        for entry in IntervalLogIterator::new(&bytes) {
            let LogEntry::Interval(h) = entry.unwrap() else { continue };
            let decoded = base64::engine::general_purpose::STANDARD.decode(h.encoded_histogram()).unwrap();
            let histogram: hdrhistogram::Histogram<u64> =
                Deserializer::new().deserialize(&mut decoded.as_slice()).unwrap();
            counts.push((h.start_timestamp().as_millis(), h.duration().as_millis(), histogram.len()));
        }
        // The last interval is cut at the window's end.
        assert_eq!(counts, [(0, 500, 4), (500, 500, 2), (1000, 200, 1)]);
        let rows: Vec<String> = std::fs::read_to_string(&csv).unwrap().lines().map(String::from).collect();
        assert_eq!(rows[0], "time_s,sent,echoed,msgs_per_s,p50_us,p99_us,p999_us,max_us,errors");
        assert!(rows[1].starts_with("0.000,4,4,8.0,20.0,"), "{rows:?}");
        assert_eq!(rows.len(), 4, "{rows:?}");
        let _ = (std::fs::remove_file(&hdr), std::fs::remove_file(&csv));
    }

    #[test]
    fn an_unwritable_path_fails_before_any_load() {
        let options = IntervalOptions {
            every: Duration::from_secs(1),
            hdr_log: Some("/nonexistent/dir/x.hlog".into()),
            csv: None,
            live: false,
        };
        let error = IntervalLog::create(&options).err().unwrap().to_string();
        assert!(error.starts_with("cannot write /nonexistent/dir/x.hlog"), "{error}");
    }
}
