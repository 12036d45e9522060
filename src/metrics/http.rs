//! The HTTP side of `--metrics`: a small server for a few GET paths, on a thread of its
//! own, that nothing a client does can stall or grow without bound.
//!
//! Requests are parsed by `httparse` (hyper's parser). Around it is a small mio loop of
//! our own, the same shape as the echo loop, because its limits are the point:
//!
//! - one request per connection (`Connection: close`): scrapers and health checkers open a
//!   connection per request anyway;
//! - a request head over [`MAX_HEAD`] bytes is answered 431, a malformed one 400; a client
//!   gets [`TIME_LIMIT`] to send its head, and again to take the response (408, or closed);
//! - a slow client costs a slab entry and its head so far, never a thread: the others are
//!   answered meanwhile. Past [`MAX_CLIENTS`] at once, a new connection is closed at once;
//! - an `accept` error never ends the server: it is handled as every model handles it
//!   ([`AcceptBackoff`]): out of descriptors, accepting pauses and is retried.
//!
//! (`tiny_http` 0.12 was the obvious crate, but its accept thread ends at the first accept
//! error, EMFILE included, it reads a header line without a bound or a timeout, and it
//! spends a thread per connection without a bound.)

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use log::debug;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;

use crate::net::{AcceptBackoff, AfterAcceptError, interrupted, would_block};

/// The largest request head (request line and headers) read.
pub const MAX_HEAD: usize = 8 * 1024;
/// How long a client has to send its request head, and then to take the response.
pub const TIME_LIMIT: Duration = Duration::from_secs(2);
/// Connections served at once; one more is closed as soon as it is accepted.
pub const MAX_CLIENTS: usize = 256;
/// Headers parsed per request; more are answered 431.
const MAX_HEADERS: usize = 32;

const LISTENER: Token = Token(usize::MAX - 1);
const WAKER: Token = Token(usize::MAX);

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

/// The running server. Dropping it stops it (connections still open are closed).
#[derive(Debug)]
pub struct HttpServer {
    stopping: Arc<AtomicBool>,
    waker: Arc<Waker>,
    thread: Option<JoinHandle<()>>,
}

impl HttpServer {
    /// Serve `routes` on `listener` (bound already: binding errors are the caller's to name).
    pub fn start(listener: std::net::TcpListener, routes: Arc<Routes>) -> io::Result<HttpServer> {
        listener.set_nonblocking(true)?;
        let mut listener = TcpListener::from_std(listener);
        let poll = Poll::new()?;
        poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let stopping = Arc::new(AtomicBool::new(false));
        let endpoint =
            Endpoint { poll, listener, clients: Slab::new(), routes, backoff: AcceptBackoff::default() };
        let stop = Arc::clone(&stopping);
        let thread = thread::Builder::new().name("metrics".into()).spawn(move || endpoint.run(&stop))?;
        Ok(HttpServer { stopping, waker, thread: Some(thread) })
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stopping.store(true, Relaxed);
        if let Err(e) = self.waker.wake() {
            debug!("metrics: waking the endpoint to stop: {e}");
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join(); // it never blocks but in poll, which the waker ended
        }
    }
}

/// The endpoint's loop and what it holds.
struct Endpoint {
    poll: Poll,
    listener: TcpListener,
    /// Connections being answered; slab key == token value.
    clients: Slab<Client>,
    routes: Arc<Routes>,
    /// Accept errors: the pause after running out of descriptors, and its log.
    backoff: AcceptBackoff,
}

/// One connection: reading its head, then writing its response.
struct Client {
    stream: TcpStream,
    /// The request head so far (at most [`MAX_HEAD`] bytes); unused once a response is due.
    head: Vec<u8>,
    /// The response, once known, and how much of it the kernel has taken.
    response: Option<(Vec<u8>, usize)>,
    /// The client must have sent its head (or taken its response) by then.
    deadline: Instant,
}

impl Endpoint {
    fn run(mut self, stopping: &AtomicBool) {
        let mut events = Events::with_capacity(256);
        loop {
            let now = Instant::now();
            let timeout = self.next_deadline().map(|at| at.saturating_duration_since(now));
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if interrupted(&e) {
                    continue; // a signal; poll again
                }
                log::error!("metrics: poll failed, the endpoint stops: {e}");
                return;
            }
            for event in &events {
                match event.token() {
                    WAKER if stopping.load(Relaxed) => return,
                    WAKER => {}
                    LISTENER => self.accept_all(),
                    Token(key) => self.serve(key),
                }
            }
            self.expire(Instant::now());
        }
    }

    /// The next client deadline, or when accepting resumes.
    fn next_deadline(&self) -> Option<Instant> {
        self.clients.iter().map(|(_, c)| c.deadline).chain(self.backoff.paused_until()).min()
    }

    /// Accept until the queue is empty (edge-triggered), or pause when out of descriptors.
    fn accept_all(&mut self) {
        if self.backoff.is_paused() {
            return; // `expire` resumes accepting at the end of the pause
        }
        loop {
            let (mut stream, peer) = match self.listener.accept() {
                Ok(accepted) => accepted,
                Err(e) if would_block(&e) => return, // queue empty
                Err(e) => match self.backoff.failed(&e, Instant::now()) {
                    AfterAcceptError::Retry | AfterAcceptError::Skip => continue,
                    AfterAcceptError::Pause => return,
                },
            };
            self.backoff.accepted(Instant::now());
            if self.clients.len() >= MAX_CLIENTS {
                debug!("metrics: {peer}: {MAX_CLIENTS} clients already, closing");
                continue; // dropped: closed
            }
            let entry = self.clients.vacant_entry();
            if let Err(e) = self.poll.registry().register(&mut stream, Token(entry.key()), Interest::READABLE)
            {
                debug!("metrics: {peer}: register: {e}");
                continue;
            }
            let deadline = Instant::now() + TIME_LIMIT;
            entry.insert(Client { stream, head: Vec::new(), response: None, deadline });
        }
    }

    /// Read what `key`'s client sent, or write what it is owed; close it when done.
    fn serve(&mut self, key: usize) {
        let Some(client) = self.clients.get_mut(key) else { return }; // closed this turn
        if client.response.is_none() {
            match client.read_head() {
                Ok(None) => return, // more to come
                Ok(Some(outcome)) => {
                    let response = match outcome {
                        Ok(request) => respond(&request, &*self.routes),
                        Err(refusal) => (refusal, true),
                    };
                    client.owe(&response.0, response.1);
                }
                Err(()) => return self.close(key),
            }
        }
        match client.write_response() {
            Ok(true) => self.close(key),
            Ok(false) => {
                // The kernel's buffer is full: come back when it has room.
                let token = Token(key);
                if self.poll.registry().reregister(&mut client.stream, token, Interest::WRITABLE).is_err() {
                    self.close(key);
                }
            }
            Err(()) => self.close(key),
        }
    }

    /// Close clients past their deadline (408 to one still sending its head, best effort),
    /// and resume accepting after a pause.
    fn expire(&mut self, now: Instant) {
        let late: Vec<usize> =
            self.clients.iter().filter(|(_, c)| c.deadline <= now).map(|(key, _)| key).collect();
        for key in late {
            if let Some(client) = self.clients.get_mut(key)
                && client.response.is_none()
            {
                client.owe(&Reply::text(408, "request head not received in time\n"), true);
                let _ = client.write_response(); // once, without waiting
            }
            self.close(key);
        }
        if self.backoff.resume_due(now) {
            self.accept_all(); // what queued meanwhile: no new event will announce it
        }
    }

    fn close(&mut self, key: usize) {
        if let Some(mut client) = self.clients.try_remove(key) {
            let _ = self.poll.registry().deregister(&mut client.stream);
            let _ = client.stream.shutdown(Shutdown::Write); // then dropped: closed
        }
    }
}

impl Client {
    /// Read until `WouldBlock`. `Ok(Some(..))`: the request, or the refusal to send;
    /// `Ok(None)`: not whole yet; `Err`: the client is gone (or failed): close.
    fn read_head(&mut self) -> Result<Option<Result<Request, Reply>>, ()> {
        let mut chunk = [0u8; 1024];
        loop {
            let room = (MAX_HEAD - self.head.len()).min(chunk.len());
            match self.stream.read(&mut chunk[..room]) {
                Ok(0) => return Err(()),
                Ok(n) => {
                    self.head.extend_from_slice(&chunk[..n]);
                    if let Some(outcome) = parse(&self.head) {
                        return Ok(Some(outcome));
                    }
                    if self.head.len() == MAX_HEAD {
                        return Ok(Some(Err(Reply::text(431, "request head too large\n"))));
                    }
                }
                Err(e) if would_block(&e) => return Ok(None), // drained
                Err(e) if interrupted(&e) => {}               // a signal; read again
                Err(_) => return Err(()),
            }
        }
    }

    /// From now on the client is owed `reply` (its body too unless a HEAD asked).
    fn owe(&mut self, reply: &Reply, with_body: bool) {
        let mut bytes = head(reply);
        if with_body {
            bytes.extend_from_slice(&reply.body);
        }
        self.response = Some((bytes, 0));
        self.head = Vec::new();
        self.deadline = Instant::now() + TIME_LIMIT;
    }

    /// Write until done (`Ok(true)`) or the kernel's buffer is full (`Ok(false)`).
    fn write_response(&mut self) -> Result<bool, ()> {
        let Some((bytes, written)) = &mut self.response else { return Err(()) };
        while *written < bytes.len() {
            match self.stream.write(&bytes[*written..]) {
                Ok(0) => return Err(()),
                Ok(n) => *written += n,
                Err(e) if would_block(&e) => return Ok(false), // WRITABLE will come
                Err(e) if interrupted(&e) => {}                // a signal; write again
                Err(_) => return Err(()),
            }
        }
        Ok(true)
    }
}

/// A request the server will answer.
#[derive(Debug, PartialEq, Eq)]
struct Request {
    method: String,
    path: String,
}

/// A whole request head in `bytes` (`None`: not whole yet), or the refusal to send.
fn parse(bytes: &[u8]) -> Option<Result<Request, Reply>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(bytes) {
        Ok(httparse::Status::Complete(_)) => Some(Ok(Request {
            method: request.method.unwrap_or_default().to_string(),
            path: request.path.unwrap_or_default().to_string(),
        })),
        Ok(httparse::Status::Partial) => None,
        Err(httparse::Error::TooManyHeaders) => Some(Err(Reply::text(431, "too many request headers\n"))),
        Err(e) => Some(Err(Reply::text(400, &format!("bad request: {e}\n")))),
    }
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

/// The status line and headers of `reply` (for a HEAD too: the length a GET would get).
fn head(reply: &Reply) -> Vec<u8> {
    let allow = if reply.status == 405 { "Allow: GET, HEAD\r\n" } else { "" };
    format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{allow}Connection: close\r\n\r\n",
        reply.status,
        reason(reply.status),
        reply.content_type,
        reply.body.len(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn status(outcome: Option<Result<Request, Reply>>) -> u16 {
        match outcome {
            Some(Err(reply)) => reply.status,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn a_head_is_whole_only_at_its_blank_line() {
        assert_eq!(parse(b"GET /met"), None);
        assert_eq!(parse(b"GET /metrics HTTP/1.1\r\nHost: x\r"), None);
        let request = parse(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap().unwrap();
        assert_eq!(request, Request { method: "GET".into(), path: "/metrics".into() });
    }

    #[test]
    fn malformed_heads_are_refused() {
        assert_eq!(status(parse(b"GET /metrics HTTP/1.1\r\nBad Header\r\n\r\n")), 400);
        assert_eq!(status(parse(b"\x00\x01\x02 / HTTP/1.1\r\n\r\n")), 400);
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X{i}: y\r\n")).collect();
        assert_eq!(status(parse(format!("GET / HTTP/1.1\r\n{many}\r\n").as_bytes())), 431);
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
        let head = String::from_utf8(head(&Reply::text(405, "x"))).unwrap();
        assert!(
            head.starts_with("HTTP/1.1 405 Method Not Allowed\r\n") && head.contains("Allow: GET, HEAD\r\n")
        );
    }

    /// A server on 127.0.0.1:0 answering /livez, and its address.
    fn server() -> (HttpServer, SocketAddr) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let routes: Arc<Routes> = Arc::new(|path: &str| (path == "/livez").then(|| Reply::text(200, "ok\n")));
        (HttpServer::start(listener, routes).unwrap(), addr)
    }

    /// Send `request` on a new connection and read until the server closes it.
    fn exchange(addr: SocketAddr, request: &[u8]) -> String {
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        stream.write_all(request).unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
    }

    /// Many clients that send nothing, and one that sends a head without end, hold up
    /// nobody: a GET beside them is answered at once.
    #[test]
    fn slow_and_endless_clients_stall_nothing() {
        let (_server, addr) = server();
        let idle: Vec<_> = (0..50).map(|_| std::net::TcpStream::connect(addr).unwrap()).collect();
        let mut endless = std::net::TcpStream::connect(addr).unwrap();
        endless.write_all(b"GET / HTTP/1.1\r\nX: ").unwrap();
        let started = Instant::now();
        let response = exchange(addr, b"GET /livez HTTP/1.1\r\n\r\n");
        assert!(
            response.starts_with("HTTP/1.1 200 OK\r\n") && response.ends_with("\r\n\r\nok\n"),
            "{response}"
        );
        assert!(started.elapsed() < TIME_LIMIT, "answered after {:?}", started.elapsed());
        // The endless head is refused at MAX_HEAD bytes, long before its deadline.
        let _ = endless.write_all(&vec![b'a'; MAX_HEAD]);
        endless.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut answer = String::new();
        let _ = endless.read_to_string(&mut answer);
        assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
        drop(idle);
    }

    /// A client that never finishes its head is answered 408 and closed at its deadline.
    #[test]
    fn a_silent_client_is_closed_at_its_deadline() {
        let (_server, addr) = server();
        let started = Instant::now();
        let response = exchange(addr, b"GET /livez HTTP/1.1\r\n");
        assert!(response.starts_with("HTTP/1.1 408 "), "{response}");
        assert!(started.elapsed() >= TIME_LIMIT && started.elapsed() < TIME_LIMIT * 3);
        assert!(exchange(addr, b"GET /nope HTTP/1.0\r\n\r\n").starts_with("HTTP/1.1 404 "));
    }
}
