//! A TCP proxy on loopback in front of a Redis port, which can turn the
//! connections it carries half-open: to the client, the peer stops answering
//! without ever closing, as behind a crashed host, a moved VIP or a firewall
//! that dropped its state; or carry what new connections send, or what Redis
//! answers them, late. (No netem in the test kernel, hence userspace.)

use std::{
    io::{ErrorKind, Read, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        mpsc, Arc, Mutex,
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

/// Forwards every connection to `127.0.0.1:<upstream>`; stopped, with every
/// connection it holds, when dropped.
pub struct Proxy {
    pub port: u16,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

struct Shared {
    upstream: SocketAddr,
    stop: AtomicBool,
    accepted: AtomicUsize,
    /// One flag per connection ever accepted: set, it forwards nothing more.
    stalled: Mutex<Vec<Arc<AtomicBool>>>,
    /// How late connections accepted now carry what the client sends, and
    /// what the upstream sends.
    delays: Mutex<(Duration, Duration)>,
    pumps: Mutex<Vec<JoinHandle<()>>>,
}

/// How long a pump blocks in `read` before it looks at its flags again.
const POLL: Duration = Duration::from_millis(10);

impl Proxy {
    pub fn start(upstream_port: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared {
            upstream: SocketAddr::from(([127, 0, 0, 1], upstream_port)),
            stop: AtomicBool::new(false),
            accepted: AtomicUsize::new(0),
            stalled: Mutex::new(Vec::new()),
            delays: Mutex::new((Duration::ZERO, Duration::ZERO)),
            pumps: Mutex::new(Vec::new()),
        });
        let acceptor = {
            let shared = shared.clone();
            thread::spawn(move || accept_loop(listener, &shared))
        };
        Proxy {
            port,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// `redis.url` through the proxy.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Every connection open now stops forwarding, both ways, and stays open
    /// (so the client sees neither an answer nor a close) until the proxy is
    /// dropped. Connections accepted later are forwarded as usual.
    pub fn stall(&self) {
        for flag in self.shared.stalled.lock().unwrap().iter() {
            flag.store(true, Ordering::SeqCst);
        }
    }

    /// Connections accepted from now on carry what the client sends `requests`
    /// late, and what the upstream sends `replies` late (every byte, and the
    /// close, in order). Connections already open keep their own delays. (A
    /// stall does not hold back what a delayed connection has already read.)
    pub fn delay(&self, requests: Duration, replies: Duration) {
        *self.shared.delays.lock().unwrap() = (requests, replies);
    }

    /// Connections accepted so far (and forwarded to the upstream).
    pub fn connections(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wakes the acceptor from its blocking accept.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        for pump in self.shared.pumps.lock().unwrap().drain(..) {
            let _ = pump.join();
        }
    }
}

fn accept_loop(listener: TcpListener, shared: &Arc<Shared>) {
    for client in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = client else { continue };
        // An upstream that is down closes the client's connection at once, as
        // connecting to it directly would fail.
        let Ok(upstream) = TcpStream::connect_timeout(&shared.upstream, Duration::from_secs(1))
        else {
            continue;
        };
        shared.accepted.fetch_add(1, Ordering::SeqCst);
        let stalled = Arc::new(AtomicBool::new(false));
        shared.stalled.lock().unwrap().push(stalled.clone());
        let (requests, replies) = *shared.delays.lock().unwrap();
        let mut pumps = shared.pumps.lock().unwrap();
        for (from, to, delay) in [
            (&client, &upstream, requests),
            (&upstream, &client, replies),
        ] {
            let (from, to) = (from.try_clone().unwrap(), to.try_clone().unwrap());
            let (shared, stalled) = (shared.clone(), stalled.clone());
            pumps.push(thread::spawn(move || {
                pump(from, Outlet::new(to, delay), &stalled, &shared.stop)
            }));
        }
    }
}

/// Copies `from` to `to` until either closes; once `stalled`, copies nothing
/// and closes nothing until `stop`.
fn pump(mut from: TcpStream, mut to: Outlet, stalled: &AtomicBool, stop: &AtomicBool) {
    let _ = from.set_nodelay(true);
    from.set_read_timeout(Some(POLL)).unwrap();
    let mut buf = [0u8; 16 * 1024];
    while !stop.load(Ordering::SeqCst) {
        if stalled.load(Ordering::SeqCst) {
            thread::sleep(POLL);
            continue;
        }
        match from.read(&mut buf) {
            // Bytes read after the stall are swallowed: nothing gets through.
            Ok(n) if n > 0 && stalled.load(Ordering::SeqCst) => {}
            Ok(n) if n > 0 => {
                if !to.send(Some(&buf[..n])) {
                    let _ = from.shutdown(Shutdown::Both);
                    return;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            // End of stream or a reset: pass the close on, unless stalled.
            _ => {
                if !stalled.load(Ordering::SeqCst) {
                    to.send(None);
                }
                return;
            }
        }
    }
}

/// Where a pump writes: the stream itself, or, with a delay, a thread that
/// writes each chunk (`None`: the close) that much after the pump read it.
enum Outlet {
    Now(TcpStream),
    Late(Duration, mpsc::Sender<(Instant, Option<Vec<u8>>)>),
}

impl Outlet {
    fn new(mut to: TcpStream, delay: Duration) -> Outlet {
        if delay.is_zero() {
            return Outlet::Now(to);
        }
        let (late, chunks) = mpsc::channel::<(Instant, Option<Vec<u8>>)>();
        // Ends once the pump has ended and every chunk is written.
        thread::spawn(move || {
            for (due, chunk) in chunks {
                thread::sleep(due.saturating_duration_since(Instant::now()));
                let Some(chunk) = chunk else {
                    let _ = to.shutdown(Shutdown::Write);
                    return;
                };
                if to.write_all(&chunk).is_err() {
                    return;
                }
            }
        });
        Outlet::Late(delay, late)
    }

    /// Writes `chunk`, or closes the write side; `false`: the stream is gone.
    fn send(&mut self, chunk: Option<&[u8]>) -> bool {
        match (self, chunk) {
            (Outlet::Now(to), Some(chunk)) => to.write_all(chunk).is_ok(),
            (Outlet::Now(to), None) => to.shutdown(Shutdown::Write).is_ok(),
            (Outlet::Late(delay, late), chunk) => late
                .send((Instant::now() + *delay, chunk.map(<[u8]>::to_vec)))
                .is_ok(),
        }
    }
}
