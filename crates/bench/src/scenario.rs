//! The comparison's scenarios: fixed loads, named so that a table row, a `--scenarios`
//! value and a JSON field all say the same thing.

use clap::ValueEnum;
use serde::Serialize;

use crate::human;
use crate::target::Transport;

/// A load `--compare` puts on every server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// 1 connection, 64 B: the round trip itself (the load generator busy-polls).
    Latency,
    /// 100 connections, 128 B.
    SmallMany,
    /// 50 connections, 4 KiB, pipeline 4.
    Medium,
    /// 8 connections, 64 KiB.
    Bulk,
    /// 2000 connections, 128 B.
    Many,
    /// Connect, echo 64 B, close; 8 connections at a time: the cost of a connection's life.
    Churn,
    /// 10000 idle connections: server memory per connection.
    Idle,
    /// UDP: 64 sockets, 128 B datagrams, one in flight each.
    UdpSmall,
    /// UDP: 1 socket sending trains of 32 × 1200 B datagrams, two trains in flight.
    UdpBurst,
    /// 100 connections sending 128 B at 5000/s in all, alone and then beside one
    /// connection streaming 64 KiB messages as fast as it can: does the stream starve them?
    Fairness,
}

/// What a scenario asks of the load generator.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Shape {
    /// Echo traffic.
    Echo {
        /// Connections.
        connections: usize,
        /// Bytes per message.
        size: usize,
        /// Messages in flight per connection.
        pipeline: usize,
        /// Busy-poll (for the latency scenario).
        spin: bool,
    },
    /// Short-lived connections, each echoing one message.
    Churn {
        /// Connections at once.
        connections: usize,
        /// Bytes of each connection's message.
        size: usize,
    },
    /// Held, silent connections.
    Idle {
        /// Connections.
        connections: usize,
    },
    /// Datagrams to a UDP echo service, closed loop.
    Udp {
        /// Sockets.
        sockets: usize,
        /// Bytes per datagram.
        size: usize,
        /// Datagrams in flight per socket.
        pipeline: usize,
        /// Datagrams sent together (one train, split by the kernel); 1 for none.
        train: usize,
    },
    /// Small messages on many connections at a fixed rate, alone and beside a stream.
    Fairness {
        /// The small connections.
        connections: usize,
        /// Bytes of each small message.
        size: usize,
        /// Small messages per second, over all the small connections.
        rate: f64,
        /// Bytes of each of the stream's messages.
        stream_size: usize,
        /// The stream's messages in flight.
        stream_pipeline: usize,
    },
}

impl Scenario {
    /// Every scenario, in table order.
    pub const ALL: [Scenario; 10] = [
        Scenario::Latency,
        Scenario::SmallMany,
        Scenario::Medium,
        Scenario::Bulk,
        Scenario::Many,
        Scenario::Churn,
        Scenario::Idle,
        Scenario::UdpSmall,
        Scenario::UdpBurst,
        Scenario::Fairness,
    ];

    /// The name in `--scenarios` and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Latency => "latency",
            Scenario::SmallMany => "small-many",
            Scenario::Medium => "medium",
            Scenario::Bulk => "bulk",
            Scenario::Many => "many",
            Scenario::Churn => "churn",
            Scenario::Idle => "idle",
            Scenario::UdpSmall => "udp-small",
            Scenario::UdpBurst => "udp-burst",
            Scenario::Fairness => "fairness",
        }
    }

    /// The load.
    pub fn shape(self) -> Shape {
        let echo = |connections, size, pipeline| Shape::Echo { connections, size, pipeline, spin: false };
        match self {
            Scenario::Latency => Shape::Echo { connections: 1, size: 64, pipeline: 1, spin: true },
            Scenario::SmallMany => echo(100, 128, 1),
            Scenario::Medium => echo(50, 4096, 4),
            Scenario::Bulk => echo(8, 65536, 1),
            Scenario::Many => echo(2000, 128, 1),
            Scenario::Churn => Shape::Churn { connections: 8, size: 64 },
            Scenario::Idle => Shape::Idle { connections: 10_000 },
            Scenario::UdpSmall => Shape::Udp { sockets: 64, size: 128, pipeline: 1, train: 1 },
            Scenario::UdpBurst => Shape::Udp { sockets: 1, size: 1200, pipeline: 64, train: 32 },
            Scenario::Fairness => Shape::Fairness {
                connections: 100,
                size: 128,
                rate: 5000.0,
                stream_size: 65536,
                stream_pipeline: 4,
            },
        }
    }

    /// Streams (TCP) or datagrams (UDP): a server is started for the one it needs.
    pub fn transport(self) -> Transport {
        match self.shape() {
            Shape::Udp { .. } => Transport::Datagram,
            _ => Transport::Stream,
        }
    }

    /// How many connections it opens at once.
    pub fn connections(self) -> usize {
        match self.shape() {
            Shape::Echo { connections, .. }
            | Shape::Churn { connections, .. }
            | Shape::Idle { connections }
            | Shape::Udp { sockets: connections, .. } => connections,
            Shape::Fairness { connections, .. } => connections + 1,
        }
    }

    /// Whether it is one echo load, over streams or datagrams (not churn, idle connections,
    /// or the fairness pair).
    pub fn is_echo(self) -> bool {
        matches!(self.shape(), Shape::Echo { .. } | Shape::Udp { .. })
    }

    /// The row label: "1 conn · 64 B".
    pub fn title(self) -> String {
        match self.shape() {
            Shape::Echo { connections, size, pipeline, .. } => {
                let conns =
                    if connections == 1 { "1 conn".to_string() } else { format!("{connections} conns") };
                let depth = if pipeline > 1 { format!(" · pipeline {pipeline}") } else { String::new() };
                format!("{conns} · {}{depth}", human::bytes(size as f64))
            }
            Shape::Churn { connections, size } => {
                format!("churn: connect, echo {}, close ({connections} at once)", human::bytes(size as f64))
            }
            Shape::Idle { connections } => format!("{connections} idle conns: RSS per conn"),
            // Datagram sizes in bytes as written: 1200 B, a typical QUIC datagram.
            Shape::Udp { sockets, size, train: 1, .. } => format!("udp: {sockets} sockets · {size} B"),
            Shape::Udp { sockets, size, pipeline, train } => format!(
                "udp: {sockets} socket{} · trains of {train} × {size} B · {} in flight",
                if sockets == 1 { "" } else { "s" },
                pipeline / train
            ),
            Shape::Fairness { connections, size, rate, stream_size, .. } => format!(
                "fairness: {connections} conns · {} at {}/s, beside one {} stream",
                human::bytes(size as f64),
                human::count(rate),
                human::bytes(stream_size as f64)
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_their_json_and_their_flag() {
        for s in Scenario::ALL {
            assert_eq!(serde_json::to_value(s).unwrap(), s.name());
            assert_eq!(s.to_possible_value().unwrap().get_name(), s.name());
        }
        assert_eq!(Scenario::value_variants(), Scenario::ALL);
    }

    #[test]
    fn titles_describe_the_load() {
        assert_eq!(Scenario::Latency.title(), "1 conn · 64 B");
        assert_eq!(Scenario::Medium.title(), "50 conns · 4 KiB · pipeline 4");
        assert_eq!(Scenario::Idle.title(), "10000 idle conns: RSS per conn");
        assert_eq!(Scenario::Idle.connections(), 10_000);
        assert!(!Scenario::Idle.is_echo() && Scenario::Bulk.is_echo() && !Scenario::Churn.is_echo());
        assert!(Scenario::UdpBurst.is_echo());
        assert_eq!(Scenario::Churn.title(), "churn: connect, echo 64 B, close (8 at once)");
        assert_eq!(Scenario::Churn.connections(), 8);
        assert_eq!(Scenario::UdpSmall.title(), "udp: 64 sockets · 128 B");
        assert_eq!(Scenario::UdpBurst.title(), "udp: 1 socket · trains of 32 × 1200 B · 2 in flight");
        assert_eq!(Scenario::UdpSmall.transport(), Transport::Datagram);
        assert_eq!(Scenario::Idle.transport(), Transport::Stream);
        assert_eq!(
            Scenario::Fairness.title(),
            "fairness: 100 conns · 128 B at 5.00k/s, beside one 64 KiB stream"
        );
        assert_eq!(Scenario::Fairness.connections(), 101);
        assert!(!Scenario::Fairness.is_echo());
    }
}
