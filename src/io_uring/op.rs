//! What a completion is about, packed into the 64-bit `user_data` its request carried.
//!
//! The kernel hands `user_data` back untouched in the completion; it is our only way to tell
//! completions apart (the role a `mio::Token` plays for readiness events). The low byte says
//! which operation, the rest is the connection's slab key. A slab slot is freed only after
//! the last completion of its connection has been taken (see `Loop::close`), so a completion
//! can never reach a later connection that reused the slot.

/// One kind of request in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Op {
    /// The multishot accept on listener `i`.
    Accept(usize),
    /// The poll on the shutdown eventfd.
    Wake,
    /// A cancel request's own completion (its target completes separately).
    Cancel,
    /// A connection's recv.
    Recv(usize),
    /// A connection's send.
    Send(usize),
    /// The multishot recvmsg on UDP listener `i` (`udp.rs`).
    DatagramRecv(usize),
    /// A reply's sendmsg, by its key among the replies in flight (`udp.rs`).
    DatagramSend(usize),
}

const ACCEPT: u64 = 1;
const WAKE: u64 = 2;
const CANCEL: u64 = 3;
const RECV: u64 = 4;
const SEND: u64 = 5;
const DATAGRAM_RECV: u64 = 6;
const DATAGRAM_SEND: u64 = 7;

impl Op {
    /// The `user_data` for this operation.
    pub(super) fn encode(self) -> u64 {
        match self {
            Op::Accept(i) => ((i as u64) << 8) | ACCEPT,
            Op::Wake => WAKE,
            Op::Cancel => CANCEL,
            Op::Recv(key) => ((key as u64) << 8) | RECV,
            Op::Send(key) => ((key as u64) << 8) | SEND,
            Op::DatagramRecv(i) => ((i as u64) << 8) | DATAGRAM_RECV,
            Op::DatagramSend(key) => ((key as u64) << 8) | DATAGRAM_SEND,
        }
    }

    /// The operation a completion's `user_data` names; `None` for a value we never issued.
    pub(super) fn decode(user_data: u64) -> Option<Op> {
        let key = (user_data >> 8) as usize;
        match user_data & 0xff {
            ACCEPT => Some(Op::Accept(key)),
            WAKE => Some(Op::Wake),
            CANCEL => Some(Op::Cancel),
            RECV => Some(Op::Recv(key)),
            SEND => Some(Op::Send(key)),
            DATAGRAM_RECV => Some(Op::DatagramRecv(key)),
            DATAGRAM_SEND => Some(Op::DatagramSend(key)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_op_survives_the_round_trip() {
        for op in [
            Op::Accept(0),
            Op::Accept(3),
            Op::Wake,
            Op::Cancel,
            Op::Recv(0),
            Op::Send(0),
            Op::Recv(123_456),
            Op::Send(1 << 40),
            Op::DatagramRecv(2),
            Op::DatagramSend(77),
        ] {
            assert_eq!(Op::decode(op.encode()), Some(op));
        }
        assert_eq!(Op::decode(0), None);
    }
}
