//! Regressions and hostile clients: each test names the failure it guards against.

use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use echoloop::Model;

use crate::util::*;
use crate::variants::Variant;

/// A client reset (SO_LINGER 0) with echoes pending disturbs no other client; the server goes on.
#[test]
fn client_reset_with_pending_echoes_disturbs_nobody() {
    let server = TestServer::start(config(Model::EventLoop).with_send_buffer(Some(4096)));
    let addr = server.tcp();
    // A bystander doing round trips until told to stop, checking each echo.
    let (stop, trips) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)));
    let bystander = {
        let (stop, trips) = (Arc::clone(&stop), Arc::clone(&trips));
        thread::spawn(move || {
            let mut stream = connect(addr);
            let mut rng = fastrand::Rng::with_seed(61);
            while !stop.load(Ordering::SeqCst) {
                let chunk = random_bytes(rng.usize(1..=8192), rng.u64(..));
                stream.write_all(&chunk).expect("bystander send");
                assert_same_bytes(&read_n(&stream, chunk.len()), &chunk);
                trips.fetch_add(1, Ordering::SeqCst);
            }
        })
    };

    let resetter = server.connect();
    let written = write_until_blocked(&resetter, &random_bytes(8 << 20, 62));
    assert!(written < 8 << 20, "the server took 8 MiB without our reading");
    socket2::SockRef::from(&resetter).set_linger(Some(Duration::ZERO)).unwrap();
    let before = trips.load(Ordering::SeqCst);
    drop(resetter); // with linger 0: RST, not FIN

    assert!(wait_until(IO_TIMEOUT, || trips.load(Ordering::SeqCst) >= before + 50), "bystander stalled");
    stop.store(true, Ordering::SeqCst);
    join_bounded(bystander, IO_TIMEOUT);

    let data = random_bytes(1 << 20, 63);
    assert_same_bytes(&echo_chunked(server.connect(), data.clone(), 64), &data);
    assert_eq!(server.stop().connections, 3);
}

/// Regression (found in review): an urgent (MSG_OOB) byte stops a TCP read short of the data
/// behind it, so the short-read rule left "efg" unread with no edge to come, and without
/// SO_OOBINLINE the urgent byte itself was never echoed. Every byte comes back, in order.
fn urgent_byte_is_echoed_in_place(variant: Variant) {
    let server = TestServer::start(variant.config());
    let stream = server.connect();
    let socket = socket2::SockRef::from(&stream);
    socket.send(b"abc").unwrap();
    socket.send_out_of_band(b"d").unwrap();
    socket.send(b"efg").unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let mut got = Vec::new();
    (&stream).read_to_end(&mut got).expect("the echo, then EOF");
    assert_eq!(got, b"abcdefg");
}

for_variants!(urgent_byte_is_echoed_in_place);
