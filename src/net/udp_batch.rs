//! Batched UDP I/O (Linux): many datagrams per system call, and trains of equal-sized
//! datagrams that the kernel moves as one.
//!
//! A UDP echo that calls `recv_from` and `send_to` once per datagram spends a good part of
//! its CPU entering and leaving the kernel. Two things cut that:
//!
//! - **`recvmmsg` / `sendmmsg`**: up to [`BATCH`] messages per call, each with its own
//!   sender or destination, so one call answers many clients.
//! - **GRO and GSO for UDP.** With `UDP_GRO` set on a socket, the kernel may hand over a
//!   *train* (several datagrams from one sender, all of one size but the last, which may be
//!   shorter) as one message, the segment size in a `UDP_GRO` control message. A message
//!   sent with a `UDP_SEGMENT` control message is split by the kernel into datagrams of
//!   that size, as late as it can (on loopback, not at all until the receiving socket). So a
//!   train can be echoed as it came: one send, the same segment size, and the client gets
//!   the same datagrams, one reply per datagram.
//!
//! Support is probed per socket ([`Offload::enable`]): `UDP_GRO` needs Linux 5.0,
//! `UDP_SEGMENT` 4.18. Without GRO every message is one datagram; without GSO a train goes
//! out as its datagrams, one `sendmmsg` entry each; a send that the kernel refuses with
//! `EIO` (a device that cannot checksum segments) turns GSO off for the socket and retries
//! the train that way. Nothing else changes: same bytes, same destinations, same order.
//! Elsewhere than Linux (no `recvmmsg`, no GRO/GSO) the same types move one datagram per
//! call (`recv_from`, `send_to`), so the echo above them reads the same on every system.
//!
//! Why not `quinn-udp`, which does GRO and GSO well: it sends one transmit per call (no
//! `sendmmsg`), and one call answering many senders is the point here; it also asks for ECN
//! and packet-information control messages on every receive, which an echo has no use for.

use std::io::{self, ErrorKind};
use std::net::SocketAddr;
use std::os::fd::AsFd;

use log::{debug, info};
use socket2::SockAddr;

/// The most messages one `recvmmsg` or `sendmmsg` moves.
pub const BATCH: usize = 64;

/// One receive slot: room for the largest UDP payload (65,507 bytes over IPv4, 65,527 over
/// IPv6) and for the largest train GRO builds (its total stays under 64 KiB), so no message
/// is ever truncated.
pub const SLOT: usize = 64 * 1024;

/// What the kernel does for this socket: coalesce received trains (GRO), split sent ones
/// (GSO).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offload {
    /// `UDP_GRO` is on: a received message may be a train.
    pub gro: bool,
    /// `UDP_SEGMENT` works: a train can be sent as one message.
    pub gso: bool,
}

impl Offload {
    /// Neither: one datagram per message both ways.
    pub const NONE: Offload = Offload { gro: false, gso: false };
    /// Both, where the kernel has them.
    pub const BOTH: Offload = Offload { gro: true, gso: true };

    /// Turn on what `wanted` asks for and the kernel has, and say what that was.
    pub fn enable(socket: impl AsFd, wanted: Offload) -> Offload {
        let granted = sys::enable(socket.as_fd(), wanted);
        debug!("udp offload: GRO {}, GSO {}", on_off(granted.gro), on_off(granted.gso));
        granted
    }
}

fn on_off(on: bool) -> &'static str {
    if on { "on" } else { "off" }
}

/// One message of a batch, as received or to be sent: a datagram, or a train of datagrams
/// of `segment` bytes each (the last one perhaps shorter), from or to one peer.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    /// The sender (received) or the destination (to send).
    pub peer: &'a SockAddr,
    /// The datagrams, back to back.
    pub data: &'a [u8],
    /// Bytes per datagram; `data.len()` for a single datagram (0 for an empty one).
    pub segment: usize,
}

impl<'a> Message<'a> {
    /// A single datagram.
    pub fn single(peer: &'a SockAddr, data: &'a [u8]) -> Message<'a> {
        Message { peer, data, segment: data.len() }
    }

    /// How many datagrams it holds (an empty datagram is one).
    pub fn count(&self) -> usize {
        if self.is_train() { self.data.len().div_ceil(self.segment) } else { 1 }
    }

    /// More than one datagram.
    pub fn is_train(&self) -> bool {
        self.segment > 0 && self.data.len() > self.segment
    }

    /// Its datagrams, in order.
    pub fn datagrams(&self) -> impl Iterator<Item = &'a [u8]> + use<'a> {
        let (data, segment) = (self.data, self.segment);
        let size = if self.is_train() { segment } else { data.len().max(1) };
        let empty = data.is_empty().then_some(data);
        data.chunks(size).chain(empty)
    }

    /// The peer as a socket address (every address this module sees is IPv4 or IPv6).
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer.as_socket()
    }
}

/// Receives up to a batch of messages per call, into slots it owns.
pub struct Receiver {
    /// Messages asked for per call, at most [`BATCH`].
    batch: usize,
    /// `batch` slots of [`SLOT`] bytes. Allocated zeroed, so untouched pages cost no memory.
    slots: Box<[u8]>,
    /// Where the kernel writes each message's sender and control messages.
    scratch: sys::RecvScratch,
    /// The last call's messages.
    received: Vec<Received>,
    /// How many messages the last call took (a truncated one, never echoed, included).
    taken: usize,
}

/// Where one received message is: its slot, its length, its sender and segment size.
struct Received {
    slot: usize,
    len: usize,
    segment: usize,
    from: SockAddr,
}

impl Receiver {
    /// Room for `batch` messages per call (1 to [`BATCH`]).
    pub fn new(batch: usize) -> Receiver {
        let batch = batch.clamp(1, BATCH);
        Receiver {
            batch,
            slots: vec![0; batch * SLOT].into_boxed_slice(),
            scratch: sys::RecvScratch::new(batch),
            received: Vec::with_capacity(batch),
            taken: 0,
        }
    }

    /// One `recvmmsg`: take what is queued, up to the batch, without waiting. `Ok(n)`: the
    /// n messages now in [`Receiver::messages`]; `WouldBlock` when none was queued.
    pub fn recv(&mut self, socket: impl AsFd) -> io::Result<usize> {
        self.received.clear();
        self.taken = 0;
        self.taken = sys::recv(socket.as_fd(), self)?;
        Ok(self.received.len())
    }

    /// The last call took less than a batch: it emptied the kernel's queue, and a datagram
    /// arriving after it raises a new readiness event (each arrival wakes the socket's
    /// waiters), so an edge-triggered loop need not call again to see `WouldBlock`.
    pub fn drained(&self) -> bool {
        self.taken < self.batch
    }

    /// The messages the last [`Receiver::recv`] took, in the order they came.
    pub fn messages(&self) -> impl Iterator<Item = Message<'_>> {
        self.received.iter().map(|r| Message {
            peer: &r.from,
            data: &self.slots[r.slot * SLOT..][..r.len],
            segment: r.segment,
        })
    }
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver")
            .field("batch", &self.batch)
            .field("received", &self.received.len())
            .finish()
    }
}

/// What became of one message handed to [`Sender::send`].
#[derive(Debug)]
pub enum Sent {
    /// The kernel took it: all its datagrams are on their way.
    Done,
    /// The kernel's send buffer is full: not sent, and neither is anything after it (the
    /// caller keeps them, in order, for when the socket is writable).
    WouldBlock,
    /// It cannot be sent (no route, too large for the path, ...): lost, as UDP allows.
    Failed(io::Error),
}

/// Sends batches of messages with `sendmmsg`, trains as one message each where GSO works.
#[derive(Debug)]
pub struct Sender {
    /// GSO works on this socket (see the module docs for when it is turned off).
    gso: bool,
}

/// One `sendmmsg` entry: a datagram, or a train with its segment size.
struct Entry<'a> {
    message: Message<'a>,
    /// Sent with `UDP_SEGMENT`: the kernel splits it.
    as_train: bool,
}

impl Sender {
    /// A sender for a socket whose offload is `offload`.
    pub fn new(offload: Offload) -> Sender {
        Sender { gso: offload.gso }
    }

    /// Send `messages` in order, up to [`BATCH`] per `sendmmsg`, and report what became of
    /// each through `on`: a train is reported whole when it went as one message, and datagram
    /// by datagram when GSO is off. After a `WouldBlock`, everything left is reported
    /// `WouldBlock` without being tried, so the order of replies is kept.
    pub fn send<'a>(
        &mut self,
        socket: impl AsFd,
        messages: &[Message<'a>],
        mut on: impl FnMut(Message<'a>, Sent),
    ) {
        let fd = socket.as_fd();
        let mut entries: Vec<Entry<'a>> = Vec::with_capacity(messages.len());
        for &message in messages {
            self.push_entries(&mut entries, message);
        }
        let mut next = 0;
        while next < entries.len() {
            let end = entries.len().min(next + BATCH);
            match sys::send(fd, &entries[next..end]) {
                Ok(n) => {
                    entries[next..next + n].iter().for_each(|e| on(e.message, Sent::Done));
                    next += n;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {} // a signal: try again
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    entries[next..].iter().for_each(|e| on(e.message, Sent::WouldBlock));
                    return;
                }
                Err(e) if entries[next].as_train => self.unsplittable(&mut entries, next, &e),
                Err(e) => {
                    on(entries[next].message, Sent::Failed(e));
                    next += 1;
                }
            }
        }
    }

    /// `message` as one entry (a datagram, or a train GSO will split), or as one entry per
    /// datagram.
    fn push_entries<'a>(&self, entries: &mut Vec<Entry<'a>>, message: Message<'a>) {
        if !message.is_train() {
            entries.push(Entry { message, as_train: false });
        } else if self.gso {
            entries.push(Entry { message, as_train: true });
        } else {
            entries.extend(split(message).map(|message| Entry { message, as_train: false }));
        }
    }

    /// The kernel would not split the train at `at` (error `e`): put its datagrams in its
    /// place, to go one by one. `EIO` (a path that cannot checksum segments) turns GSO off.
    fn unsplittable(&mut self, entries: &mut Vec<Entry<'_>>, at: usize, e: &io::Error) {
        let train = entries[at].message;
        if e.raw_os_error() == Some(libc::EIO) {
            info!("udp: the kernel cannot segment on this path ({e}): GSO off for this socket");
            self.gso = false;
        } else {
            debug!("udp: a train of {} was refused ({e}): sending its datagrams", train.count());
        }
        let singles: Vec<Entry<'_>> =
            split(train).map(|message| Entry { message, as_train: false }).collect();
        entries.splice(at..=at, singles);
    }
}

/// A train's datagrams as messages of their own.
fn split(train: Message<'_>) -> impl Iterator<Item = Message<'_>> {
    train.datagrams().map(move |data| Message::single(train.peer, data))
}

/// The control messages of one message, for the io-uring model, whose receives and sends
/// the ring makes (`io_uring/udp.rs`): the same `UDP_GRO` reading, the same `UDP_SEGMENT`.
#[cfg(target_os = "linux")]
pub use sys::{CONTROL_ROOM, SegmentControl, gro_segment_in};

/// The system calls: `recvmmsg`, `sendmmsg` and the UDP options, on Linux.
#[cfg(target_os = "linux")]
mod sys {
    use std::io;
    use std::mem;
    use std::os::fd::{AsRawFd, BorrowedFd};

    use log::debug;
    use socket2::{SockAddr, SockAddrStorage};

    use super::{BATCH, Entry, Message, Offload, Received, Receiver, SLOT};

    /// `UDP_SEGMENT` and `UDP_GRO` from `<linux/udp.h>` (the `libc` crate has them only for
    /// some C libraries).
    const UDP_SEGMENT: libc::c_int = 103;
    const UDP_GRO: libc::c_int = 104;

    /// Room for one control message carrying an `int` (`UDP_GRO`) or a `u16`
    /// (`UDP_SEGMENT`), aligned as `cmsghdr` must be.
    #[derive(Clone, Copy)]
    #[repr(C, align(8))]
    struct Cmsg([u8; 32]);

    /// Room for the control messages of one received message: `UDP_GRO`'s and whatever the
    /// socket asks for besides. The kernel writes the socket-level ones first (the time
    /// stamps of `SO_TIMESTAMP[NS]` and `SO_TIMESTAMPING`, `SO_RXQ_OVFL`, `SO_RCVMARK`:
    /// at most about 190 bytes), then `UDP_GRO`'s (24), then the IP-level ones; what does
    /// not fit is left out. A socket passed in by a service manager may carry such options
    /// (systemd's `Timestamping=`), and a train whose `UDP_GRO` message was left out would
    /// go back as one datagram: so 256 bytes, where `UDP_GRO`'s always fits.
    #[derive(Clone, Copy)]
    #[repr(C, align(8))]
    struct RecvCmsg([u8; 256]);

    pub fn enable(fd: BorrowedFd<'_>, wanted: Offload) -> Offload {
        let gso = wanted.gso && set_udp_option(fd, UDP_SEGMENT, 0).is_ok(); // 0: no default size
        let gro = wanted.gro && set_udp_option(fd, UDP_GRO, 1).is_ok();
        Offload { gro, gso }
    }

    /// `setsockopt(fd, SOL_UDP, option, value)`; an old kernel says `ENOPROTOOPT`.
    fn set_udp_option(fd: BorrowedFd<'_>, option: libc::c_int, value: libc::c_int) -> io::Result<()> {
        let len = mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: a valid descriptor, and a pointer to an `int` that outlives the call.
        let ret = unsafe {
            libc::setsockopt(fd.as_raw_fd(), libc::SOL_UDP, option, (&raw const value).cast(), len)
        };
        if ret == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
    }

    /// Where the kernel writes each message's sender and control messages.
    pub struct RecvScratch {
        names: Vec<libc::sockaddr_storage>,
        controls: Vec<RecvCmsg>,
    }

    impl RecvScratch {
        pub fn new(batch: usize) -> RecvScratch {
            // SAFETY: `sockaddr_storage` is plain data; all zeroes is a valid value.
            let zeroed: libc::sockaddr_storage = unsafe { mem::zeroed() };
            RecvScratch { names: vec![zeroed; batch], controls: vec![RecvCmsg([0; 256]); batch] }
        }
    }

    /// One `recvmmsg` into `rx`'s slots; the messages go to `rx.received`. How many it took.
    pub fn recv(fd: BorrowedFd<'_>, rx: &mut Receiver) -> io::Result<usize> {
        let mut iovs = [libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; BATCH];
        // SAFETY: `mmsghdr` is plain data; all zeroes is a valid (empty) value.
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { mem::zeroed() };
        let scratch = &mut rx.scratch;
        let per_message = rx.slots.chunks_exact_mut(SLOT).zip(&mut scratch.names).zip(&mut scratch.controls);
        for (i, ((slot, name), control)) in per_message.enumerate() {
            iovs[i] = libc::iovec { iov_base: slot.as_mut_ptr().cast(), iov_len: SLOT };
            let hdr = &mut hdrs[i].msg_hdr;
            hdr.msg_name = (name as *mut libc::sockaddr_storage).cast();
            hdr.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            hdr.msg_iov = &raw mut iovs[i];
            hdr.msg_iovlen = 1;
            hdr.msg_control = control.0.as_mut_ptr().cast();
            hdr.msg_controllen = control.0.len();
        }
        let (batch, flags) = (rx.batch as libc::c_uint, libc::MSG_DONTWAIT);
        // SAFETY: the first `batch` headers point at buffers `rx` owns (slots, names,
        // controls) and at `iovs`, all valid for writes of the lengths given and alive for
        // the call; the kernel writes at most `batch` headers.
        let ret =
            unsafe { libc::recvmmsg(fd.as_raw_fd(), hdrs.as_mut_ptr(), batch, flags, std::ptr::null_mut()) };
        if ret < 0 {
            return Err(io::Error::last_os_error());
        }
        for (i, hdr) in hdrs.iter().take(ret as usize).enumerate() {
            let len = hdr.msg_len as usize;
            if hdr.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                // Cannot happen (a slot holds the largest datagram or train); never echo a part.
                debug!("udp: dropped a truncated message of {len} bytes");
                continue;
            }
            let segment = gro_segment(&hdr.msg_hdr).unwrap_or(len);
            let from = sock_addr(&scratch.names[i], hdr.msg_hdr.msg_namelen);
            rx.received.push(Received { slot: i, len, segment, from });
        }
        Ok(ret as usize)
    }

    /// A sender's address as the kernel wrote it (`len` bytes of `name`).
    fn sock_addr(name: &libc::sockaddr_storage, len: libc::socklen_t) -> SockAddr {
        let mut storage = SockAddrStorage::zeroed();
        // SAFETY: `SockAddrStorage` wraps a `sockaddr_storage`; the kernel filled `name` with
        // an address of its family and `len`, which is what `SockAddr::new` asks for.
        unsafe {
            *storage.view_as::<libc::sockaddr_storage>() = *name;
            SockAddr::new(storage, len)
        }
    }

    /// The segment size in a received message's `UDP_GRO` control message, if it has one.
    fn gro_segment(hdr: &libc::msghdr) -> Option<usize> {
        // SAFETY: `hdr` is a header the kernel just filled; its control buffer and length are
        // the ones it wrote, and the CMSG_* functions stay within them.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(hdr);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == libc::SOL_UDP && (*cmsg).cmsg_type == UDP_GRO {
                    let size = libc::CMSG_DATA(cmsg).cast::<libc::c_int>().read_unaligned();
                    return usize::try_from(size).ok().filter(|&s| s > 0);
                }
                cmsg = libc::CMSG_NXTHDR(hdr, cmsg);
            }
        }
        None
    }

    /// Room for the control messages of one received message (`UDP_GRO`'s, after any the
    /// socket adds: [`RecvCmsg`]), for a receive that is not made here (io_uring's `recvmsg`).
    pub const CONTROL_ROOM: usize = mem::size_of::<RecvCmsg>();

    /// The segment size in the control messages `control` of a received message, if it is a
    /// train (what [`gro_segment`] reads from a header, for the bytes of an io_uring
    /// `recvmsg` result). `control` must be aligned as `cmsghdr` is.
    pub fn gro_segment_in(control: &[u8]) -> Option<usize> {
        if control.as_ptr().align_offset(mem::align_of::<libc::cmsghdr>()) != 0 {
            return None; // never for a buffer laid out as ours are; the macros would misread it
        }
        // SAFETY: `msghdr` is plain data; all zeroes is a valid (empty) value.
        let mut hdr: libc::msghdr = unsafe { mem::zeroed() };
        hdr.msg_control = control.as_ptr().cast_mut().cast(); // only read
        hdr.msg_controllen = control.len();
        gro_segment(&hdr)
    }

    /// The `UDP_SEGMENT` control message of one send that is not made here (io_uring's
    /// `sendmsg`): it lives as long as the send does, where the caller keeps it.
    #[derive(Clone, Copy)]
    pub struct SegmentControl(Cmsg);

    impl SegmentControl {
        pub fn new() -> SegmentControl {
            SegmentControl(Cmsg([0; 32]))
        }

        /// Make `hdr` a train the kernel splits into datagrams of `segment` bytes, its
        /// control message in `self` (which must stay put until the send is done).
        pub fn attach(&mut self, hdr: &mut libc::msghdr, segment: u16) {
            write_segment_cmsg(hdr, &mut self.0, segment);
        }
    }

    /// One `sendmmsg` over `entries` (at most [`BATCH`]): how many the kernel took, or the
    /// error that stopped the first one.
    pub fn send(fd: BorrowedFd<'_>, entries: &[Entry<'_>]) -> io::Result<usize> {
        let mut iovs = [libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; BATCH];
        let mut controls = [Cmsg([0; 32]); BATCH];
        // SAFETY: `mmsghdr` is plain data; all zeroes is a valid (empty) value.
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { mem::zeroed() };
        for (i, entry) in entries.iter().take(BATCH).enumerate() {
            let Message { peer, data, segment } = entry.message;
            // The kernel only reads through these pointers (msg_name, iov_base).
            iovs[i] = libc::iovec { iov_base: data.as_ptr().cast_mut().cast(), iov_len: data.len() };
            let hdr = &mut hdrs[i].msg_hdr;
            hdr.msg_name = peer.as_ptr().cast_mut().cast();
            hdr.msg_namelen = peer.len();
            hdr.msg_iov = &raw mut iovs[i];
            hdr.msg_iovlen = 1;
            if entry.as_train {
                // Segment sizes come from GRO or a caller's train; the kernel takes a u16.
                let segment =
                    u16::try_from(segment).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
                write_segment_cmsg(hdr, &mut controls[i], segment);
            }
        }
        let count = entries.len().min(BATCH) as libc::c_uint;
        // SAFETY: the first `count` headers point at `iovs`, `controls` (alive for the call)
        // and at the entries' addresses and bytes, which `entries` borrows for the call.
        let ret = unsafe { libc::sendmmsg(fd.as_raw_fd(), hdrs.as_mut_ptr(), count, 0) };
        if ret < 0 { Err(io::Error::last_os_error()) } else { Ok(ret as usize) }
    }

    /// Attach a `UDP_SEGMENT` control message (the segment size, a `u16`) to `hdr`, in
    /// `control`.
    fn write_segment_cmsg(hdr: &mut libc::msghdr, control: &mut Cmsg, segment: u16) {
        let payload = mem::size_of::<u16>() as libc::c_uint;
        hdr.msg_control = control.0.as_mut_ptr().cast();
        // SAFETY: CMSG_SPACE is a pure size computation.
        hdr.msg_controllen = unsafe { libc::CMSG_SPACE(payload) } as usize;
        // SAFETY: `control` is 8-byte aligned and 32 bytes, more than CMSG_SPACE(2) = 24, so
        // the first header and its data lie inside it.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(hdr);
            (*cmsg).cmsg_level = libc::SOL_UDP;
            (*cmsg).cmsg_type = UDP_SEGMENT;
            (*cmsg).cmsg_len = libc::CMSG_LEN(payload) as usize;
            libc::CMSG_DATA(cmsg).cast::<u16>().write_unaligned(segment);
        }
    }
}

/// Elsewhere: one datagram per call, no offload (see the module docs).
#[cfg(not(target_os = "linux"))]
mod sys {
    use std::io;
    use std::mem::MaybeUninit;
    use std::os::fd::BorrowedFd;

    use socket2::SockRef;

    use super::{Entry, Offload, Received, Receiver, SLOT};

    pub fn enable(_fd: BorrowedFd<'_>, _wanted: Offload) -> Offload {
        Offload::NONE
    }

    pub struct RecvScratch;

    impl RecvScratch {
        pub fn new(_batch: usize) -> RecvScratch {
            RecvScratch
        }
    }

    /// One `recv_from` into the first slot.
    pub fn recv(fd: BorrowedFd<'_>, rx: &mut Receiver) -> io::Result<usize> {
        let slot = &mut rx.slots[..SLOT];
        // SAFETY: `[u8]` and `[MaybeUninit<u8>]` have the same layout, and every byte of the
        // slot is initialised already; `recv_from` only writes bytes into it.
        let slot = unsafe { &mut *(slot as *mut [u8] as *mut [MaybeUninit<u8>]) };
        let (len, from) = SockRef::from(&fd).recv_from(slot)?;
        rx.received.push(Received { slot: 0, len, segment: len, from });
        Ok(1)
    }

    /// The first entry with `send_to` (never a train: there is no GSO here).
    pub fn send(fd: BorrowedFd<'_>, entries: &[Entry<'_>]) -> io::Result<usize> {
        let Some(entry) = entries.first() else { return Ok(0) };
        SockRef::from(&fd).send_to(entry.message.data, entry.message.peer).map(|_| 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::time::{Duration, Instant};

    /// A received message, owned: sender, bytes, segment size.
    type Owned = (SockAddr, Vec<u8>, usize);

    /// A loopback socket with a receive timeout.
    fn socket() -> UdpSocket {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        socket
    }

    /// A non-blocking loopback socket with `offload` asked for, and what it got.
    fn server(offload: Offload) -> (UdpSocket, Offload) {
        let socket = socket();
        socket.set_nonblocking(true).unwrap();
        let got = Offload::enable(&socket, offload);
        (socket, got)
    }

    /// Distinct bytes for datagram `i` of `len` bytes.
    fn datagram(i: usize, len: usize) -> Vec<u8> {
        (0..len).map(|j| (i * 31 + j * 7) as u8).collect()
    }

    fn message(owned: &Owned) -> Message<'_> {
        Message { peer: &owned.0, data: &owned.1, segment: owned.2 }
    }

    /// Receive until `want` datagrams (a train counting as its datagrams) have come.
    fn receive(rx: &mut Receiver, socket: &UdpSocket, want: usize) -> Vec<Owned> {
        let mut got: Vec<Owned> = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while got.iter().map(|m| message(m).count()).sum::<usize>() < want {
            match rx.recv(socket) {
                Ok(_) => got.extend(rx.messages().map(|m| (m.peer.clone(), m.data.to_vec(), m.segment))),
                Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(1))
                }
                Err(e) => panic!("recv: {e} with {} messages of {want} datagrams", got.len()),
            }
        }
        got
    }

    /// Echo `got` with one call of `tx`; every message must go. How many datagrams went.
    fn echo(tx: &mut Sender, socket: &UdpSocket, got: &[Owned]) -> usize {
        let messages: Vec<Message<'_>> = got.iter().map(message).collect();
        let mut sent = 0;
        tx.send(socket, &messages, |m, outcome| {
            assert!(matches!(outcome, Sent::Done), "{outcome:?}");
            sent += m.count();
        });
        sent
    }

    /// The next `count` datagrams `client` gets, each checked to come from `from`.
    fn replies(client: &UdpSocket, from: SocketAddr, count: usize) -> Vec<Vec<u8>> {
        let mut buf = vec![0; SLOT];
        (0..count)
            .map(|_| {
                let (n, source) = client.recv_from(&mut buf).expect("a reply");
                assert_eq!(source, from, "a reply comes from the address the datagram went to");
                buf[..n].to_vec()
            })
            .collect()
    }

    fn assert_nothing_more(client: &UdpSocket) {
        client.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        let extra = client.recv_from(&mut [0; 16]);
        assert!(extra.is_err(), "an extra datagram: {extra:?}");
    }

    /// Datagrams of every size from three senders, echoed in one call: each sender gets its
    /// own back, exactly, once each, in order, from the server's address.
    #[test]
    fn a_batch_from_several_senders_goes_back_to_each_exactly_once() {
        let (server, offload) = server(Offload::NONE);
        let server_addr = server.local_addr().unwrap();
        let (mut rx, mut tx) = (Receiver::new(BATCH), Sender::new(offload));
        let clients: Vec<UdpSocket> = (0..3).map(|_| socket()).collect();
        let sizes = [0, 1, 128, 1200, 9000];
        let want = |c: usize| -> Vec<Vec<u8>> {
            sizes.iter().enumerate().map(|(i, &size)| datagram(c * 10 + i, size)).collect()
        };
        for (c, client) in clients.iter().enumerate() {
            want(c).iter().for_each(|d| assert_eq!(client.send_to(d, server_addr).unwrap(), d.len()));
        }
        let got = receive(&mut rx, &server, clients.len() * sizes.len());
        assert!(got.iter().all(|m| !message(m).is_train()), "no train without GRO");
        assert_eq!(echo(&mut tx, &server, &got), clients.len() * sizes.len());
        for (c, client) in clients.iter().enumerate() {
            assert_eq!(replies(client, server_addr, sizes.len()), want(c), "client {c}");
            assert_nothing_more(client);
        }
    }

    /// The largest IPv4 datagram fits a slot whole.
    #[test]
    fn the_largest_datagram_comes_back_whole() {
        let (server, offload) = server(Offload { gro: true, gso: true });
        let (mut rx, mut tx) = (Receiver::new(BATCH), Sender::new(offload));
        let client = socket();
        let data = datagram(7, 65_507);
        client.send_to(&data, server.local_addr().unwrap()).unwrap();
        let got = receive(&mut rx, &server, 1);
        assert_eq!(echo(&mut tx, &server, &got), 1);
        assert_eq!(replies(&client, server.local_addr().unwrap(), 1), [data]);
    }

    #[test]
    fn one_call_takes_at_most_a_batch() {
        let (server, _) = server(Offload::NONE);
        let server_addr = server.local_addr().unwrap();
        let mut rx = Receiver::new(BATCH);
        let client = socket();
        for i in 0..BATCH + 10 {
            client.send_to(&datagram(i, 100), server_addr).unwrap();
        }
        assert_eq!(rx.recv(&server).unwrap(), BATCH);
        assert!(!rx.drained(), "a full batch may have left more behind");
        let first: Vec<Vec<u8>> = rx.messages().map(|m| m.data.to_vec()).collect();
        assert_eq!(first, (0..BATCH).map(|i| datagram(i, 100)).collect::<Vec<_>>());
        assert_eq!(rx.recv(&server).unwrap(), 10);
        assert!(rx.drained(), "a short batch took everything queued");
        assert_eq!(rx.recv(&server).unwrap_err().kind(), ErrorKind::WouldBlock);
        let mut small = Receiver::new(4);
        for i in 0..6 {
            client.send_to(&datagram(i, 10), server_addr).unwrap();
        }
        assert_eq!(small.recv(&server).unwrap(), 4, "a smaller batch is a smaller bound");
    }

    /// A client's train (sent by this module with GSO) arrives as one message where GRO is
    /// on, goes back as one send with its segment size (or datagram by datagram without
    /// GSO), and the client, without GRO, gets every datagram back exactly and in order,
    /// a shorter last one included.
    fn train_round_trip(server_offload: Offload, segment: usize, sizes: &[usize]) {
        let (server, offload) = server(server_offload);
        let server_addr = server.local_addr().unwrap();
        let (mut rx, mut tx) = (Receiver::new(BATCH), Sender::new(offload));
        let client = socket();
        let client_offload = Offload::enable(&client, Offload { gro: false, gso: true });
        let want: Vec<Vec<u8>> = sizes.iter().enumerate().map(|(i, &len)| datagram(i, len)).collect();
        let train = (SockAddr::from(server_addr), want.concat(), segment);
        assert_eq!(echo(&mut Sender::new(client_offload), &client, &[train]), sizes.len());

        let got = receive(&mut rx, &server, sizes.len());
        if offload.gro && client_offload.gso {
            assert_eq!(got.len(), 1, "one message for the whole train");
            assert_eq!(got[0].2, segment, "the segment size it was sent with");
        } else {
            assert_eq!(got.len(), sizes.len(), "one message per datagram");
        }
        assert_eq!(echo(&mut tx, &server, &got), sizes.len(), "one reply per datagram");
        assert_eq!(replies(&client, server_addr, sizes.len()), want);
        assert_nothing_more(&client);
    }

    #[test]
    fn a_train_is_echoed_as_it_came() {
        train_round_trip(Offload { gro: true, gso: true }, 1200, &[1200; 32]);
    }

    #[test]
    fn a_train_whose_last_datagram_is_shorter() {
        let mut sizes = vec![1000; 10];
        sizes.push(300);
        train_round_trip(Offload { gro: true, gso: true }, 1000, &sizes);
    }

    #[test]
    fn without_gso_a_train_goes_back_datagram_by_datagram() {
        train_round_trip(Offload { gro: true, gso: false }, 1200, &[1200; 32]);
    }

    #[test]
    fn without_gro_every_datagram_is_a_message() {
        train_round_trip(Offload::NONE, 500, &[500, 500, 500, 120]);
    }

    #[test]
    fn messages_count_and_split_their_datagrams() {
        let peer = SockAddr::from(SocketAddr::from(([127, 0, 0, 1], 9)));
        let empty = Message::single(&peer, b"");
        assert_eq!((empty.count(), empty.datagrams().collect::<Vec<_>>()), (1, vec![&b""[..]]));
        let one = Message::single(&peer, b"abc");
        assert_eq!(one.datagrams().collect::<Vec<_>>(), [b"abc"]);
        let train = Message { peer: &peer, data: b"aabbc", segment: 2 };
        assert!(train.is_train());
        assert_eq!(train.count(), 3);
        assert_eq!(train.datagrams().collect::<Vec<_>>(), [&b"aa"[..], b"bb", b"c"]);
        assert_eq!(train.peer_addr(), Some(SocketAddr::from(([127, 0, 0, 1], 9))));
    }
}
