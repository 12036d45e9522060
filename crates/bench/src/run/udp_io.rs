//! Batched datagram I/O for the UDP load: the generator must cost the kernel less per
//! datagram than the servers it measures, or it, not they, is what a run measures. So it
//! sends and receives as a batching server would:
//!
//! - `sendmmsg`: up to [`BATCH`] datagrams per call;
//! - `UDP_SEGMENT` (GSO): a train of equal-sized datagrams (the last may be shorter) goes to
//!   the kernel as one message, which the kernel splits as late as it can;
//! - `recvmmsg` with `UDP_GRO`: replies come up to [`BATCH`] messages per call, and a train
//!   the kernel kept whole (a server that echoed it with GSO) comes as one message, split
//!   here by the segment size in its control message.
//!
//! Every socket here is connected, so no message carries an address. Without kernel
//! support (GSO since Linux 4.18, GRO since 5.0) each datagram is its own message.

use std::io;
use std::mem;
use std::os::fd::{AsRawFd, BorrowedFd};

/// Messages per `sendmmsg` / `recvmmsg`.
pub const BATCH: usize = 64;
/// The largest UDP payload, and so the most one GSO message may carry.
const MAX_TRAIN_BYTES: usize = 65_507;
/// The most datagrams the kernel splits one GSO message into (`UDP_MAX_SEGMENTS`).
const MAX_SEGMENTS: usize = 64;
/// A receive slot: the largest datagram, or the largest train GRO builds.
const SLOT: usize = 64 * 1024;
/// `UDP_SEGMENT` and `UDP_GRO` from `<linux/udp.h>`.
const UDP_SEGMENT: libc::c_int = 103;
const UDP_GRO: libc::c_int = 104;

/// Room for one control message with an `int` or a `u16`, aligned for `cmsghdr`.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
struct Cmsg([u8; 32]);

/// Turn on GRO for `fd` and check that GSO works; return whether GSO does.
pub fn enable_offload(fd: BorrowedFd<'_>) -> bool {
    let _ = set_udp_option(fd, UDP_GRO, 1); // without it, a train arrives as its datagrams
    set_udp_option(fd, UDP_SEGMENT, 0).is_ok() // 0: no default segment size
}

fn set_udp_option(fd: BorrowedFd<'_>, option: libc::c_int, value: libc::c_int) -> io::Result<()> {
    let len = mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: a valid descriptor and a pointer to an `int` that outlives the call.
    let ret =
        unsafe { libc::setsockopt(fd.as_raw_fd(), libc::SOL_UDP, option, (&raw const value).cast(), len) };
    if ret == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// Send the datagrams laid out back to back in `wire` (lengths `lens`, at most [`BATCH`])
/// in one `sendmmsg`, in trains of `train`: with `gso`, each train whose datagrams share a
/// size (the last may be shorter) is one message. Returns how many datagrams, from the
/// first, the kernel took; `Err` only if it took none.
pub fn send(fd: BorrowedFd<'_>, wire: &[u8], lens: &[usize], train: usize, gso: bool) -> io::Result<usize> {
    let mut iovs = [libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; BATCH];
    let mut controls = [Cmsg([0; 32]); BATCH];
    let mut counts = [0usize; BATCH];
    // SAFETY: `mmsghdr` is plain data; all zeroes is a valid (empty) value.
    let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { mem::zeroed() };
    let (mut entries, mut start, mut offset) = (0, 0, 0);
    while start < lens.len().min(BATCH) {
        let group = &lens[start..lens.len().min(start + train.max(1))];
        let count = if gso && splittable(group) { group.len() } else { 1 };
        let bytes: usize = group[..count].iter().sum();
        iovs[entries] = libc::iovec { iov_base: wire[offset..].as_ptr().cast_mut().cast(), iov_len: bytes };
        let hdr = &mut hdrs[entries].msg_hdr;
        hdr.msg_iov = &raw mut iovs[entries]; // the kernel only reads the bytes
        hdr.msg_iovlen = 1;
        if count > 1 {
            write_segment_cmsg(hdr, &mut controls[entries], group[0] as u16);
        }
        counts[entries] = count;
        (entries, start, offset) = (entries + 1, start + count, offset + bytes);
    }
    // SAFETY: the first `entries` headers point at `iovs`, `controls` and `wire`, all alive
    // for the call.
    let ret = unsafe { libc::sendmmsg(fd.as_raw_fd(), hdrs.as_mut_ptr(), entries as libc::c_uint, 0) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(counts[..ret as usize].iter().sum())
}

/// A train GSO can carry: more than one datagram, all of the first one's size but the last
/// (which may be shorter), within the kernel's limits.
fn splittable(group: &[usize]) -> bool {
    let Some((&last, rest)) = group.split_last() else { return false };
    let Some(&size) = rest.first() else { return false };
    size > 0
        && size <= usize::from(u16::MAX)
        && rest.iter().all(|&len| len == size)
        && last <= size
        && group.len() <= MAX_SEGMENTS
        && group.iter().sum::<usize>() <= MAX_TRAIN_BYTES
}

/// Attach a `UDP_SEGMENT` control message (a `u16`) to `hdr`, in `control`.
fn write_segment_cmsg(hdr: &mut libc::msghdr, control: &mut Cmsg, segment: u16) {
    let payload = mem::size_of::<u16>() as libc::c_uint;
    hdr.msg_control = control.0.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE is a size computation.
    hdr.msg_controllen = unsafe { libc::CMSG_SPACE(payload) } as usize;
    // SAFETY: `control` is 8-byte aligned and 32 bytes, more than CMSG_SPACE(2), so the
    // first header and its data lie inside it.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(hdr);
        (*cmsg).cmsg_level = libc::SOL_UDP;
        (*cmsg).cmsg_type = UDP_SEGMENT;
        (*cmsg).cmsg_len = libc::CMSG_LEN(payload) as usize;
        libc::CMSG_DATA(cmsg).cast::<u16>().write_unaligned(segment);
    }
}

/// Receives up to [`BATCH`] messages per call into slots it owns.
pub struct Receiver {
    /// [`BATCH`] slots of [`SLOT`] bytes (allocated zeroed: untouched pages cost nothing).
    slots: Box<[u8]>,
    controls: Box<[Cmsg]>,
    /// The last call's messages: length and segment size.
    received: Vec<(usize, usize)>,
}

impl Receiver {
    pub fn new() -> Receiver {
        Receiver {
            slots: vec![0; BATCH * SLOT].into_boxed_slice(),
            controls: vec![Cmsg([0; 32]); BATCH].into_boxed_slice(),
            received: Vec::with_capacity(BATCH),
        }
    }

    /// One `recvmmsg` without waiting: `Ok(n)` messages, or `WouldBlock` if none waited.
    pub fn recv(&mut self, fd: BorrowedFd<'_>) -> io::Result<usize> {
        self.received.clear();
        let mut iovs = [libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; BATCH];
        // SAFETY: `mmsghdr` is plain data; all zeroes is a valid (empty) value.
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { mem::zeroed() };
        for (i, (slot, control)) in
            self.slots.chunks_exact_mut(SLOT).zip(self.controls.iter_mut()).enumerate()
        {
            iovs[i] = libc::iovec { iov_base: slot.as_mut_ptr().cast(), iov_len: SLOT };
            let hdr = &mut hdrs[i].msg_hdr;
            hdr.msg_iov = &raw mut iovs[i];
            hdr.msg_iovlen = 1;
            hdr.msg_control = control.0.as_mut_ptr().cast();
            hdr.msg_controllen = control.0.len();
        }
        // SAFETY: every header points at a slot and a control buffer this struct owns and at
        // `iovs`, valid for writes of the lengths given, for the call.
        let ret = unsafe {
            libc::recvmmsg(
                fd.as_raw_fd(),
                hdrs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if ret < 0 {
            return Err(io::Error::last_os_error());
        }
        for hdr in &hdrs[..ret as usize] {
            let len = hdr.msg_len as usize;
            self.received.push((len, gro_segment(&hdr.msg_hdr).unwrap_or(len)));
        }
        Ok(ret as usize)
    }

    /// The datagrams of the last call's messages, trains split, in the order they came.
    pub fn datagrams(&self) -> impl Iterator<Item = &[u8]> {
        self.slots.chunks_exact(SLOT).zip(&self.received).flat_map(|(slot, &(len, segment))| {
            let data = &slot[..len];
            let empty = data.is_empty().then_some(data); // an empty datagram is one too
            data.chunks(segment.max(1)).chain(empty)
        })
    }
}

/// The segment size in a `UDP_GRO` control message, if the message has one.
fn gro_segment(hdr: &libc::msghdr) -> Option<usize> {
    // SAFETY: the kernel just filled `hdr`; the CMSG_* functions stay inside the control
    // buffer and length it wrote.
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsFd;
    use std::time::Duration;

    fn pair() -> (UdpSocket, UdpSocket) {
        let (a, b) = (UdpSocket::bind("127.0.0.1:0").unwrap(), UdpSocket::bind("127.0.0.1:0").unwrap());
        a.connect(b.local_addr().unwrap()).unwrap();
        b.connect(a.local_addr().unwrap()).unwrap();
        b.set_nonblocking(true).unwrap();
        (a, b)
    }

    /// Receive until `want` datagrams came; each one's bytes.
    fn receive(rx: &mut Receiver, socket: &UdpSocket, want: usize) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while got.len() < want {
            match rx.recv(socket.as_fd()) {
                Ok(_) => got.extend(rx.datagrams().map(<[u8]>::to_vec)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    assert!(std::time::Instant::now() < deadline, "{} of {want}", got.len());
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => panic!("{e}"),
            }
        }
        got
    }

    #[test]
    fn trains_go_out_and_come_back_as_their_datagrams() {
        let (a, b) = pair();
        let gso = enable_offload(a.as_fd());
        enable_offload(b.as_fd());
        let lens = [1200, 1200, 1200, 500, 7, 7, 0, 9];
        let data: Vec<Vec<u8>> = lens.iter().enumerate().map(|(i, &n)| vec![i as u8; n]).collect();
        let sent = send(a.as_fd(), &data.concat(), &lens, 4, gso).unwrap();
        assert_eq!(sent, lens.len());
        assert_eq!(receive(&mut Receiver::new(), &b, lens.len()), data);
    }

    #[test]
    fn only_equal_sizes_within_limits_make_a_train() {
        assert!(splittable(&[1200, 1200, 300]));
        assert!(!splittable(&[1200]), "one datagram is no train");
        assert!(!splittable(&[300, 1200]), "only the last may differ, and only shorter");
        assert!(!splittable(&[0, 0]));
        assert!(!splittable(&[1200; 60]), "over 65,507 bytes");
        assert!(!splittable(&[10; 65]), "over 64 segments");
    }
}
