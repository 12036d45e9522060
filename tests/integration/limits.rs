//! `--max-connections`: connections over the cap are accepted and closed at once, with a
//! warning, while the others are served as before; a freed slot is used again.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};

use echoloop::Model;

use crate::util::*;

/// One small round trip on `stream`.
fn assert_echoes(stream: &mut TcpStream, message: &[u8]) {
    stream.write_all(message).unwrap();
    assert_eq!(read_n(stream, message.len()), message);
}

/// Over `max_connections` a client is closed at once; the others still echo; a freed slot is reused.
#[test]
fn fourth_client_is_rejected_and_a_freed_slot_is_reused() {
    let server = TestServer::start(config(Model::EventLoop).with_max_connections(3));
    let mut clients: Vec<TcpStream> = (0..3).map(|_| server.connect()).collect();
    for (i, client) in clients.iter_mut().enumerate() {
        assert_echoes(client, format!("hello {i}").as_bytes()); // served: it is in the slab
    }
    let fourth = server.connect();
    assert_closed_by_server(&fourth);
    for client in &mut clients {
        assert_echoes(client, b"still here");
    }
    // Leave cleanly: after the server's FIN it has freed the slot (it closes, then the FIN
    // goes out), so the next client cannot race with the departure.
    let mut leaving = clients.remove(0);
    leaving.shutdown(Shutdown::Write).unwrap();
    assert_eq!(leaving.read(&mut [0; 8]).unwrap(), 0);
    let mut newcomer = server.connect();
    assert_echoes(&mut newcomer, b"a freed slot");

    drop((clients, newcomer, leaving, fourth));
    let summary = server.stop();
    assert_eq!(summary.rejected, 1);
    assert_eq!(summary.connections, 4);
    assert_eq!(summary.peak_connections, 3);
}

/// The binary logs a warning naming the cap when it turns a client away.
#[test]
fn rejection_is_logged_as_a_warning() {
    let bin = Bin::serve(&["--max-connections", "1", "127.0.0.1:0"]);
    let mut first = connect(bin.tcp());
    assert_echoes(&mut first, b"in");
    let second = connect(bin.tcp());
    assert_closed_by_server(&second);
    assert!(bin.wait_for_stderr("max-connections 1 reached", IO_TIMEOUT), "log:\n{}", bin.stderr());
    assert!(bin.stderr().contains("WARN"), "not a warning:\n{}", bin.stderr());
    assert_echoes(&mut first, b"still served");
}

/// Out of descriptors (EMFILE) the server backs off, then serves the queued clients once fds free up.
#[test]
fn out_of_descriptors_backs_off_then_serves_the_queue() {
    let bin = Bin::serve(&["127.0.0.1:0"]);
    leave_descriptors(bin.pid(), 2);
    let start = std::time::Instant::now();
    let mut served: Vec<TcpStream> = (0..2).map(|_| connect(bin.tcp())).collect();
    for client in &mut served {
        assert_echoes(client, b"got a descriptor");
    }
    let mut queued: Vec<TcpStream> = (0..3).map(|_| connect(bin.tcp())).collect();
    assert!(bin.wait_for_stderr("out of resources", IO_TIMEOUT), "no EMFILE warning:\n{}", bin.stderr());
    for client in &mut queued {
        client.write_all(b"waiting").unwrap(); // sits in the kernel until we are accepted
    }
    for client in served.drain(..) {
        client.shutdown(Shutdown::Write).unwrap();
        assert_eq!((&client).read(&mut [0; 8]).unwrap(), 0);
    }
    // Each queued client in turn: accepted on a later retry, echoed, then it leaves and
    // frees its descriptor for the next.
    for client in &mut queued {
        assert_eq!(read_n(client, 7), b"waiting");
        client.shutdown(Shutdown::Write).unwrap();
        assert_eq!(client.read(&mut [0; 8]).unwrap(), 0);
    }
    // Retries are paced (100 ms apart): a spinning loop would log a warning per attempt.
    let log = bin.stderr();
    let warnings = log.matches("pausing accepts").count();
    let paced = (start.elapsed().as_millis() / 100) as usize + 5;
    assert!(warnings <= paced, "{warnings} accept warnings in {:?}: not backing off", start.elapsed());
}
