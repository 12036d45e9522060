//! The ring: setting it up, finding out whether the kernel lets us, and the three things the
//! loop does with it: queue a request, enter the kernel once per turn, take the completions.
//!
//! Whether io_uring works is a property of the kernel *and* its configuration: an old kernel
//! lacks the operations (multishot accept and provided-buffer rings arrived in Linux 5.19), a
//! sysctl (`kernel.io_uring_disabled`) or a seccomp filter (Docker's default profile, for one)
//! refuses the system calls with EPERM or ENOSYS. [`probe`] asks the kernel before the server
//! announces its address, so a refusal is one line naming what is missing, and exit 1.
//!
//! Every request costs the kernel a completion, and a multishot request may post many: its
//! last one is the one without `IORING_CQE_F_MORE`. [`Ring`] counts requests in flight that
//! way, so the loop knows when the kernel holds no pointer into our memory any more.

use std::io::{self, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::ptr::NonNull;
use std::thread::{self, ThreadId};
use std::time::Duration;

use io_uring::types::{CancelBuilder, Fd, SubmitArgs, Timespec};
use io_uring::{IoUring, Probe, Submitter, cqueue, opcode, squeue};

use super::buffers::BufRing;
use super::op::Op;
use crate::config::UringRecv;
use crate::lifecycle::wait_limit;
use crate::net::interrupted;

/// Submission queue slots. A full queue is flushed with an extra `io_uring_enter` (see
/// [`Ring::push`]), so this bounds the batch, not the number of connections.
const SQ_ENTRIES: u32 = 4096;

/// Completion queue slots: room for a recv and a send completion of several thousand busy
/// connections per turn. More are not lost: the kernel keeps overflow aside (FEAT_NODROP).
const CQ_ENTRIES: u32 = 4 * SQ_ENTRIES;

/// A kernel capability the io-uring model needs, named for the error message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Capability {
    /// `IORING_OP_ACCEPT` (multishot since 5.19).
    Accept,
    /// `IORING_OP_RECV` (with provided buffers).
    Recv,
    /// `IORING_OP_SEND`.
    Send,
    /// `IORING_OP_POLL_ADD`, for the shutdown eventfd.
    PollAdd,
    /// `IORING_OP_ASYNC_CANCEL`, to stop a recv or an accept.
    AsyncCancel,
    /// `IORING_FEAT_EXT_ARG`: a timeout on the wait itself (5.11), our timer.
    WaitTimeout,
    /// `IORING_REGISTER_PBUF_RING`: provided-buffer rings (5.19).
    BufferRing,
}

impl Capability {
    /// What to tell the user.
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Capability::Accept => "the accept operation (IORING_OP_ACCEPT)",
            Capability::Recv => "the recv operation (IORING_OP_RECV)",
            Capability::Send => "the send operation (IORING_OP_SEND)",
            Capability::PollAdd => "the poll operation (IORING_OP_POLL_ADD)",
            Capability::AsyncCancel => "the cancel operation (IORING_OP_ASYNC_CANCEL)",
            Capability::WaitTimeout => "timeouts on the wait (IORING_FEAT_EXT_ARG, Linux 5.11)",
            Capability::BufferRing => {
                "provided-buffer rings and multishot accept (IORING_REGISTER_PBUF_RING, Linux 5.19)"
            }
        }
    }
}

/// What a kernel said it can do; filled in by [`probe`], judged by [`first_missing`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Support {
    /// Opcodes: accept, recv, send, poll-add, async-cancel.
    pub ops: [bool; 5],
    /// `IORING_FEAT_EXT_ARG`.
    pub wait_timeout: bool,
    /// A provided-buffer ring could be registered.
    pub buffer_ring: bool,
}

/// The first capability the model needs that `support` lacks, or `None` when all are there.
pub(crate) fn first_missing(support: &Support) -> Option<Capability> {
    use Capability::*;
    let ops = [Accept, Recv, Send, PollAdd, AsyncCancel];
    if let Some(i) = support.ops.iter().position(|&ok| !ok) {
        return Some(ops[i]);
    }
    if !support.wait_timeout {
        return Some(WaitTimeout);
    }
    if !support.buffer_ring {
        return Some(BufferRing);
    }
    None
}

/// Why the kernel refused to set up a ring, in words; `Unsupported` for the refusals that
/// mean "this system does not allow io_uring" (the tests skip the model on exactly those).
pub(crate) fn setup_refused(e: io::Error) -> io::Error {
    match e.raw_os_error() {
        Some(libc::ENOSYS) => io::Error::new(
            io::ErrorKind::Unsupported,
            "io_uring is not available: the kernel has no io_uring_setup (ENOSYS)",
        ),
        Some(libc::EPERM | libc::EACCES) => io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "io_uring is not permitted ({e}): disabled by the kernel.io_uring_disabled sysctl \
                 or a seccomp filter"
            ),
        ),
        _ => io::Error::new(e.kind(), format!("cannot set up an io_uring: {e}")),
    }
}

/// Ask this kernel whether the io-uring model can run: one line naming the missing
/// capability (`ErrorKind::Unsupported`) if not.
pub(crate) fn probe() -> io::Result<()> {
    let ring = IoUring::new(8).map_err(setup_refused)?;
    let mut probe = Probe::new();
    ring.submitter().register_probe(&mut probe).map_err(setup_refused)?;
    let supported = |code| probe.is_supported(code);
    let support = Support {
        ops: [
            supported(opcode::AcceptMulti::CODE),
            supported(opcode::Recv::CODE),
            supported(opcode::Send::CODE),
            supported(opcode::PollAdd::CODE),
            supported(opcode::AsyncCancel::CODE),
        ],
        wait_timeout: ring.params().is_feature_ext_arg(),
        buffer_ring: can_register_buffer_ring(&ring),
    };
    match first_missing(&support) {
        None => Ok(()),
        Some(missing) => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("io_uring on this kernel lacks {}", missing.describe()),
        )),
    }
}

/// Register a one-buffer ring and take it back: the kernel answers EINVAL before 5.19.
fn can_register_buffer_ring(ring: &IoUring) -> bool {
    let Ok(mut buffers) = BufRing::new(1, 64) else { return false };
    if buffers.register(ring).is_err() {
        return false;
    }
    if ring.submitter().unregister_buf_ring(buffers.group()).is_err() {
        buffers.leak(); // still registered: never free what the kernel may use
    }
    true
}

/// `IORING_RECVSEND_POLL_FIRST`: a recv waits for data before it takes a buffer, instead of
/// trying at once; so a recv armed on a quiet socket never fails for want of a buffer.
const RECV_POLL_FIRST: u16 = 1;

/// How connections receive, as chosen from `--uring-recv` and what the kernel offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RecvMode {
    /// One recv per completion, armed again by the loop each time.
    Single,
    /// One multishot recv: a completion per provided buffer it fills, until the byte limit
    /// it was armed with is reached (then a completion without `F_MORE`), or an error.
    Multishot,
    /// The same, but one completion may carry several buffers (a bundle).
    Bundle,
}

impl RecvMode {
    /// The mode `wanted` asks for on a kernel that can (`limit`) or cannot cap a multishot
    /// recv's bytes, and has (`bundles`) or lacks recv bundles; or why it cannot be had. A
    /// multishot recv without a cap is never used: it would receive past `--max-pending`.
    pub(super) fn choose(wanted: UringRecv, limit: bool, bundles: bool) -> Result<RecvMode, String> {
        let no_limit = |mode: &str| {
            format!(
                "--uring-recv {mode}: this kernel cannot cap a multishot recv's bytes \
                 (IORING_RECV_MSHOT_LIM, Linux 6.17), and --max-pending would not hold without it"
            )
        };
        match wanted {
            UringRecv::Single => Ok(RecvMode::Single),
            UringRecv::Multishot if limit => Ok(RecvMode::Multishot),
            UringRecv::Bundle if limit && bundles => Ok(RecvMode::Bundle),
            UringRecv::Auto if limit && bundles => Ok(RecvMode::Bundle),
            UringRecv::Auto if limit => Ok(RecvMode::Multishot),
            UringRecv::Auto => Ok(RecvMode::Single),
            UringRecv::Bundle if limit => {
                Err("--uring-recv bundle: this kernel lacks recv bundles (IORING_FEAT_RECVSEND_BUNDLE)"
                    .into())
            }
            other => Err(no_limit(other.name())),
        }
    }

    /// For the debug log: what each recv request does.
    pub(super) fn describe(self) -> &'static str {
        match self {
            RecvMode::Single => "single-shot recvs, one buffer per completion, armed again each time",
            RecvMode::Multishot => {
                "multishot recvs (one buffer per completion), each capped at the room under --max-pending"
            }
            RecvMode::Bundle => {
                "multishot recvs in bundles (several buffers per completion), each capped at the room \
                 under --max-pending"
            }
        }
    }
}

/// The kernel's `struct io_uring_sqe` (include/uapi/linux/io_uring.h), 64 bytes, with the
/// unions named by the member a recv uses. `optlen` (at byte 44, in a union with
/// `splice_fd_in`, `file_index` and `addr_len`) is what `io_recvmsg_prep` reads as a
/// multishot recv's byte limit (`sr->mshot_total_len`; `len` is the per-receive cap,
/// `mshot_len`). The io-uring crate (0.7.16, its newest release) has no setter for it.
#[repr(C)]
struct RawSqe {
    opcode: u8,
    flags: u8,
    ioprio: u16,
    fd: i32,
    off: u64,
    addr: u64,
    len: u32,
    msg_flags: u32,
    user_data: u64,
    buf_group: u16,
    personality: u16,
    optlen: u32,
    addr3: u64,
    pad: u64,
}
const _: () = {
    assert!(size_of::<RawSqe>() == 64 && size_of::<squeue::Entry>() == 64);
    assert!(align_of::<RawSqe>() <= align_of::<squeue::Entry>());
    assert!(std::mem::offset_of!(RawSqe, optlen) == 44);
    assert!(std::mem::offset_of!(RawSqe, user_data) == 32);
};

/// `entry`, a multishot recv, with its byte limit set: the kernel ends the recv (a completion
/// without `F_MORE`) once it has received `limit` bytes, and a bundle never goes past it
/// (`IORING_RECV_MSHOT_LIM`, Linux 6.17). Kernels before it refuse the request with EINVAL
/// (the field had to be 0), which [`caps_multishot_recv`] finds out before the server starts.
fn with_byte_limit(mut entry: squeue::Entry, limit: u32) -> squeue::Entry {
    // SAFETY: `squeue::Entry` is `#[repr(C)]` around the kernel's `io_uring_sqe`, which
    // `RawSqe` mirrors: same size, no padding, alignment no stricter (checked above), so the
    // pointer is aligned and in bounds. Every byte of an entry is an initialised integer (the
    // crate's builders start from zeroes), valid for `RawSqe`'s integer fields. The `&mut`
    // is the only reference to `entry` while it lives.
    let raw = unsafe { &mut *(&raw mut entry).cast::<RawSqe>() };
    raw.optlen = limit;
    entry
}

/// The byte limit to arm a multishot recv with so that it brings at most `room` bytes in
/// all, or `None` when a single-shot recv must do (`mode` is single, or the room is too small).
///
/// A bundle is cut by the kernel to the limit left, so its limit is the room. A plain
/// multishot recv is not: the kernel checks the limit only after each receive, and a receive
/// fills up to a whole buffer, so the last one may end up to `buffer - 1` bytes past the
/// limit. Its limit is therefore the room less that; a room smaller than one buffer gets a
/// single-shot recv of exactly the room. (Armed with the room itself, a multishot recv
/// could leave a connection `buffer - 1` bytes over the cap, past what its `PendingBuf`
/// takes: the bug `every_receive_mode_echoes_many_clients_exactly_through_a_tiny_ring`
/// in tests/integration/io_uring.rs caught.)
fn multishot_limit(mode: RecvMode, room: usize, buffer: usize) -> Option<u32> {
    let limit = match mode {
        RecvMode::Single => return None,
        RecvMode::Bundle => room,
        RecvMode::Multishot => room.checked_sub(buffer - 1).filter(|&limit| limit > 0)?,
    };
    Some(u32::try_from(limit).unwrap_or(u32::MAX)) // 4 GiB: never reached in one go
}

/// Can this kernel cap a multishot recv's bytes? Asked of a small ring of its own: a capped
/// recv of 1 byte on a socket pair holding 2 either completes with its last completion
/// (capped), or is refused with EINVAL (an older kernel).
fn caps_multishot_recv() -> bool {
    let Ok(mut ring) = IoUring::new(4) else { return false };
    let Ok(mut buffers) = BufRing::new(1, 64) else { return false };
    if buffers.register(&ring).is_err() {
        return false;
    }
    let answer = (|| {
        let (ours, mut theirs) = UnixStream::pair().ok()?;
        theirs.write_all(b"hi").ok()?;
        let recv = opcode::RecvMulti::new(Fd(ours.as_raw_fd()), buffers.group()).build();
        // SAFETY: the entry points at no memory of ours (a descriptor and a buffer group).
        unsafe { ring.submission().push(&with_byte_limit(recv, 1)) }.ok()?;
        ring.submit_and_wait(1).ok()?;
        let cqe = ring.completion().next()?;
        Some(cqe.result() > 0 && !cqueue::more(cqe.flags()))
    })();
    if answer != Some(true) || ring.submitter().unregister_buf_ring(buffers.group()).is_err() {
        buffers.leak(); // a recv may still be armed on it: never free what the kernel may use
    }
    answer == Some(true)
}

/// The ring and the provided buffers registered with it, which must not be freed while the
/// kernel may still write into them; the count of requests the kernel still holds says when.
///
/// Requests go in through one method each. All but [`Ring::send`] are safe: they point at no
/// memory of ours (a descriptor, a buffer group, another request's `user_data`), or only at
/// the provided buffers, which the ring itself owns and never frees under the kernel (see
/// `Drop`). A send out of a connection's own memory is the one request whose pointer the
/// caller must keep alive, so it is the one `unsafe fn`.
pub(super) struct Ring {
    uring: Uring,
    /// Receive buffers the kernel picks from.
    pub buffers: BufRing,
    /// How [`Ring::recv`] receives.
    recv_mode: RecvMode,
    /// Requests pushed whose final completion has not been taken yet.
    in_flight: usize,
}

impl Ring {
    /// A ring with deferred task work when the kernel has it (completions are then produced
    /// only inside our `io_uring_enter`, never by interrupting the thread), and the buffers
    /// registered with it.
    ///
    /// The ring starts disabled (`IORING_SETUP_R_DISABLED`): a single-issuer ring belongs to
    /// the thread that enables it, and the server is built on one thread (before `listening
    /// on`) but may run on another. [`Ring::enable`] hands it to the thread that runs it.
    ///
    /// The receive mode is `wanted`, as far as the kernel has it (`--uring-recv auto`), or an
    /// error that says what the kernel lacks (asked for by name).
    pub(super) fn new(buffers: BufRing, wanted: UringRecv) -> io::Result<Ring> {
        let uring = IoUring::builder()
            .setup_cqsize(CQ_ENTRIES)
            .setup_r_disabled()
            .setup_submit_all()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .build(SQ_ENTRIES)
            .or_else(|e| {
                log::debug!("io_uring with deferred task work refused ({e}); using a plain ring");
                IoUring::builder().setup_cqsize(CQ_ENTRIES).setup_r_disabled().build(SQ_ENTRIES)
            })
            .map_err(setup_refused)?;
        let bundles = uring.params().is_feature_recvsend_bundle();
        let recv_mode = RecvMode::choose(wanted, caps_multishot_recv(), bundles)
            .map_err(|e| io::Error::new(io::ErrorKind::Unsupported, e))?;
        let mut ring = Ring { uring: Uring::new(uring), buffers, recv_mode, in_flight: 0 };
        ring.buffers.register(ring.uring.io()).map_err(|e| {
            let count = ring.buffers.count();
            io::Error::new(
                e.kind(),
                format!("io_uring: cannot register {count} receive buffers (--uring-buffers {count}): {e}"),
            )
        })?;
        Ok(ring)
    }

    /// Make the calling thread the ring's only submitter and let requests in; then register
    /// the ring's descriptor with this thread, if the kernel lets us (see [`Uring`]).
    pub(super) fn enable(&mut self) -> io::Result<()> {
        self.uring.io().submitter().register_enable_rings()?;
        self.uring.register_descriptor();
        Ok(())
    }

    /// Queue the multishot accept on `listener`: a completion per accepted connection.
    pub(super) fn accept_multishot(&mut self, listener: RawFd, op: Op) -> io::Result<()> {
        let accept = opcode::AcceptMulti::new(Fd(listener)).flags(libc::SOCK_CLOEXEC);
        self.push_pointerless(&accept.build().user_data(op.encode()))
    }

    /// Queue a poll for `fd` becoming readable (the shutdown eventfd).
    pub(super) fn poll_readable(&mut self, fd: RawFd, op: Op) -> io::Result<()> {
        log::trace!("queue poll on WAKER (the shutdown eventfd) for readable");
        let poll = opcode::PollAdd::new(Fd(fd), libc::POLLIN as u32);
        self.push_pointerless(&poll.build().user_data(op.encode()))
    }

    /// How connections receive.
    pub(super) fn recv_mode(&self) -> RecvMode {
        self.recv_mode
    }

    /// Queue a recv of at most `room` bytes (more than 0) into whichever provided buffers are
    /// free when bytes arrive (none is taken while the socket is quiet): single-shot, at
    /// most one buffer; or multishot, as many completions as it takes to bring `room` bytes
    /// (a buffer, or a bundle of them, each), then its last completion. Never more than
    /// `room` in all, in any mode: that is what keeps `--max-pending` exact.
    pub(super) fn recv(&mut self, fd: RawFd, room: usize, op: Op) -> io::Result<()> {
        debug_assert!(room > 0, "a recv of nothing would be a recv without a limit");
        let group = self.buffers.group();
        let buffer = self.buffers.buffer_size();
        let recv = match (self.recv_mode, multishot_limit(self.recv_mode, room, buffer)) {
            (RecvMode::Multishot, Some(limit)) => {
                log::trace!(
                    "queue multishot recv fd={fd}: up to {room} bytes in all (limit {limit}), a provided buffer each"
                );
                with_byte_limit(opcode::RecvMulti::new(Fd(fd), group).build(), limit)
            }
            (RecvMode::Bundle, Some(limit)) => {
                log::trace!(
                    "queue multishot recv fd={fd}: up to {limit} bytes in all, in bundles of provided buffers"
                );
                with_byte_limit(opcode::RecvMultiBundle::new(Fd(fd), group).build(), limit)
            }
            _ => {
                let len = room.min(buffer) as u32; // a buffer's size fits in 32 bits
                log::trace!("queue recv fd={fd}: up to {len} bytes, into a provided buffer");
                opcode::Recv::new(Fd(fd), std::ptr::null_mut(), len)
                    .buf_group(group)
                    .ioprio(RECV_POLL_FIRST)
                    .build()
                    .flags(squeue::Flags::BUFFER_SELECT)
            }
        };
        self.push_pointerless(&recv.user_data(op.encode()))
    }

    /// Queue a send of the first `len` bytes of provided buffer `bid`, which a recv just
    /// handed to us, with `MSG_DONTWAIT` (so it completes at once, whatever the client does).
    /// The caller gives `bid` back to the ring only after this send's completion.
    pub(super) fn send_provided(&mut self, fd: RawFd, bid: u16, len: usize, op: Op) -> io::Result<()> {
        let data = self.buffers.data(bid, len); // checks that the bytes lie inside the pool
        log::trace!("queue send fd={fd} n={len} from buffer {bid} (MSG_DONTWAIT)");
        let send = opcode::Send::new(Fd(fd), data.as_ptr(), len as u32)
            .flags(libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
            .build()
            .user_data(op.encode());
        // SAFETY: the bytes are in the pool, which `self` owns and never unmaps while a
        // request is in flight (`Drop` leaks it instead). Were `bid` given back too soon, a
        // recv could overwrite the bytes before they leave: wrong bytes, never freed memory.
        unsafe { self.push(&send) }
    }

    /// Queue a send of `data`, waiting for room in the socket if need be.
    ///
    /// # Safety
    /// `data` must stay where it is, allocated and unchanged, until this send's completion
    /// has been reaped: the kernel reads it meanwhile, on its own time.
    pub(super) unsafe fn send(&mut self, fd: RawFd, data: &[u8], op: Op) -> io::Result<()> {
        let len = u32::try_from(data.len()).unwrap_or(u32::MAX); // a short send does the rest
        log::trace!("queue send fd={fd} n={len} from the outbox");
        let send = opcode::Send::new(Fd(fd), data.as_ptr(), len).flags(libc::MSG_NOSIGNAL).build();
        // SAFETY: the caller keeps `data` in place until the completion (this fn's contract).
        unsafe { self.push(&send.user_data(op.encode())) }
    }

    /// Cancel the request `target` names (its own completion reports the outcome).
    pub(super) fn cancel(&mut self, target: Op) -> io::Result<()> {
        let cancel = opcode::AsyncCancel::new(target.encode());
        self.push_pointerless(&cancel.build().user_data(Op::Cancel.encode()))
    }

    /// Cancel every request on descriptor `fd`.
    pub(super) fn cancel_fd(&mut self, fd: RawFd) -> io::Result<()> {
        log::trace!("queue cancel of every request on fd={fd}");
        let cancel = opcode::AsyncCancel2::new(CancelBuilder::fd(Fd(fd)).all());
        self.push_pointerless(&cancel.build().user_data(Op::Cancel.encode()))
    }

    /// [`Ring::push`] for an entry that points at no memory: nothing to keep alive.
    fn push_pointerless(&mut self, entry: &squeue::Entry) -> io::Result<()> {
        // SAFETY: the entries built above carry a descriptor, a buffer group or a
        // `user_data`, and no address; the kernel holds its own reference to the file.
        unsafe { self.push(entry) }
    }

    /// Queue a request; it goes to the kernel with the next [`Ring::enter`]. A full
    /// submission queue is flushed first (one extra system call, only in a large burst).
    ///
    /// # Safety
    /// Every pointer in `entry` must stay valid until its final completion is taken.
    unsafe fn push(&mut self, entry: &squeue::Entry) -> io::Result<()> {
        // SAFETY: the caller keeps what `entry` points to alive until its completion; the
        // queue is borrowed only for this push, so no other `SubmissionQueue` exists.
        while unsafe { self.uring.io().submission_shared().push(entry) }.is_err() {
            log::trace!("enter: the submission queue is full: submit {SQ_ENTRIES}, wait 0");
            match self.uring.with_submitter(|submitter| submitter.submit()) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    // The completion queue overflowed: the kernel takes no more until we
                    // reap. Nothing was lost; the caller's next turn reaps.
                    return Err(e);
                }
                Err(e) if interrupted(&e) => {} // a signal: again
                Err(e) => return Err(e),
            }
        }
        self.in_flight += 1;
        Ok(())
    }

    /// Hand every queued request to the kernel and wait for one completion, or until
    /// `timeout` passes: one `io_uring_enter` per loop turn. A timeout, a signal or a full
    /// completion queue is an ordinary return: the caller reaps, runs its timers, comes back.
    pub(super) fn enter(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        log::trace!(
            "enter: submit {}, wait 1 (timeout {})",
            // SAFETY: borrowed for this length alone: no other `SubmissionQueue` exists.
            unsafe { self.uring.io().submission_shared() }.len(),
            wait_limit(timeout)
        );
        let result = match timeout {
            None => self.uring.with_submitter(|submitter| submitter.submit_and_wait(1)),
            Some(timeout) => {
                let ts = Timespec::from(timeout);
                let args = SubmitArgs::new().timespec(&ts);
                self.uring.with_submitter(|submitter| submitter.submit_with_args(1, &args))
            }
        };
        let why = match result {
            Ok(_) => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ETIME) => "timed out: a timer is due",
            Err(e) if interrupted(&e) => "interrupted by a signal",
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => "the completion queue is full: reap first",
            Err(e) => return Err(e),
        };
        log::trace!("enter: {why}");
        Ok(())
    }

    /// Move every completion the kernel has posted into `into` (so the handlers may queue
    /// new requests while they look at them).
    pub(super) fn reap(&mut self, into: &mut Vec<cqueue::Entry>) {
        into.clear();
        // SAFETY: borrowed for this loop alone: no other `CompletionQueue` exists.
        into.extend(unsafe { self.uring.io().completion_shared() });
        let finished = into.iter().filter(|cqe| !cqueue::more(cqe.flags())).count();
        debug_assert!(finished <= self.in_flight, "more final completions than requests");
        self.in_flight = self.in_flight.saturating_sub(finished);
    }

    /// Requests the kernel still holds.
    pub(super) fn in_flight(&self) -> usize {
        self.in_flight
    }

    // UDP (`udp.rs`): a buffer group of its own, a multishot recvmsg, a sendmsg per reply.

    /// Register `buffers`, a group of datagram-sized buffers beside the streams' own.
    pub(super) fn register_buffers(&mut self, buffers: &mut BufRing) -> io::Result<()> {
        buffers.register(self.uring.io())
    }

    /// Take back a group [`Ring::register_buffers`] registered (nothing may be in flight
    /// that names it).
    pub(super) fn unregister_buffers(&mut self, buffers: &BufRing) -> io::Result<()> {
        self.uring.io().submitter().unregister_buf_ring(buffers.group())
    }

    /// Queue a multishot recvmsg on `fd` (Linux 6.0): a completion per datagram (or GRO
    /// train), each in a buffer of `group`, laid out as `types::RecvMsgOut` parses it: a
    /// header, the sender, the control messages, the payload. `template` says how much room
    /// to keep for the sender and the control messages; it carries no pointer.
    ///
    /// # Safety
    /// `template` must stay where it is, unchanged, until this request's final completion.
    pub(super) unsafe fn recvmsg_multishot(
        &mut self,
        fd: RawFd,
        template: &libc::msghdr,
        group: u16,
        op: Op,
    ) -> io::Result<()> {
        log::trace!("queue recvmsg fd={fd} (multishot: a completion per datagram, buffer group {group})");
        let recv = opcode::RecvMsgMulti::new(Fd(fd), template, group).build();
        // SAFETY: the caller keeps `template` in place until the final completion; the
        // buffers are the ring's own, in a group registered with it.
        unsafe { self.push(&recv.user_data(op.encode())) }
    }

    /// Queue a sendmsg of `msg` on `fd`, waiting for room in the socket if need be.
    ///
    /// # Safety
    /// `msg` and all it points at (address, iovec, bytes, control messages) must stay where
    /// they are, unchanged, until this send's completion has been reaped.
    pub(super) unsafe fn sendmsg(&mut self, fd: RawFd, msg: &libc::msghdr, op: Op) -> io::Result<()> {
        let send = opcode::SendMsg::new(Fd(fd), msg).build();
        // SAFETY: the caller keeps `msg` and what it points at in place (this fn's contract).
        unsafe { self.push(&send.user_data(op.encode())) }
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        if self.in_flight > 0 {
            // The kernel may still write into the buffers after the ring's file closes (its
            // cancellation runs asynchronously): leak them rather than risk that.
            log::warn!(
                "io_uring: {} requests still in flight at exit; leaking their buffers",
                self.in_flight
            );
            self.buffers.leak();
            return;
        }
        if let Err(e) = self.uring.io().submitter().unregister_buf_ring(self.buffers.group()) {
            log::debug!("io_uring: unregistering the buffer ring: {e}");
            self.buffers.leak();
        }
    }
}

/// The io_uring, and the [`Submitter`] that enters it by its *registered* descriptor.
///
/// `io_uring_enter` names the ring by a descriptor, which the kernel looks up on every call
/// (and, in a process with other threads, counts a reference to); registering it
/// (`IORING_REGISTER_RING_FDS`, Linux 5.18) lets each call name the ring by its index in
/// this thread's table instead. The io-uring crate keeps that index in the `Submitter` that
/// registered it, so that submitter must live as long as the ring: the ring is kept on the
/// heap, behind a pointer, and the submitter borrows it from there until `Drop` lets go of
/// both, the submitter first.
///
/// The index means something in the registering thread's table alone: on another thread
/// the same number names nothing, or *another* ring that thread registered (each `--workers`
/// loop has its own ring at index 0 of its own table). So the index is used, and taken back,
/// only on the thread that registered it ([`Registered::owner`]); anywhere else the ring is
/// entered by its descriptor, which is always right.
struct Uring {
    /// From `Box::into_raw`; freed in `Drop`, never moved meanwhile.
    ring: NonNull<IoUring>,
    /// The submitter holding the registered index, once [`Uring::register_descriptor`] ran.
    registered: Option<Registered>,
}

/// A submitter that enters by a registered index, and the thread whose table holds it.
struct Registered {
    submitter: Submitter<'static>,
    owner: ThreadId,
}

impl Registered {
    /// The submitter, if this is the thread whose table holds its index.
    fn here(&mut self) -> Option<&mut Submitter<'static>> {
        (thread::current().id() == self.owner).then_some(&mut self.submitter)
    }
}

impl Uring {
    fn new(ring: IoUring) -> Uring {
        Uring { ring: NonNull::from(Box::leak(Box::new(ring))), registered: None }
    }

    /// The ring.
    fn io(&self) -> &IoUring {
        // SAFETY: the ring lives, unmoved, until `Drop`; only shared references are made.
        unsafe { self.ring.as_ref() }
    }

    /// `f` with the submitter that enters by the registered index (on the thread that
    /// registered it), or with a plain one.
    fn with_submitter<R>(&mut self, f: impl FnOnce(&Submitter<'_>) -> R) -> R {
        match self.registered.as_mut().and_then(Registered::here) {
            Some(registered) => f(registered),
            // SAFETY: as in `io`.
            None => f(&unsafe { self.ring.as_ref() }.submitter()),
        }
    }

    /// Register the ring's descriptor with the calling thread (the one that runs the loop:
    /// the index is valid in this thread alone). Where the kernel refuses, say so and go on
    /// by the descriptor: it is a saving, not a need. Once is enough: a second call keeps
    /// the first registration.
    fn register_descriptor(&mut self) {
        if self.registered.is_some() {
            return;
        }
        // SAFETY: the submitter borrows the ring, which stays where it is until `Drop`, and
        // `Drop` drops the submitter before it frees the ring: 'static is never relied on.
        let ring: &'static IoUring = unsafe { &*self.ring.as_ptr() };
        let mut submitter = ring.submitter();
        match submitter.register_ring_fd() {
            Ok(()) => {
                log::debug!("io_uring: ring descriptor registered: each enter names it by index");
                self.registered = Some(Registered { submitter, owner: thread::current().id() });
            }
            Err(e) => log::debug!("io_uring: ring descriptor not registered ({e}): entering by descriptor"),
        }
    }
}

// SAFETY: the ring (`IoUring` is `Send`) and the submitter's pointers into it are owned by
// this value alone and move with it. The registered index is used and taken back only on
// the thread that registered it (`Registered::here`); on any other it is left alone, and
// the ring is entered by its descriptor.
unsafe impl Send for Uring {}

impl Drop for Uring {
    fn drop(&mut self) {
        if let Some(mut registered) = self.registered.take() {
            match registered.here() {
                Some(submitter) => {
                    if let Err(e) = submitter.unregister_ring_fd() {
                        log::debug!("io_uring: unregistering the ring descriptor: {e}");
                    }
                }
                // Not ours to take back from here: the registering thread's table keeps a
                // reference to the ring until that thread exits; the memory is the kernel's.
                None => log::debug!("io_uring: dropped off its thread; its registered index stays"),
            }
        }
        // SAFETY: made by `Box::leak` in `new`, freed once, after the submitter is gone.
        drop(unsafe { Box::from_raw(self.ring.as_ptr()) });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: Support = Support { ops: [true; 5], wait_timeout: true, buffer_ring: true };

    #[test]
    fn a_complete_kernel_lacks_nothing() {
        assert_eq!(first_missing(&ALL), None);
    }

    #[test]
    fn the_first_missing_capability_is_named() {
        let mut support = ALL;
        support.ops[0] = false;
        support.buffer_ring = false;
        assert_eq!(first_missing(&support), Some(Capability::Accept));
        let old_kernel = Support { buffer_ring: false, ..ALL }; // 5.11 to 5.18
        assert_eq!(first_missing(&old_kernel), Some(Capability::BufferRing));
        assert!(Capability::BufferRing.describe().contains("5.19"));
        let no_ext_arg = Support { wait_timeout: false, ..ALL };
        assert_eq!(first_missing(&no_ext_arg), Some(Capability::WaitTimeout));
    }

    #[test]
    fn a_multishot_recv_is_used_only_where_the_kernel_can_cap_it() {
        use RecvMode::*;
        assert_eq!(RecvMode::choose(UringRecv::Auto, true, true), Ok(Bundle));
        assert_eq!(RecvMode::choose(UringRecv::Auto, true, false), Ok(Multishot));
        assert_eq!(RecvMode::choose(UringRecv::Auto, false, true), Ok(Single), "no cap: single-shot");
        assert_eq!(RecvMode::choose(UringRecv::Single, true, true), Ok(Single));
        assert_eq!(RecvMode::choose(UringRecv::Multishot, true, true), Ok(Multishot));
        let refused = RecvMode::choose(UringRecv::Multishot, false, true).unwrap_err();
        assert!(refused.contains("--uring-recv multishot") && refused.contains("6.17"), "{refused}");
        let refused = RecvMode::choose(UringRecv::Bundle, true, false).unwrap_err();
        assert!(refused.contains("bundles"), "{refused}");
    }

    /// No mode's recv can bring more than the room: a plain multishot recv is armed a buffer
    /// short of it (its last receive may fill a whole buffer past the limit), and near the
    /// cap a single-shot recv of exactly the room stands in.
    #[test]
    fn a_recv_is_armed_to_bring_at_most_the_room() {
        use RecvMode::*;
        assert_eq!(multishot_limit(Bundle, 10_000, 4096), Some(10_000), "the kernel cuts a bundle");
        assert_eq!(multishot_limit(Multishot, 10_000, 4096), Some(10_000 - 4095));
        assert_eq!(multishot_limit(Multishot, 4096, 4096), Some(1), "one receive of a buffer at most");
        assert_eq!(multishot_limit(Multishot, 4095, 4096), None, "less than a buffer: single-shot");
        assert_eq!(multishot_limit(Single, 10_000, 4096), None);
        assert_eq!(multishot_limit(Bundle, usize::MAX, 4096), Some(u32::MAX), "lingering: no limit");
    }

    /// The field written is the kernel's `optlen`, and nothing else changes.
    #[test]
    fn the_byte_limit_lands_in_optlen_alone() {
        let plain = opcode::RecvMulti::new(Fd(7), 0).build().user_data(9);
        let limited = with_byte_limit(plain.clone(), 0x0102_0304);
        // SAFETY: both are 64 plain bytes (checked at compile time above).
        let bytes = |entry: &squeue::Entry| unsafe { *(entry as *const squeue::Entry).cast::<[u8; 64]>() };
        let (before, after) = (bytes(&plain), bytes(&limited));
        assert_eq!(after[44..48], 0x0102_0304u32.to_ne_bytes());
        assert_eq!(before[..44], after[..44]);
        assert_eq!(before[48..], after[48..]);
    }

    /// A ring whose descriptor was registered on one thread and that is dropped on another
    /// takes back nothing there: another ring registered on that thread, at the same index
    /// of its own table, still enters. (It took back that ring's index, and the other
    /// ring's next enter failed with EBADF.)
    #[test]
    fn a_ring_dropped_off_its_thread_leaves_that_threads_registration_alone() {
        let Ok(moved) = IoUring::new(4) else { return eprintln!("skipped: no io_uring") };
        let mut moved = Uring::new(moved);
        let moved = thread::spawn(move || {
            moved.register_descriptor();
            moved
        })
        .join()
        .unwrap();
        let mut here = Uring::new(IoUring::new(4).unwrap());
        here.register_descriptor();
        if here.registered.is_none() {
            return eprintln!("skipped: the kernel does not register ring descriptors");
        }
        let mut moved = moved;
        assert_eq!(
            moved.with_submitter(|s| s.submit().map_err(|e| e.raw_os_error())),
            Ok(0),
            "by descriptor"
        );
        drop(moved);
        assert_eq!(here.with_submitter(|s| s.submit().map_err(|e| e.raw_os_error())), Ok(0));
    }

    #[test]
    fn refusals_by_policy_are_unsupported_other_failures_are_not() {
        let seccomp = setup_refused(io::Error::from_raw_os_error(libc::EPERM));
        assert_eq!(seccomp.kind(), io::ErrorKind::Unsupported);
        assert!(seccomp.to_string().contains("seccomp"), "{seccomp}");
        let no_syscall = setup_refused(io::Error::from_raw_os_error(libc::ENOSYS));
        assert_eq!(no_syscall.kind(), io::ErrorKind::Unsupported);
        let no_memory = setup_refused(io::Error::from_raw_os_error(libc::ENOMEM));
        assert_ne!(no_memory.kind(), io::ErrorKind::Unsupported);
    }
}
