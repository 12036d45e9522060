//! UDP echo on io_uring (`--model io-uring udp:ADDR`): one multishot `recvmsg` brings every
//! datagram, each into a buffer of the provided-buffer ring, and each reply is a `sendmsg`
//! straight out of that buffer.
//!
//! ```text
//!   arm: multishot recvmsg on the socket (buffer group), a poll on the shutdown eventfd
//!   loop {
//!       io_uring_enter(submit everything queued, wait for 1 completion)
//!       Recv  -> [header | sender | control messages | payload] in a provided buffer:
//!                count it; a reserved source port: drop it, give the buffer back;
//!                else sendmsg the payload back to the sender, out of the buffer
//!       Send  -> give the buffer back, count the reply (echoed, or failed)
//!       recv's last completion (no MORE flag: out of buffers, an error) -> arm it again
//!       Wake  -> cancel the recv; replies in flight finish within the grace period
//!   }
//! ```
//!
//! What the event loop's echo does, semantics included (every datagram counted, guarded and
//! answered one by one; a train the kernel kept whole with `UDP_GRO` goes back as one send
//! with `UDP_SEGMENT`), with one difference in how replies are bounded: a reply holds its
//! buffer until the kernel has taken it, so replies in flight are at most `--uring-buffers`.
//! When every buffer is out the multishot recv ends (`ENOBUFS`) and is armed again once a
//! reply gives one back; meanwhile datagrams wait in the socket's receive buffer, and when
//! that is full the kernel drops them (the event loop instead queues refused replies and
//! drops the oldest it queued, counting them). The receive buffer is the queue here.

use std::io;
use std::mem;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use io_uring::cqueue;
use io_uring::types::RecvMsgOut;
use log::{debug, info, trace, warn};
use slab::Slab;
use socket2::{SockAddr, SockAddrStorage};

use super::buffers::BufRing;
use super::op::Op;
use super::ring::Ring;
use super::{DRAIN_LIMIT, WakeFd};
use crate::config::ServerConfig;
use crate::net::{Cmsg, Message, Offload, gro_segment_of, write_segment_cmsg};
use crate::shutdown::ShutdownHandle;
use crate::stats::{Datagrams, IoTally, Stats};

/// What every provided buffer holds besides the payload: the `io_uring_recvmsg_out` header
/// (16 bytes), the sender's address (a `sockaddr_storage`) and the control messages (room for
/// `UDP_GRO`), rounded up.
const RECVMSG_OVERHEAD: usize = 512;

/// The payload room of a buffer: the largest datagram (65,507 bytes over IPv4) or GRO train.
const PAYLOAD: usize = 64 * 1024;

/// The user_data key of the one recv (the socket is the only "connection").
const RECV: Op = Op::Recv(0);

/// A reply handed to the kernel, and everything its `sendmsg` points at. Boxed, so it stays
/// put while the kernel reads it; the payload stays in provided buffer `bid`, which goes
/// back to the ring only when this send completes.
struct Reply {
    hdr: libc::msghdr,
    iov: libc::iovec,
    to: SockAddr,
    control: Cmsg,
    /// The buffer the payload lies in, if this reply gives it back when done.
    bid: Option<u16>,
    /// Datagrams in it (more than one for a train) and their bytes, for the counts.
    datagrams: usize,
    bytes: usize,
}

// SAFETY: a reply's pointers lead into itself (its box) and into a provided buffer it holds
// for its send; whichever thread owns the echo owns them both, and nothing else points there.
unsafe impl Send for Reply {}

/// The `msghdr` the multishot recvmsg reads: no pointers, only the room to keep for the
/// sender and the control messages (`msg_namelen`, `msg_controllen`).
struct RecvTemplate(libc::msghdr);

// SAFETY: its pointer fields are all null; it is plain data.
unsafe impl Send for RecvTemplate {}

/// The io-uring UDP echo: made (ring and buffers allocated) when the server binds.
pub(crate) struct UringUdp {
    ring: Ring,
    socket: UdpSocket,
    /// What the multishot recvmsg reads to know how much room to keep in each buffer for the
    /// sender and the control messages. It must stay put while the recv is armed: boxed.
    template: Box<RecvTemplate>,
    recv_armed: bool,
    /// Replies in the kernel, by the key their send's `user_data` carries.
    replies: Slab<Box<Reply>>,
    /// Trains go back as one message (`UDP_SEGMENT`).
    gso: bool,
    wake: WakeFd,
    shutdown: ShutdownHandle,
    grace: Duration,
    /// When stopping: until when replies in flight may finish, and whether they are being
    /// cancelled already.
    stopping: Option<(Instant, bool)>,
    completions: Vec<cqueue::Entry>,
    stats: Arc<Stats>,
    /// This turn's reads and bytes, and the datagrams echoed or dropped, published per turn.
    tally: IoTally,
    datagrams: Datagrams,
}

impl UringUdp {
    /// Allocate the ring and its receive buffers (`--uring-buffers` of 64 KiB and a little
    /// more: room for any datagram, whatever `--uring-buffer-size` says), and turn on GRO and
    /// GSO where `--udp-offload` asks and the kernel has them.
    pub(crate) fn new(
        socket: UdpSocket,
        config: &ServerConfig,
        shutdown: &ShutdownHandle,
        stats: Arc<Stats>,
    ) -> io::Result<UringUdp> {
        let count =
            u16::try_from(config.uring_buffers).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let ring = Ring::new(BufRing::new(count, PAYLOAD + RECVMSG_OVERHEAD)?)?;
        let wanted = if config.udp_offload { Offload::BOTH } else { Offload::NONE };
        let offload = Offload::enable(&socket, wanted);
        // SAFETY: `msghdr` is plain data; all zeroes is a valid (empty) value.
        let mut template = Box::new(RecvTemplate(unsafe { mem::zeroed() }));
        template.0.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        template.0.msg_controllen = if offload.gro { mem::size_of::<Cmsg>() } else { 0 };
        Ok(UringUdp {
            ring,
            socket,
            template,
            recv_armed: false,
            replies: Slab::new(),
            gso: offload.gso,
            wake: WakeFd::new(shutdown)?,
            shutdown: shutdown.clone(),
            grace: config.shutdown_grace,
            stopping: None,
            completions: Vec::new(),
            stats,
            tally: IoTally::default(),
            datagrams: Datagrams::default(),
        })
    }

    /// The real bound address.
    pub(crate) fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Echo on this thread until a shutdown request has been carried out.
    pub(crate) fn run(mut self) -> io::Result<()> {
        self.ring.enable()?;
        self.ring.poll_readable(self.wake.raw_fd(), Op::Wake)?;
        self.arm_recv()?;
        debug!("io_uring UDP echo running");
        loop {
            self.ring.enter(self.wait_timeout(Instant::now()))?;
            let mut completions = mem::take(&mut self.completions);
            self.ring.reap(&mut completions);
            for cqe in &completions {
                self.dispatch(cqe)?;
            }
            self.completions = completions;
            self.stats.publish(&mut self.tally);
            self.stats.publish_datagrams(&mut self.datagrams);
            if self.done(Instant::now())? {
                return Ok(());
            }
        }
    }

    fn dispatch(&mut self, cqe: &cqueue::Entry) -> io::Result<()> {
        let (result, flags) = (cqe.result(), cqe.flags());
        match Op::decode(cqe.user_data()) {
            Some(Op::Recv(_)) => self.on_recv(result, flags),
            Some(Op::Send(key)) => self.on_send(key, result),
            Some(Op::Wake) => self.begin_shutdown(),
            Some(Op::Cancel) => Ok(()), // its target reports for itself
            Some(Op::Accept) | None => {
                warn!("io_uring: unexpected completion {:#x}", cqe.user_data());
                Ok(())
            }
        }
    }

    /// Arm the multishot recvmsg, unless it is armed, or we are stopping.
    fn arm_recv(&mut self) -> io::Result<()> {
        if self.recv_armed || self.stopping.is_some() {
            return Ok(());
        }
        // SAFETY: the template is boxed and lives as long as `self`, which outlives every
        // request (the loop waits for all to complete, or leaks the ring's memory).
        unsafe { self.ring.recvmsg_multishot(self.socket.as_raw_fd(), &self.template.0, RECV)? };
        self.recv_armed = true;
        Ok(())
    }

    /// A datagram (or a train) arrived, or the multishot recv ended.
    fn on_recv(&mut self, result: i32, flags: u32) -> io::Result<()> {
        let more = cqueue::more(flags);
        let bid = cqueue::buffer_select(flags);
        if result < 0 {
            match -result {
                libc::ENOBUFS => trace!("udp recv: every buffer is out; armed again when one is back"),
                libc::ECANCELED => trace!("udp recv cancelled"),
                libc::EINVAL | libc::EOPNOTSUPP => {
                    return Err(io::Error::new(
                        io::ErrorKind::Unsupported,
                        "io_uring: this kernel refuses a multishot recvmsg (Linux 6.0 or later has it)",
                    ));
                }
                errno => debug!("udp recvmsg: {}", io::Error::from_raw_os_error(errno)), // an ICMP report, say
            }
        } else if let Some(bid) = bid {
            self.received(bid, result as usize)?;
        }
        if more {
            return Ok(());
        }
        self.recv_armed = false;
        if -result == libc::ENOBUFS && !self.replies.is_empty() {
            return Ok(()); // out of buffers: the next reply to complete gives one back, and arms it
        }
        self.arm_recv()
    }

    /// What a completion left in buffer `bid` (`len` bytes): count, guard, answer.
    fn received(&mut self, bid: u16, len: usize) -> io::Result<()> {
        let buffer = self.ring.buffers.data(bid, len);
        let Ok(out) = RecvMsgOut::parse(buffer, &self.template.0) else {
            debug!("udp: a recvmsg result too short to parse: dropped");
            self.ring.buffers.provide(bid);
            return Ok(());
        };
        let payload = out.payload_data();
        let from = sender(out.name_data(), out.incoming_name_len());
        if out.is_payload_truncated() || from.is_none() {
            debug!("udp: dropped a truncated message of {} bytes", out.incoming_payload_len());
            self.ring.buffers.provide(bid);
            return Ok(());
        }
        let from = from.unwrap_or_else(|| SockAddr::from(SocketAddr::from(([0, 0, 0, 0], 0))));
        let segment = gro_segment_of(out.control_data()).unwrap_or(payload.len());
        let message = Message { peer: &from, data: payload, segment };
        let (datagrams, bytes) = (message.count(), payload.len());
        trace!("udp recv n={bytes} datagrams={datagrams} from={:?}", message.peer_addr());
        self.tally.reads += datagrams as u64;
        self.tally.bytes_read += bytes as u64;
        if message.sent_from_reserved_port() {
            if let Some(addr) = message.peer_addr() {
                let port = addr.port();
                let what =
                    if datagrams == 1 { "a datagram".to_string() } else { format!("{datagrams} datagrams") };
                debug!("udp: dropped {what} from {addr}: source port {port} is never answered");
            }
            self.datagrams.dropped_reserved_port += datagrams as u64;
            self.tally.bytes_unsent += bytes as u64;
            self.ring.buffers.provide(bid);
            return Ok(());
        }
        let replies = if message.is_train() && !self.gso {
            // The kernel cannot split it for us: one sendmsg per datagram, all out of the
            // same buffer, which goes back with the last of them.
            let last = datagrams - 1;
            let each = message.datagrams().enumerate();
            each.map(|(i, datagram)| Reply::new(from.clone(), datagram, None, (i == last).then_some(bid), 1))
                .collect()
        } else {
            let train = message.is_train().then_some(segment as u16); // GRO sizes are u16s
            vec![Reply::new(from.clone(), payload, train, Some(bid), datagrams)]
        };
        replies.into_iter().try_for_each(|reply| self.send(reply))
    }

    /// Hand `reply` to the kernel.
    fn send(&mut self, reply: Box<Reply>) -> io::Result<()> {
        let entry = self.replies.vacant_entry();
        let key = entry.key();
        let reply = entry.insert(reply);
        // SAFETY: the reply is boxed in the slab (its contents never move), removed only when
        // this send completes; its payload lies in a provided buffer that goes back to the
        // ring only then too (by the last reply holding it).
        unsafe { self.ring.sendmsg(self.socket.as_raw_fd(), &reply.hdr, Op::Send(key)) }
    }

    /// A reply's send completed: give its buffer back, count it.
    fn on_send(&mut self, key: usize, result: i32) -> io::Result<()> {
        let Some(reply) = self.replies.try_remove(key) else {
            warn!("io_uring: a send completion for no reply ({key})");
            return Ok(());
        };
        if let Some(bid) = reply.bid {
            self.ring.buffers.provide(bid);
        }
        if result >= 0 {
            trace!("udp send n={} datagrams={}", reply.bytes, reply.datagrams);
            self.datagrams.echoed += reply.datagrams as u64;
            self.tally.bytes_echoed += reply.bytes as u64;
        } else {
            let e = io::Error::from_raw_os_error(-result);
            debug!("udp sendmsg to {:?}: {e}: {} replies dropped", reply.to.as_socket(), reply.datagrams);
            self.datagrams.dropped_send_failed += reply.datagrams as u64;
            self.tally.bytes_unsent += reply.bytes as u64;
        }
        self.arm_recv() // a buffer is back: if the recv had run dry, it may go on
    }

    /// Until the grace deadline while stopping; else for a completion.
    fn wait_timeout(&self, now: Instant) -> Option<Duration> {
        self.stopping.map(|(until, _)| until.saturating_duration_since(now))
    }

    /// The eventfd was written: stop receiving; replies in flight may finish.
    fn begin_shutdown(&mut self) -> io::Result<()> {
        if !self.shutdown.is_requested() || self.stopping.is_some() {
            return Ok(());
        }
        info!(
            "shutting down: {} replies in flight, finishing them for up to {:?}",
            self.replies.len(),
            self.grace
        );
        self.stopping = Some((Instant::now() + self.grace, false));
        if self.recv_armed {
            self.ring.cancel(RECV)?;
        }
        Ok(())
    }

    /// Stopping, and the kernel holds nothing of ours (the eventfd poll aside); at the grace
    /// deadline, cancel what is left, and give it [`DRAIN_LIMIT`] more.
    fn done(&mut self, now: Instant) -> io::Result<bool> {
        let Some((until, cancelled)) = self.stopping else { return Ok(false) };
        // The poll on the eventfd completed when it woke us; nothing else is ours but the
        // recv and the replies.
        if !self.recv_armed && self.replies.is_empty() {
            return Ok(true);
        }
        if now < until {
            return Ok(false);
        }
        if cancelled {
            warn!("io_uring: {} replies not completed {DRAIN_LIMIT:?} after cancelling", self.replies.len());
            mem::forget(mem::take(&mut self.replies)); // the kernel may still read them
            return Ok(true);
        }
        warn!("grace period over: cancelling {} replies not yet sent", self.replies.len());
        self.ring.cancel_fd(self.socket.as_raw_fd())?;
        self.stopping = Some((now + DRAIN_LIMIT, true));
        Ok(false)
    }
}

impl Drop for UringUdp {
    /// After an error: replies may still be in flight; leak them rather than free memory the
    /// kernel may read.
    fn drop(&mut self) {
        if !self.replies.is_empty() {
            mem::forget(mem::take(&mut self.replies));
        }
    }
}

impl Reply {
    /// A reply of `payload` (in a provided buffer) to `to`, a train the kernel splits by
    /// `segment` if given, giving buffer `bid` back when done if given. Boxed first, then
    /// its header pointed at its own fields: a box's contents never move.
    fn new(
        to: SockAddr,
        payload: &[u8],
        segment: Option<u16>,
        bid: Option<u16>,
        datagrams: usize,
    ) -> Box<Reply> {
        let iov = libc::iovec { iov_base: payload.as_ptr().cast_mut().cast(), iov_len: payload.len() };
        // SAFETY: `msghdr` is plain data; all zeroes is a valid (empty) value.
        let hdr: libc::msghdr = unsafe { mem::zeroed() };
        let control = Cmsg([0; 32]);
        let mut reply = Box::new(Reply { hdr, iov, to, control, bid, datagrams, bytes: payload.len() });
        let Reply { hdr, iov, to, control, .. } = &mut *reply;
        hdr.msg_name = to.as_ptr().cast_mut().cast(); // the kernel only reads it
        hdr.msg_namelen = to.len();
        hdr.msg_iov = &raw mut *iov;
        hdr.msg_iovlen = 1;
        if let Some(segment) = segment {
            write_segment_cmsg(hdr, control, segment);
        }
        reply
    }
}

/// The sender from the name bytes of a recvmsg result (`len`: what the kernel had; more
/// than the room kept would be truncated, which a `sockaddr_storage` never is).
fn sender(name: &[u8], len: u32) -> Option<SockAddr> {
    let len = usize::try_from(len).ok()?;
    if len > name.len() || len > mem::size_of::<libc::sockaddr_storage>() {
        return None;
    }
    let mut storage = SockAddrStorage::zeroed();
    // SAFETY: `SockAddrStorage` wraps a `sockaddr_storage`, larger than `len` bytes; the
    // kernel wrote an address of `len` bytes, its family first, which `SockAddr` needs.
    unsafe {
        let bytes = (&raw mut storage).cast::<u8>();
        std::ptr::copy_nonoverlapping(name.as_ptr(), bytes, len);
        Some(SockAddr::new(storage, len as libc::socklen_t))
    }
}
