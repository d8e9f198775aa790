//! A loopback TCP fault proxy: forwards a local port to a cluster's port and, on command, cuts
//! every current connection or blackholes traffic (accepts, but forwards nothing). Threads
//! only; everything stops when the proxy is dropped.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use super::free_port;

/// How often idle pump and accept threads look at the proxy's mode.
const TICK: Duration = Duration::from_millis(20);

pub struct Proxy {
    /// The loopback port clients connect to.
    pub port: u16,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct Shared {
    blackhole: AtomicBool,
    stop: AtomicBool,
    /// Every open client-side and server-side socket, by connection id.
    open: Mutex<Vec<(u64, TcpStream)>>,
    next_id: AtomicU64,
    forwarded: AtomicU64,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `127.0.0.1:target`.
    pub fn start(target: u16) -> Proxy {
        let (port, listener) = bind();
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let shared = Arc::new(Shared::default());
        let s = shared.clone();
        let accept = thread::spawn(move || accept_loop(listener, target, s));
        Proxy {
            port,
            shared,
            accept: Some(accept),
        }
    }

    /// Closes every current connection, both sides, as a network fault or a server restart
    /// would. New connections are accepted as before.
    pub fn cut(&self) {
        let open = std::mem::take(&mut *self.shared.open.lock().unwrap());
        for (_, s) in open {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    /// Stops forwarding: bytes wait in the sockets, and new connections are accepted but never
    /// reach the server.
    pub fn blackhole(&self) {
        self.shared.blackhole.store(true, Ordering::SeqCst);
    }

    /// Forwards again. Connections accepted during the blackhole are closed: their clients
    /// gave up (or will, on their timeouts).
    pub fn restore(&self) {
        let mut open = self.shared.open.lock().unwrap();
        open.retain(|(id, s)| {
            let held = *id == u64::MAX;
            if held {
                let _ = s.shutdown(Shutdown::Both);
            }
            !held
        });
        self.shared.blackhole.store(false, Ordering::SeqCst);
    }

    /// Connections forwarded to the server so far.
    pub fn forwarded(&self) -> u64 {
        self.shared.forwarded.load(Ordering::SeqCst)
    }

    /// Connections forwarding right now.
    pub fn connections(&self) -> usize {
        let open = self.shared.open.lock().unwrap();
        open.iter().filter(|(id, _)| *id != u64::MAX).count() / 2
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.cut();
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

fn bind() -> (u16, TcpListener) {
    for _ in 0..20 {
        let port = free_port();
        if let Ok(l) = TcpListener::bind(("127.0.0.1", port)) {
            return (port, l);
        }
    }
    panic!("the proxy found no free loopback port");
}

fn accept_loop(listener: TcpListener, target: u16, shared: Arc<Shared>) {
    while !shared.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((client, _)) => connect(client, target, &shared),
            Err(e) if e.kind() == ErrorKind::WouldBlock => thread::sleep(TICK),
            Err(_) => thread::sleep(TICK),
        }
    }
}

/// Pairs an accepted client with a new server connection and starts one pump per direction;
/// during a blackhole the client is only held (id `u64::MAX`).
fn connect(client: TcpStream, target: u16, shared: &Arc<Shared>) {
    let _ = client.set_nonblocking(false);
    if shared.blackhole.load(Ordering::SeqCst) {
        shared.open.lock().unwrap().push((u64::MAX, client));
        return;
    }
    let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    let id = shared.next_id.fetch_add(1, Ordering::SeqCst);
    let pair = (client.try_clone(), server.try_clone());
    let (Ok(c2), Ok(s2)) = pair else {
        return;
    };
    {
        let mut open = shared.open.lock().unwrap();
        open.push((id, c2));
        open.push((id, s2));
    }
    shared.forwarded.fetch_add(1, Ordering::SeqCst);
    for (from, to) in [
        (client.try_clone(), server.try_clone()),
        (server.try_clone(), client.try_clone()),
    ] {
        let (Ok(from), Ok(to)) = (from, to) else {
            return;
        };
        let s = shared.clone();
        thread::spawn(move || pump(from, to, id, s));
    }
}

/// Copies `from` to `to` until either side closes, the proxy stops, or the pair is cut.
fn pump(mut from: TcpStream, mut to: TcpStream, id: u64, shared: Arc<Shared>) {
    let _ = from.set_read_timeout(Some(TICK));
    let mut buf = [0u8; 16 * 1024];
    while !shared.stop.load(Ordering::SeqCst) {
        if shared.blackhole.load(Ordering::SeqCst) {
            thread::sleep(TICK);
            continue;
        }
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
    shared.open.lock().unwrap().retain(|(i, _)| *i != id);
}
