//! UDP echo on the ring (`--model io-uring udp:ADDR`): one multishot `recvmsg` per socket
//! brings every datagram, each into a buffer of a provided-buffer group of its own, and each
//! reply is a `sendmsg` straight out of that buffer.
//!
//! ```text
//!   arm: a multishot recvmsg on each UDP socket (buffer group 1)
//!   DatagramRecv(i) -> [header | sender | control messages | payload] in a provided buffer:
//!                      count it; from a reserved source port: drop it, give the buffer back;
//!                      else sendmsg the payload back to the sender, out of the buffer
//!   DatagramSend(k) -> count the reply; the buffer goes back once no reply reads from it
//!   recvmsg's last completion (no MORE flag: out of buffers, say) -> arm it again as soon
//!                      as a buffer is back in the group
//!   shutdown        -> cancel the recvmsgs; replies in flight finish within the grace period
//! ```
//!
//! The semantics are the event loop's (`event_loop/udp.rs`), through the same pieces: every
//! datagram counted and guarded one by one ([`admit_datagrams`]: source ports 0, 7, 13, 17
//! and 19 are never answered), one reply per datagram, same bytes, to the same sender; with
//! `--udp-offload on` a train the kernel kept whole (`UDP_GRO`) goes back as one send with
//! `UDP_SEGMENT` and the segment size it came with, or datagram by datagram where the
//! kernel cannot split it (a send refused with `EIO` turns GSO off for the socket and sends
//! the train again that way, as the event loop does).
//!
//! Why a buffer group of its own: a stream's recv takes what fits (`--uring-buffer-size`)
//! and the rest waits for the next recv, but a datagram is whole or lost, so every datagram
//! buffer has room for the largest datagram or GRO train (64 KiB, as the event loop's
//! receive slots) and for the header, the sender and the control messages before it.
//! There are `--uring-buffers` of them per loop, shared by its UDP sockets. The kernel
//! writes only what arrives, so small datagrams touch one page of each buffer.
//!
//! **How replies are bounded** (the one difference from the event loop): a reply holds its
//! buffer until the kernel has taken it (its `sendmsg` completes; one that finds the socket's
//! send buffer full waits in the kernel for room), so at most `--uring-buffers` buffers of
//! replies are in flight per loop, each at most 64 KiB. When every buffer is out, the
//! multishot recvmsg ends (`ENOBUFS`) and is armed again as soon as one is back; meanwhile
//! datagrams wait in the socket's receive buffer (`SO_RCVBUF`, `--recv-buffer`), and when
//! that is full the kernel drops the newest (counted by the kernel, as `RcvbufErrors` in
//! `/proc/net/snmp`, not by echoloop). The event loop instead takes every datagram, queues
//! the replies the kernel refuses (up to 1024 replies or 4 MiB) and drops the oldest it
//! queued, counted as `dropped_queue_full`; here that count stays 0. Nothing is ever sent
//! twice or altered, and no reply taken is dropped.
//!
//! There is no batch size (`--udp-batch` is the event loop's): each datagram has its own
//! completion, and every reply of a loop turn goes to the kernel in the turn's one
//! `io_uring_enter`.

use std::io;
use std::mem;
use std::net::UdpSocket;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use io_uring::cqueue;
use io_uring::types::RecvMsgOut;
use log::{debug, info, trace, warn};
use slab::Slab;
use socket2::{SockAddr, SockAddrStorage};

use super::buffers::BufRing;
use super::op::Op;
use super::ring::Ring;
use crate::addr::ListenAddr;
use crate::config::ServerConfig;
use crate::lifecycle::admit_datagrams;
use crate::net::{CONTROL_ROOM, Message, Offload, SegmentControl, UDP_SLOT, gro_segment_in};
use crate::stats::{Datagrams, IoTally, Stats};

/// The datagram buffers' group id (the streams' buffers are group 0).
const GROUP: u16 = 1;

/// Room before the payload: the `io_uring_recvmsg_out` header (16 bytes), the sender (a
/// `sockaddr_storage`, 128) and the control messages ([`CONTROL_ROOM`]), rounded up so that
/// every buffer, and the control messages in it, stays 8-byte aligned.
const HEADER_ROOM: usize = 512;

/// One datagram buffer: the header room and the largest datagram or GRO train.
const BUFFER_SIZE: usize = HEADER_ROOM + UDP_SLOT;

/// The UDP sockets of one loop, their buffers and the replies in flight.
pub(super) struct UdpPorts {
    ports: Vec<UdpPort>,
    /// The datagram buffers (group [`GROUP`]); `None` when the loop has no UDP socket.
    buffers: Option<BufRing>,
    /// What every multishot recvmsg reads to know how much room to keep for the sender and
    /// the control messages. It must stay put while a recvmsg is armed: boxed.
    template: Box<RecvTemplate>,
    /// Replies in the kernel, by the key their send's `user_data` carries.
    replies: Slab<Box<Reply>>,
    /// Boxes of replies that completed, to hold the next ones: no allocation per datagram.
    /// Boxed, not inline: a reply is handed to the kernel in its box, which must not move.
    #[expect(
        clippy::vec_box,
        reason = "the boxes move into `replies`, whose contents the kernel reads in place"
    )]
    spare: Vec<Box<Reply>>,
    /// The replies to one received message, gathered before they are sent (kept, emptied).
    answers: Vec<Reply>,
    /// Per buffer: the replies in flight that read from it; it goes back at zero.
    readers: Vec<u32>,
    /// Buffers out of the group (named by a completion, not yet given back).
    out: usize,
}

/// One UDP socket of the loop.
struct UdpPort {
    socket: UdpSocket,
    /// Its address, for the logs.
    addr: ListenAddr,
    /// Trains go back as one send (`UDP_SEGMENT`); off after the kernel refused one (`EIO`).
    gso: bool,
    /// Its multishot recvmsg is in the kernel.
    armed: bool,
    /// False once shutting down: no more datagrams are taken.
    reading: bool,
    /// Its counters, and this turn's counts, published once per turn.
    stats: Arc<Stats>,
    tally: IoTally,
    datagrams: Datagrams,
}

/// The `msghdr` a multishot recvmsg reads: no pointers, only the room to keep for the
/// sender and the control messages (`msg_namelen`, `msg_controllen`).
struct RecvTemplate(libc::msghdr);

// SAFETY: its pointer fields are all null; it is plain data.
unsafe impl Send for RecvTemplate {}

/// A reply, and everything its `sendmsg` points at. Boxed before it is handed to the kernel
/// ([`Reply::header`]), so it stays put while the kernel reads it; its payload stays in
/// datagram buffer `bid`, which goes back to the group only when no reply reads from it
/// any more.
struct Reply {
    hdr: libc::msghdr,
    iov: libc::iovec,
    to: SockAddr,
    control: SegmentControl,
    /// The socket it leaves from (an index into the ports).
    port: usize,
    bid: u16,
    /// Sent as a train the kernel splits into datagrams of this size.
    segment: Option<u16>,
    /// Datagrams in it (more than one for a train), for the counts.
    datagrams: usize,
}

// SAFETY: a reply's pointers lead into its own box and into a datagram buffer it holds until
// its send completes; the loop that owns the reply owns both, on whichever thread it runs.
unsafe impl Send for Reply {}

impl UdpPorts {
    /// Take the loop's UDP `sockets`; with any, allocate and register the datagram buffers
    /// (`--uring-buffers` of them) and turn on GRO and GSO where `--udp-offload` asks and the
    /// kernel has them.
    pub(super) fn new(
        sockets: Vec<(UdpSocket, ListenAddr, Arc<Stats>)>,
        config: &ServerConfig,
        ring: &mut Ring,
    ) -> io::Result<UdpPorts> {
        let buffers = if sockets.is_empty() { None } else { Some(datagram_buffers(config, ring)?) };
        let wanted = if config.udp_offload { Offload::BOTH } else { Offload::NONE };
        let ports = sockets
            .into_iter()
            .map(|(socket, addr, stats)| UdpPort {
                gso: Offload::enable(&socket, wanted).gso,
                socket,
                addr,
                armed: false,
                reading: true,
                stats,
                tally: IoTally::default(),
                datagrams: Datagrams::default(),
            })
            .collect();
        // SAFETY: `msghdr` is plain data; all zeroes is a valid (empty) value.
        let mut template = Box::new(RecvTemplate(unsafe { mem::zeroed() }));
        template.0.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        template.0.msg_controllen = CONTROL_ROOM;
        let count = buffers.as_ref().map_or(0, |b| usize::from(b.count()));
        Ok(UdpPorts {
            ports,
            buffers,
            template,
            replies: Slab::new(),
            spare: Vec::new(),
            answers: Vec::new(),
            readers: vec![0; count],
            out: 0,
        })
    }

    /// Arm the multishot recvmsg of every socket that reads and has none, while a buffer is
    /// in the group (with none, it would end at once: the next buffer back arms it).
    pub(super) fn arm(&mut self, ring: &mut Ring) -> io::Result<()> {
        if self.out >= self.readers.len() {
            return Ok(());
        }
        for (i, port) in self.ports.iter_mut().enumerate().filter(|(_, p)| p.reading && !p.armed) {
            // SAFETY: the template is boxed and never changes; it is freed only when no
            // recvmsg is armed (`release` leaks it otherwise).
            unsafe {
                ring.recvmsg_multishot(port.socket.as_raw_fd(), &self.template.0, GROUP, Op::DatagramRecv(i))?
            };
            port.armed = true;
        }
        Ok(())
    }

    /// A completion of socket `i`'s recvmsg: a datagram (or a train) to answer, or the end of
    /// the multishot request.
    pub(super) fn on_recv(&mut self, ring: &mut Ring, i: usize, result: i32, flags: u32) -> io::Result<()> {
        let Some(port) = self.ports.get_mut(i) else {
            warn!("io_uring: a recvmsg completion for no UDP socket ({i})");
            return Ok(());
        };
        let more = cqueue::more(flags);
        port.armed &= more; // its last completion: armed again below, if it still reads
        match (result, cqueue::buffer_select(flags)) {
            (n, Some(bid)) if n >= 0 => {
                self.out += 1;
                self.received(ring, i, bid, n as usize)?;
            }
            (n, None) if n >= 0 => warn!("io_uring: a recvmsg on {} named no buffer", port.addr),
            (e, _) => match -e {
                libc::ENOBUFS => trace!("udp recv on {}: every buffer is out", port.addr),
                libc::ECANCELED => trace!("udp recv on {} cancelled", port.addr),
                libc::EINVAL if !more => {
                    return Err(io::Error::new(
                        io::ErrorKind::Unsupported,
                        "io_uring on this kernel lacks multishot recvmsg (Linux 6.0), which udp: \
                         listeners need",
                    ));
                }
                // An error queued on the socket (an ICMP report, say): datagrams may follow.
                errno => debug!("udp recvmsg on {}: {}", port.addr, io::Error::from_raw_os_error(errno)),
            },
        }
        if more { Ok(()) } else { self.arm(ring) }
    }

    /// What a completion left in buffer `bid` (`len` bytes, header included): count it,
    /// guard it, answer it.
    fn received(&mut self, ring: &mut Ring, i: usize, bid: u16, len: usize) -> io::Result<()> {
        let Some(buffers) = &self.buffers else { return Ok(()) }; // a port implies buffers
        let port = &mut self.ports[i];
        let Ok(out) = RecvMsgOut::parse(buffers.data(bid, len), &self.template.0) else {
            debug!("udp: a recvmsg result too short to parse: dropped");
            return self.give_back(ring, bid);
        };
        // Cannot happen (a buffer holds the largest datagram or train); never echo a part.
        let from = sender(out.name_data()).filter(|_| !out.is_payload_truncated());
        let Some((from, addr)) = from.and_then(|from| from.as_socket().map(|addr| (from, addr))) else {
            debug!("udp: dropped a truncated message of {} bytes", out.incoming_payload_len());
            return self.give_back(ring, bid);
        };
        let payload = out.payload_data();
        let segment = gro_segment_in(out.control_data()).unwrap_or(payload.len());
        let message = Message { peer: &from, data: payload, segment };
        trace!("udp recv n={} datagrams={} from={addr}", payload.len(), message.count());
        if !admit_datagrams(message.count(), payload.len(), addr, &mut port.tally, &mut port.datagrams) {
            return self.give_back(ring, bid);
        }
        let mut answers = mem::take(&mut self.answers);
        Reply::answering(message, port.gso, i, bid, &mut answers);
        self.readers[usize::from(bid)] += answers.len() as u32;
        let sent = answers.drain(..).try_for_each(|reply| self.send(ring, reply));
        self.answers = answers;
        sent
    }

    /// Hand `reply` to the kernel.
    fn send(&mut self, ring: &mut Ring, reply: Reply) -> io::Result<()> {
        let fd: RawFd = self.ports[reply.port].socket.as_raw_fd();
        let entry = self.replies.vacant_entry();
        let key = entry.key();
        let boxed = match self.spare.pop() {
            Some(mut spare) => {
                *spare = reply;
                spare
            }
            None => Box::new(reply),
        };
        let reply = entry.insert(boxed);
        // SAFETY: the reply is boxed in the slab (its contents never move) and removed only
        // when this send completes (or leaked by `release`); its payload lies in a buffer
        // that goes back to the group only when no reply in flight reads from it.
        unsafe { ring.sendmsg(fd, reply.header(), Op::DatagramSend(key)) }
    }

    /// A reply's send completed: count it (a refused train goes again, datagram by
    /// datagram), and give its buffer back if no other reply reads from it.
    pub(super) fn on_send(&mut self, ring: &mut Ring, key: usize, result: i32) -> io::Result<()> {
        let Some(reply) = self.replies.try_remove(key) else {
            warn!("io_uring: a sendmsg completion for no reply ({key})");
            return Ok(());
        };
        let port = &mut self.ports[reply.port];
        let bytes = reply.iov.iov_len;
        match result {
            n if n >= 0 => {
                trace!("udp send n={bytes} datagrams={}", reply.datagrams);
                port.datagrams.echoed += reply.datagrams as u64;
                port.tally.bytes_echoed += bytes as u64;
            }
            // Cancelled at the end of the grace period: never sent.
            e if -e == libc::ECANCELED => port.tally.bytes_unsent += bytes as u64,
            e if reply.segment.is_some() => {
                let e = io::Error::from_raw_os_error(-e);
                if e.raw_os_error() == Some(libc::EIO) {
                    info!("udp: the kernel cannot segment on this path ({e}): GSO off for {}", port.addr);
                    port.gso = false;
                } else {
                    debug!("udp: a train of {} was refused ({e}): sending its datagrams", reply.datagrams);
                }
                let singles = reply.split();
                self.readers[usize::from(reply.bid)] += singles.len() as u32;
                singles.into_iter().try_for_each(|single| self.send(ring, single))?;
            }
            e => {
                let e = io::Error::from_raw_os_error(-e);
                debug!("udp send to {:?}: {e}: {} replies dropped", reply.to.as_socket(), reply.datagrams);
                port.datagrams.dropped_send_failed += reply.datagrams as u64;
                port.tally.bytes_unsent += bytes as u64;
            }
        }
        let bid = reply.bid;
        self.spare.push(reply);
        self.readers[usize::from(bid)] -= 1;
        if self.readers[usize::from(bid)] == 0 { self.give_back(ring, bid) } else { Ok(()) }
    }

    /// Buffer `bid` goes back to the group; a recvmsg that ran dry may go on.
    fn give_back(&mut self, ring: &mut Ring, bid: u16) -> io::Result<()> {
        if let Some(buffers) = &mut self.buffers {
            buffers.provide(bid);
            self.out -= 1;
        }
        self.arm(ring)
    }

    /// Add this turn's counts to each socket's counters.
    pub(super) fn publish(&mut self) {
        for port in &mut self.ports {
            port.stats.publish(&mut port.tally);
            port.stats.publish_datagrams(&mut port.datagrams);
        }
    }

    /// Shutting down: take no more datagrams (cancel the recvmsgs); replies in flight may
    /// still go.
    pub(super) fn stop_receiving(&mut self, ring: &mut Ring) -> io::Result<()> {
        for (i, port) in self.ports.iter_mut().enumerate() {
            port.reading = false;
            if port.armed {
                trace!("queue cancel of the recvmsg on {}", port.addr);
                ring.cancel(Op::DatagramRecv(i))?;
            }
        }
        Ok(())
    }

    /// The grace period is over: cancel the replies still in flight (their completions
    /// count them as unsent).
    pub(super) fn abandon(&mut self, ring: &mut Ring) -> io::Result<()> {
        if self.replies.is_empty() {
            return Ok(());
        }
        warn!("grace period over: {} queued replies not sent", self.replies.len());
        self.ports.iter().try_for_each(|port| ring.cancel_fd(port.socket.as_raw_fd()))
    }

    /// The loop is ending: take the buffers back from the ring; if the kernel may still
    /// use them or the replies (it would not let go in time, or the loop failed), leak them
    /// rather than free memory it may touch, and count those replies as never sent.
    pub(super) fn release(&mut self, ring: &mut Ring) {
        let Some(buffers) = &mut self.buffers else { return };
        let busy = !self.replies.is_empty() || self.ports.iter().any(|port| port.armed);
        if !busy && ring.unregister_buffers(buffers).is_ok() {
            return;
        }
        for (_, reply) in &self.replies {
            self.ports[reply.port].tally.bytes_unsent += reply.iov.iov_len as u64;
        }
        buffers.leak();
        self.publish();
        mem::forget(mem::take(&mut self.replies));
        // SAFETY: `msghdr` is plain data; all zeroes is a valid (empty) value.
        let empty = Box::new(RecvTemplate(unsafe { mem::zeroed() }));
        mem::forget(mem::replace(&mut self.template, empty));
    }
}

impl Reply {
    /// The replies to `message`, received in buffer `bid` on socket `port`, added to
    /// `into`: one send, a train the kernel splits if `gso` (and its segment size fits the
    /// `u16` the kernel takes), or one send per datagram.
    fn answering(message: Message<'_>, gso: bool, port: usize, bid: u16, into: &mut Vec<Reply>) {
        let segment = u16::try_from(message.segment).ok();
        match segment.filter(|_| message.is_train()) {
            Some(segment) if gso => into.push(Reply::new(message, Some(segment), port, bid)),
            _ if message.is_train() => into.extend(
                message
                    .datagrams()
                    .map(|data| Reply::new(Message::single(message.peer, data), None, port, bid)),
            ),
            _ => into.push(Reply::new(message, None, port, bid)),
        }
    }

    /// A reply of `message` (in buffer `bid`), a train the kernel splits by `segment` if
    /// given; its header points nowhere until [`Reply::header`].
    fn new(message: Message<'_>, segment: Option<u16>, port: usize, bid: u16) -> Reply {
        let data = message.data;
        let iov = libc::iovec { iov_base: data.as_ptr().cast_mut().cast(), iov_len: data.len() };
        // SAFETY: `msghdr` is plain data; all zeroes is a valid (empty) value.
        let hdr: libc::msghdr = unsafe { mem::zeroed() };
        let (to, control, datagrams) = (message.peer.clone(), SegmentControl::new(), message.count());
        Reply { hdr, iov, to, control, port, bid, segment, datagrams }
    }

    /// The `msghdr` for its sendmsg, pointed at the reply's own fields: boxed first, since a
    /// box's contents never move.
    fn header(self: &mut Box<Reply>) -> &libc::msghdr {
        let Reply { hdr, iov, to, control, segment, .. } = &mut **self;
        hdr.msg_name = to.as_ptr().cast_mut().cast(); // the kernel only reads it
        hdr.msg_namelen = to.len();
        hdr.msg_iov = &raw mut *iov;
        hdr.msg_iovlen = 1;
        if let Some(segment) = *segment {
            control.attach(hdr, segment);
        }
        &self.hdr
    }

    /// This train's datagrams, as replies of their own out of the same buffer.
    fn split(&self) -> Vec<Reply> {
        // SAFETY: the payload lies in buffer `bid`, which stays out of the group while this
        // reply exists (it is one of the buffer's readers until the caller is done).
        let data = unsafe { std::slice::from_raw_parts(self.iov.iov_base.cast::<u8>(), self.iov.iov_len) };
        let segment = self.segment.map_or(data.len(), usize::from);
        let train = Message { peer: &self.to, data, segment };
        let single = |data| Reply::new(Message::single(&self.to, data), None, self.port, self.bid);
        train.datagrams().map(single).collect()
    }
}

/// The datagram buffers `--uring-buffers` asks for, registered with `ring` as group
/// [`GROUP`], or one line naming the setting and what the system said.
fn datagram_buffers(config: &ServerConfig, ring: &mut Ring) -> io::Result<BufRing> {
    let count = config.uring_buffers;
    let named = |e: io::Error| {
        io::Error::new(
            e.kind(),
            format!(
                "io_uring: cannot set up --uring-buffers {count} datagram buffers of {BUFFER_SIZE} bytes: {e}"
            ),
        )
    };
    let count = u16::try_from(count).map_err(|_| named(io::ErrorKind::InvalidInput.into()))?;
    let mut buffers = BufRing::new(count, BUFFER_SIZE).map_err(named)?.in_group_without_bundles(GROUP);
    ring.register_buffers(&mut buffers).map_err(named)?;
    debug!("io_uring: {count} datagram buffers of {BUFFER_SIZE} bytes (group {GROUP})");
    Ok(buffers)
}

/// The sender, from the name bytes of a recvmsg result (`None` if there are none, or more
/// than an address holds).
fn sender(name: &[u8]) -> Option<SockAddr> {
    if name.is_empty() || name.len() > mem::size_of::<libc::sockaddr_storage>() {
        return None;
    }
    // SAFETY: `sockaddr_storage` is plain data; all zeroes is a valid value.
    let mut raw: libc::sockaddr_storage = unsafe { mem::zeroed() };
    // SAFETY: `name` fits in `raw` (checked above); the bytes are an address the kernel
    // wrote, its family first.
    unsafe { std::ptr::copy_nonoverlapping(name.as_ptr(), (&raw mut raw).cast::<u8>(), name.len()) };
    let mut storage = SockAddrStorage::zeroed();
    // SAFETY: `SockAddrStorage` wraps a `sockaddr_storage`; `raw` holds an address of
    // `name.len()` bytes, which is what `SockAddr::new` asks for.
    unsafe {
        *storage.view_as::<libc::sockaddr_storage>() = raw;
        Some(SockAddr::new(storage, name.len() as libc::socklen_t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    #[test]
    fn a_buffer_holds_the_header_room_and_the_largest_datagram_aligned() {
        let fixed = 16 + mem::size_of::<libc::sockaddr_storage>() + CONTROL_ROOM;
        assert!(fixed <= HEADER_ROOM, "{fixed}");
        assert!(BUFFER_SIZE - fixed >= 65_527, "the largest IPv6 datagram fits");
        assert_eq!(BUFFER_SIZE % 8, 0, "every buffer starts 8-byte aligned");
        assert_eq!((16 + mem::size_of::<libc::sockaddr_storage>()) % 8, 0, "so do its control messages");
    }

    #[test]
    fn a_sender_is_read_from_its_name_bytes() {
        let addr = SocketAddr::from(([127, 0, 0, 1], 4242));
        let name = SockAddr::from(addr);
        // SAFETY: `as_ptr` points at `len` bytes of the address.
        let bytes = unsafe { std::slice::from_raw_parts(name.as_ptr().cast::<u8>(), name.len() as usize) };
        assert_eq!(sender(bytes).and_then(|s| s.as_socket()), Some(addr));
        assert!(sender(&[]).is_none());
        assert!(sender(&[0; 200]).is_none());
    }

    #[test]
    fn a_train_is_one_reply_with_gso_and_one_per_datagram_without() {
        let peer = SockAddr::from(SocketAddr::from(([127, 0, 0, 1], 9000)));
        let data = [1u8; 25];
        let train = Message { peer: &peer, data: &data, segment: 10 };
        let answer = |message, gso, port, bid| {
            let mut replies = Vec::new();
            Reply::answering(message, gso, port, bid, &mut replies);
            replies
        };
        let whole = answer(train, true, 0, 3);
        assert_eq!(whole.len(), 1);
        assert_eq!((whole[0].segment, whole[0].datagrams, whole[0].iov.iov_len), (Some(10), 3, 25));
        let singles = answer(train, false, 0, 3);
        let lens: Vec<usize> = singles.iter().map(|r| r.iov.iov_len).collect();
        assert_eq!(lens, [10, 10, 5]);
        assert!(singles.iter().all(|r| r.segment.is_none() && r.datagrams == 1 && r.bid == 3));
        let split: Vec<usize> = whole[0].split().iter().map(|r| r.iov.iov_len).collect();
        assert_eq!(split, [10, 10, 5], "a refused train goes again datagram by datagram");
        let empty = answer(Message::single(&peer, &[]), true, 1, 0);
        assert_eq!((empty.len(), empty[0].iov.iov_len, empty[0].datagrams), (1, 0, 1));
        let mut reply = Box::new(Reply::new(train, Some(10), 0, 3));
        let hdr = *reply.header();
        assert_eq!((hdr.msg_namelen, hdr.msg_iovlen), (peer.len(), 1));
        assert!(hdr.msg_controllen > 0, "a train carries its segment size");
    }
}
