//! The syslog sink's connection to its collector: a unix datagram socket, UDP, or TCP with
//! octet-counting framing, and for TCP whether the collector has hung up.
//!
//! Separate because it is the only socket code; the sink's delivery loop decides when to open,
//! drop and trust a connection.
use std::{
    io::Write,
    net::{TcpStream, ToSocketAddrs, UdpSocket},
    os::unix::net::UnixDatagram,
    time::Duration,
};

use super::{frame_tcp, Target};

/// How long a connect or a write may block (a hung collector must not stall the sink).
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// An open connection to the collector.
pub(super) enum Conn {
    /// A unix datagram socket.
    Unix(UnixDatagram),
    /// A UDP socket.
    Udp(UdpSocket),
    /// A TCP stream.
    Tcp(TcpStream),
}

impl Conn {
    /// Connects to `t` (writes on unix and TCP, and the TCP connect, time out).
    pub(super) fn open(t: &Target) -> std::io::Result<Conn> {
        Ok(match t {
            Target::Unix(p) => {
                let s = UnixDatagram::unbound()?;
                s.connect(p)?;
                s.set_write_timeout(Some(IO_TIMEOUT))?;
                Conn::Unix(s)
            }
            Target::Udp(a) => {
                let s = UdpSocket::bind("0.0.0.0:0")?;
                s.connect(a)?;
                Conn::Udp(s)
            }
            Target::Tcp(a) => {
                let addr = a
                    .to_socket_addrs()?
                    .next()
                    .ok_or_else(|| std::io::Error::other(format!("{a}: no address")))?;
                let s = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
                s.set_write_timeout(Some(IO_TIMEOUT))?;
                s.set_nodelay(true)?;
                Conn::Tcp(s)
            }
        })
    }

    /// Sends one message (framed for TCP).
    pub(super) fn send(&mut self, msg: &[u8]) -> std::io::Result<()> {
        match self {
            Conn::Unix(s) => s.send(msg).map(drop),
            Conn::Udp(s) => s.send(msg).map(drop),
            Conn::Tcp(s) => s.write_all(&frame_tcp(msg)),
        }
    }

    /// For TCP: whether the peer has closed or reset the connection.
    pub(super) fn broken(&self) -> bool {
        let Conn::Tcp(s) = self else { return false };
        let mut b = [0u8; 1];
        if s.set_nonblocking(true).is_err() {
            return true;
        }
        let r = s.peek(&mut b);
        let _ = s.set_nonblocking(false);
        match r {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
        }
    }
}
