//! `--idle-timeout`: a silent connection is closed after the timeout; one that keeps
//! sending stays open as long as it likes.

use std::io::Write;
use std::time::{Duration, Instant};

use echoloop::{Model, ServerConfig};

use crate::util::*;

const IDLE: Duration = Duration::from_millis(300);

/// How often the active client sends: a third of the timeout.
const PERIOD: Duration = Duration::from_millis(100);

fn idle_config() -> ServerConfig {
    config(Model::EventLoop).with_idle_timeout(Some(IDLE))
}

/// A silent connection is closed (clean EOF) once the idle timeout has passed, not before.
#[test]
fn silent_connection_is_closed_after_the_timeout() {
    let server = TestServer::start(idle_config());
    let start = Instant::now();
    let stream = server.connect();
    let mut buf = [0; 8];
    let n = std::io::Read::read(&mut &stream, &mut buf).expect("EOF, not an error or a timeout");
    let waited = start.elapsed();
    assert_eq!(n, 0, "expected EOF");
    assert!(waited >= IDLE, "closed after {waited:?}, before the {IDLE:?} timeout");
    assert!(waited < IO_TIMEOUT);
}

/// Sending every 100 ms keeps a connection open across several 300 ms idle timeouts.
#[test]
fn active_connection_outlives_many_timeouts() {
    let server = TestServer::start(idle_config());
    // On a loaded machine our own thread may sleep far longer than asked; a gap of a whole
    // timeout is then the machine's doing, not the server's, so try again (a few times).
    for attempt in 1..=3 {
        let silent = server.connect();
        let mut active = server.connect();
        let start = Instant::now();
        let mut last_send = Instant::now();
        let mut longest_gap = Duration::ZERO;
        let mut sent = 0u32;
        let mut closed = None;
        while start.elapsed() < IDLE * 4 {
            std::thread::sleep(PERIOD);
            longest_gap = longest_gap.max(last_send.elapsed());
            last_send = Instant::now();
            let message = format!("tick {sent}");
            let echoed = active.write_all(message.as_bytes()).and_then(|()| {
                let mut buf = vec![0; message.len()];
                std::io::Read::read_exact(&mut active, &mut buf).map(|()| buf)
            });
            match echoed {
                Ok(buf) => assert_eq!(buf, message.as_bytes()),
                Err(e) => {
                    closed = Some(e);
                    break;
                }
            }
            sent += 1;
        }
        if let Some(e) = closed {
            assert!(
                longest_gap >= IDLE * 5 / 6,
                "closed ({e}) although it sent at least every {longest_gap:?}"
            );
            eprintln!("attempt {attempt}: this thread slept {longest_gap:?} between sends; trying again");
            continue;
        }
        assert!(sent >= 8, "only {sent} round trips");
        assert_closed_by_server(&silent);
        return;
    }
    panic!("the machine is too loaded to keep a 100 ms send rhythm");
}

/// Connections that come and go, talk, fall silent or reset, under a short idle timeout:
/// every echo is exact, every silent one is closed, and the loop's timer queue survives it.
#[test]
fn churn_under_a_short_idle_timeout() {
    use std::io::Read;
    let server =
        TestServer::start(config(Model::EventLoop).with_idle_timeout(Some(Duration::from_millis(50))));
    let addr = server.tcp();
    let threads: Vec<_> = (0..20u64)
        .map(|t| {
            std::thread::spawn(move || {
                let mut rng = fastrand::Rng::with_seed(t);
                for _ in 0..10 {
                    let mut stream = connect(addr);
                    match rng.u8(0..3) {
                        0 => {
                            let data = random_bytes(rng.usize(1..5000), rng.u64(..));
                            stream.write_all(&data).unwrap();
                            assert_eq!(read_n(&stream, data.len()), data);
                        }
                        1 => assert_eq!(stream.read(&mut [0; 8]).expect("idle EOF"), 0),
                        _ => {
                            stream.write_all(b"bye").unwrap();
                            socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO)).unwrap();
                        }
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        join_bounded(thread, IO_TIMEOUT);
    }
    assert_eq!(server.stop().connections, 200);
}
