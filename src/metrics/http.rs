//! The HTTP side of `--metrics`: a small server for three GET paths, on threads of its own,
//! that nothing a client does can stall or grow without bound.
//!
//! Requests are parsed by `httparse` (hyper's parser). The server around it is ours, and
//! short, because its limits are the point:
//!
//! - one request per connection (`Connection: close`): scrapers and health checkers open a
//!   connection per request anyway;
//! - a request head over [`MAX_HEAD`] bytes is answered 431, a malformed one 400, and a
//!   client that has not sent a whole head within [`READ_LIMIT`] is answered 408; writes
//!   give up after [`WRITE_LIMIT`];
//! - each connection is handled on a short-lived thread, at most [`MAX_CLIENTS`] at once:
//!   past that a connection is answered 503 at once, so slow clients hold threads, not
//!   the health check behind them;
//! - an `accept` error never ends the server: it is sorted as every model sorts it
//!   ([`crate::net::classify_accept_error`]), and out of descriptors it pauses and retries.
//!
//! (`tiny_http` 0.12 was the obvious crate, but its accept thread ends at the first accept
//! error, EMFILE included, and it reads a header line without a bound and without a
//! timeout, on a thread per connection without a bound.)

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use log::debug;

use crate::net::{ACCEPT_BACKOFF, AcceptError, classify_accept_error};

/// The largest request head (request line and headers) read.
pub const MAX_HEAD: usize = 8 * 1024;
/// How long a client has to send its whole request head.
pub const READ_LIMIT: Duration = Duration::from_secs(2);
/// How long writing a response may take.
pub const WRITE_LIMIT: Duration = Duration::from_secs(2);
/// Connections handled at once; more are answered 503 without reading.
pub const MAX_CLIENTS: usize = 16;
/// Headers parsed per request; more are answered 431.
const MAX_HEADERS: usize = 32;

/// A response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// The `Content-Type`.
    pub content_type: &'static str,
    /// The body.
    pub body: Vec<u8>,
}

impl Reply {
    /// A plain-text response.
    pub fn text(status: u16, body: &str) -> Reply {
        Reply { status, content_type: "text/plain; charset=utf-8", body: body.as_bytes().to_vec() }
    }
}

/// What answers a GET: the reply for a path (`None`: 404).
pub type Routes = dyn Fn(&str) -> Option<Reply> + Send + Sync;

/// The running server. Dropping it stops accepting and waits for the accept thread (the
/// threads of connections still being answered end within their time limits).
#[derive(Debug)]
pub struct HttpServer {
    local_addr: SocketAddr,
    stopping: Arc<AtomicBool>,
    /// A second handle on the listening socket, to wake the accept thread.
    waker: TcpListener,
    thread: Option<JoinHandle<()>>,
}

impl HttpServer {
    /// Serve `routes` on `listener` (already bound: binding errors belong to the caller).
    pub fn start(listener: TcpListener, routes: Arc<Routes>) -> io::Result<HttpServer> {
        let local_addr = listener.local_addr()?;
        let waker = listener.try_clone()?;
        let stopping = Arc::new(AtomicBool::new(false));
        let stop = Arc::clone(&stopping);
        let thread = thread::Builder::new()
            .name("metrics".into())
            .spawn(move || accept_loop(&listener, &routes, &stop))?;
        Ok(HttpServer { local_addr, stopping, waker, thread: Some(thread) })
    }

    /// The bound address (the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stopping.store(true, Relaxed);
        // Linux: shutdown(SHUT_RD) on a listening socket makes a blocked accept return (EINVAL).
        if let Err(e) = socket2::SockRef::from(&self.waker).shutdown(Shutdown::Read) {
            debug!("metrics: waking the accept thread: {e}");
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join(); // it only accepts and spawns: it ends at once
        }
    }
}

fn accept_loop(listener: &TcpListener, routes: &Arc<Routes>, stopping: &AtomicBool) {
    let clients = Arc::new(AtomicUsize::new(0));
    while !stopping.load(Relaxed) {
        let (stream, peer) = match listener.accept() {
            Ok(accepted) => accepted,
            Err(_) if stopping.load(Relaxed) => return,
            Err(e) => match classify_accept_error(&e) {
                AcceptError::Interrupted | AcceptError::ConnectionGone => continue,
                AcceptError::OutOfResources | AcceptError::Unexpected => {
                    debug!("metrics: accept: {e}: pausing {ACCEPT_BACKOFF:?}");
                    thread::sleep(ACCEPT_BACKOFF);
                    continue;
                }
            },
        };
        if clients.fetch_add(1, Relaxed) >= MAX_CLIENTS {
            clients.fetch_sub(1, Relaxed);
            busy(stream, peer);
            continue;
        }
        let (routes, done) = (Arc::clone(routes), Arc::clone(&clients));
        let spawned = thread::Builder::new().name("metrics-client".into()).spawn(move || {
            answer(stream, &*routes);
            done.fetch_sub(1, Relaxed);
        });
        if let Err(e) = spawned {
            clients.fetch_sub(1, Relaxed); // the closure (and the connection) were dropped
            debug!("metrics: no thread for {peer}: {e}");
        }
    }
}

/// Too many clients at once: answer 503 without reading, without waiting.
fn busy(mut stream: TcpStream, peer: SocketAddr) {
    debug!("metrics: {peer}: {MAX_CLIENTS} clients already, answering 503");
    if stream.set_nonblocking(true).is_ok() {
        let _ = stream.write(&head(&Reply::text(503, "busy\n"), true)); // best effort
    }
}

/// Read one request from `stream` and answer it.
fn answer(mut stream: TcpStream, routes: &Routes) {
    let reply = match read_request(&mut stream, READ_LIMIT) {
        Ok(request) => respond(&request, routes),
        Err(Refusal::Gone) => return,
        Err(Refusal::Reply(reply)) => (reply, true),
    };
    let (reply, with_body) = reply;
    let sent = stream.set_write_timeout(Some(WRITE_LIMIT)).and_then(|()| {
        stream.write_all(&head(&reply, with_body))?;
        if with_body { stream.write_all(&reply.body) } else { Ok(()) }
    });
    if let Err(e) = sent {
        debug!("metrics: writing a {} response: {e}", reply.status);
    }
    let _ = stream.shutdown(Shutdown::Write); // then close: the response is complete
}

/// A request the server will answer.
#[derive(Debug, PartialEq, Eq)]
struct Request {
    method: String,
    path: String,
}

/// Why no request was read.
#[derive(Debug, PartialEq, Eq)]
enum Refusal {
    /// The client went away, or an error that leaves nobody to answer.
    Gone,
    /// Answer this, then close.
    Reply(Reply),
}

/// The reply to `request`, and whether to send its body (not for HEAD).
fn respond(request: &Request, routes: &Routes) -> (Reply, bool) {
    let path = request.path.split('?').next().unwrap_or_default();
    match request.method.as_str() {
        "GET" | "HEAD" => {
            let reply = routes(path).unwrap_or_else(|| Reply::text(404, "not found\n"));
            (reply, request.method == "GET")
        }
        _ => (Reply::text(405, "method not allowed\n"), true),
    }
}

/// The status line and headers of `reply`.
fn head(reply: &Reply, with_body: bool) -> Vec<u8> {
    let allow = if reply.status == 405 { "Allow: GET, HEAD\r\n" } else { "" };
    let length = if with_body { reply.body.len() } else { 0 };
    format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {length}\r\n{allow}Connection: close\r\n\r\n",
        reply.status,
        reason(reply.status),
        reply.content_type,
    )
    .into_bytes()
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "",
    }
}

/// Read a request head within `limit` ([`READ_LIMIT`]) and [`MAX_HEAD`] bytes.
fn read_request(stream: &mut impl ReadWithTimeout, limit: Duration) -> Result<Request, Refusal> {
    let deadline = Instant::now() + limit;
    let mut buf = vec![0u8; MAX_HEAD];
    let mut len = 0;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Refusal::Reply(Reply::text(408, "request head not received in time\n")));
        }
        stream.set_timeout(left).map_err(|_| Refusal::Gone)?;
        match stream.read(&mut buf[len..]) {
            Ok(0) => return Err(Refusal::Gone),
            Ok(n) => len += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue, // a signal; read again
            // The timeout: WouldBlock or TimedOut, depending on the platform. The loop's
            // deadline check answers it.
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(_) => return Err(Refusal::Gone),
        }
        if let Some(request) = parse(&buf[..len])? {
            return Ok(request);
        }
        if len == buf.len() {
            return Err(Refusal::Reply(Reply::text(431, "request head too large\n")));
        }
    }
}

/// A whole request head in `bytes` (`None`: not whole yet).
fn parse(bytes: &[u8]) -> Result<Option<Request>, Refusal> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(bytes) {
        Ok(httparse::Status::Complete(_)) => Ok(Some(Request {
            method: request.method.unwrap_or_default().to_string(),
            path: request.path.unwrap_or_default().to_string(),
        })),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            Err(Refusal::Reply(Reply::text(431, "too many request headers\n")))
        }
        Err(e) => Err(Refusal::Reply(Reply::text(400, &format!("bad request: {e}\n")))),
    }
}

/// A socket whose reads can be given a time limit (a trait, so the reading is tested
/// without a socket).
trait ReadWithTimeout: Read {
    fn set_timeout(&mut self, limit: Duration) -> io::Result<()>;
}

impl ReadWithTimeout for TcpStream {
    fn set_timeout(&mut self, limit: Duration) -> io::Result<()> {
        self.set_read_timeout(Some(limit))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads served from a list of chunks, then a timeout, as a slow client gives them.
    struct Chunks(Vec<Vec<u8>>);

    impl Read for Chunks {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.0.is_empty() {
                thread::sleep(Duration::from_millis(50));
                return Err(ErrorKind::WouldBlock.into());
            }
            let chunk = self.0.remove(0);
            let n = chunk.len().min(buf.len());
            buf[..n].copy_from_slice(&chunk[..n]);
            if n < chunk.len() {
                self.0.insert(0, chunk[n..].to_vec());
            }
            Ok(n)
        }
    }

    impl ReadWithTimeout for Chunks {
        fn set_timeout(&mut self, _: Duration) -> io::Result<()> {
            Ok(())
        }
    }

    const LIMIT: Duration = Duration::from_millis(200);

    fn read(chunks: &[&[u8]]) -> Result<Request, Refusal> {
        read_request(&mut Chunks(chunks.iter().map(|c| c.to_vec()).collect()), LIMIT)
    }

    fn status(result: Result<Request, Refusal>) -> u16 {
        match result {
            Err(Refusal::Reply(reply)) => reply.status,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn a_head_split_over_reads_is_read_whole() {
        let request = read(&[b"GET /met", b"rics HTTP/1.1\r\nHost: x\r", b"\n\r\n"]).unwrap();
        assert_eq!(request, Request { method: "GET".into(), path: "/metrics".into() });
    }

    #[test]
    fn malformed_oversized_and_slow_heads_are_refused() {
        assert_eq!(status(read(&[b"GET /metrics HTTP/1.1\r\nBad Header\r\n\r\n"])), 400);
        assert_eq!(status(read(&[b"\x00\x01\x02 / HTTP/1.1\r\n\r\n"])), 400);
        let endless = [&b"GET / HTTP/1.1\r\nX: "[..], &vec![b'a'; MAX_HEAD]].concat();
        assert_eq!(status(read(&[&endless])), 431);
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X{i}: y\r\n")).collect();
        assert_eq!(status(read(&[format!("GET / HTTP/1.1\r\n{many}\r\n").as_bytes()])), 431);
        let started = Instant::now();
        assert_eq!(status(read(&[b"GET /metrics HTTP/1.1\r\n"])), 408);
        assert!(started.elapsed() >= LIMIT);
        assert_eq!(
            read(&[]).unwrap_err(),
            Refusal::Reply(Reply::text(408, "request head not received in time\n"))
        );
    }

    #[test]
    fn routes_methods_and_unknown_paths() {
        let routes = |path: &str| (path == "/livez").then(|| Reply::text(200, "ok\n"));
        let request = |method: &str, path: &str| Request { method: method.into(), path: path.into() };
        assert_eq!(respond(&request("GET", "/livez"), &routes), (Reply::text(200, "ok\n"), true));
        assert_eq!(respond(&request("GET", "/livez?verbose"), &routes).0.status, 200);
        assert_eq!(respond(&request("HEAD", "/livez"), &routes), (Reply::text(200, "ok\n"), false));
        assert_eq!(respond(&request("GET", "/other"), &routes).0.status, 404);
        assert_eq!(respond(&request("POST", "/livez"), &routes).0.status, 405);
        let head = String::from_utf8(head(&Reply::text(405, "x"), true)).unwrap();
        assert!(
            head.starts_with("HTTP/1.1 405 Method Not Allowed\r\n") && head.contains("Allow: GET, HEAD\r\n")
        );
    }
}
