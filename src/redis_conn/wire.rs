//! `Wire`: the guard's `GETEX` on a connection written and read by hand —
//! pipelined, each reply matched to its command by order.
//!
//! redis-rs's multiplexed connection hands every command to a driver task
//! through a channel, reads every reply with a general parser and answers it
//! through a oneshot, in a future of about 2.5 KiB: about a tenth of the
//! server's CPU per guarded request (README, Performance). The wire does what
//! `GETEX` needs and no more: a command is appended to a buffer that a writer
//! task flushes, and a reader task reads bulk strings and nulls as they come.
//!
//! A fast path, never the only one. Only a node reached over plain TCP or a
//! Unix socket (no TLS, no cluster) gets a wire, connected in the background
//! (see `link`); and whatever the wire cannot answer — not connected yet,
//! closed (by the node, or by a `READONLY` reply after a failover), made
//! before a failover that was announced, any other error reply — goes the
//! usual way, through the link, which reconnects and retries as for any other
//! command. A wire that stops answering is noticed as the link notices it:
//! two commands given up in a row after it answered nothing for half the
//! bound, and it is closed (the commands that waited on it until then fail
//! with the bound, as on a link).

use std::{
    collections::VecDeque,
    future::{poll_fn, Future},
    io,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, MutexGuard,
    },
    task::{Context, Poll, Waker},
    time::{Duration, Instant},
};

use redis::{io::tcp::socket2::SockRef, ConnectionAddr, ConnectionInfo};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
    task::AbortHandle,
};

use super::link::STALLS_BEFORE_REPLACING;

pub struct Wire {
    inner: Arc<Inner>,
    /// The endpoint's master generation when it was made.
    generation: u64,
    tasks: [AbortHandle; 2],
}

struct Inner {
    shared: Mutex<Shared>,
    /// How long the connection must have been silent for a command given up
    /// to count as a stall.
    stall_after: Duration,
    /// Set once, by `close`: no command is sent or awaited after it.
    closed: AtomicBool,
}

struct Shared {
    /// Commands not written yet.
    out: Vec<u8>,
    writer: Option<Waker>,
    /// Every command from the oldest one whose reply or caller is still
    /// awaited, in the order they were sent.
    slots: VecDeque<Slot>,
    /// The number of `slots[0]`, counting every command sent.
    base: u64,
    /// How many replies have come.
    answered: u64,
    /// When the connection last answered, or was last handed a command with
    /// none outstanding: the start of its silence, if it is silent.
    quiet_since: Instant,
    /// Commands given up in a row while no reply at all came.
    stalls: u32,
}

enum Slot {
    Waiting {
        waker: Option<Waker>,
        /// `answered` when it was sent.
        answered_then: u64,
    },
    Answered(Reply),
    /// Its caller has its answer, or gave up.
    Gone,
}

/// A reply as the wire reads it.
#[derive(Debug, PartialEq, Eq)]
enum Reply {
    /// A bulk string, or a null.
    Value(Option<Vec<u8>>),
    /// A simple string (`+OK`).
    Done,
    /// `READONLY`: the node is a replica now (a failover demoted it).
    ReadOnly,
    /// Any other error, an integer; for a command waiting: the connection closed.
    Other,
}

impl Wire {
    /// A connection to `info`'s plain TCP address (with its TCP settings) or
    /// Unix socket, logged in and on its database, within `timeout`; to the
    /// master of `generation`.
    pub async fn connect(
        info: &ConnectionInfo,
        timeout: Duration,
        generation: u64,
    ) -> io::Result<Wire> {
        tokio::time::timeout(timeout, Wire::open(info, timeout, generation))
            .await
            .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))?
    }

    async fn open(info: &ConnectionInfo, timeout: Duration, generation: u64) -> io::Result<Wire> {
        match info.addr() {
            ConnectionAddr::Tcp(host, port) => {
                let stream = TcpStream::connect((host.as_str(), *port)).await?;
                stream.set_nodelay(true)?;
                let socket = SockRef::from(&stream);
                let tcp = info.tcp_settings();
                if let Some(keepalive) = tcp.keepalive() {
                    socket.set_tcp_keepalive(keepalive)?;
                }
                #[cfg(target_os = "linux")]
                socket.set_tcp_user_timeout(tcp.user_timeout())?;
                let (read, write) = stream.into_split();
                Wire::start(info, read, write, timeout, generation).await
            }
            #[cfg(unix)]
            ConnectionAddr::Unix(path) => {
                let (read, write) = tokio::net::UnixStream::connect(path).await?.into_split();
                Wire::start(info, read, write, timeout, generation).await
            }
            _ => Err(io::Error::other(
                "the wire speaks plain TCP and Unix sockets only",
            )),
        }
    }

    /// Logs in and selects the database on a connection just made, then hands
    /// its halves to the reader and writer tasks.
    async fn start(
        info: &ConnectionInfo,
        mut read: impl AsyncRead + Unpin + Send + 'static,
        mut write: impl AsyncWrite + Unpin + Send + 'static,
        timeout: Duration,
        generation: u64,
    ) -> io::Result<Wire> {
        let settings = info.redis_settings();
        let mut login = Vec::new();
        let mut replies = 0;
        if let Some(password) = settings.password() {
            match settings.username() {
                Some(user) => command(&mut login, &[b"AUTH", user.as_bytes(), password.as_bytes()]),
                None => command(&mut login, &[b"AUTH", password.as_bytes()]),
            }
            replies += 1;
        }
        // Even database 0: always one answer to wait for, so that a node that
        // accepts and closes (at `maxclients`, or a proxy without a backend)
        // fails here, and the link waits before the next attempt, instead of
        // a wire opened per request.
        command(
            &mut login,
            &[b"SELECT", settings.db().to_string().as_bytes()],
        );
        replies += 1;
        write.write_all(&login).await?;
        let mut buf = Vec::with_capacity(16 * 1024);
        let mut used = 0;
        while replies > 0 {
            match parse(&buf[used..])? {
                Some((Reply::Done, len)) => {
                    used += len;
                    replies -= 1;
                }
                Some(_) => return Err(io::Error::other("Redis refused AUTH or SELECT")),
                None if read.read_buf(&mut buf).await? == 0 => {
                    return Err(io::ErrorKind::UnexpectedEof.into())
                }
                None => {}
            }
        }
        buf.drain(..used);
        let inner = Arc::new(Inner {
            shared: Mutex::new(Shared {
                out: Vec::new(),
                writer: None,
                slots: VecDeque::new(),
                base: 0,
                answered: 0,
                quiet_since: Instant::now(),
                stalls: 0,
            }),
            stall_after: timeout / 2,
            closed: AtomicBool::new(false),
        });
        let reader = tokio::spawn(inner.clone().read(read, buf)).abort_handle();
        let writer = tokio::spawn(inner.clone().write(write)).abort_handle();
        Ok(Wire {
            inner,
            generation,
            tasks: [reader, writer],
        })
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn is_closed(&self) -> bool {
        self.inner.is_closed()
    }

    /// Sends `GETEX <key> EX <ttl_secs>`, the key given in pieces; the [`Call`]
    /// answers its value or nothing. `None` if the wire is closed.
    pub fn get_ex(&self, key: [&[u8]; 3], ttl_secs: u64) -> Option<Call<'_>> {
        let mut shared = self.inner.lock();
        if self.inner.is_closed() {
            return None;
        }
        let out = &mut shared.out;
        out.extend_from_slice(b"*4\r\n$5\r\nGETEX\r\n");
        bulk(out, &key);
        out.extend_from_slice(b"$2\r\nEX\r\n");
        bulk(out, &[itoa::Buffer::new().format(ttl_secs).as_bytes()]);
        let number = shared.base + shared.slots.len() as u64;
        let answered_then = shared.answered;
        if number == answered_then {
            // Nothing outstanding: an idle spell is not silence. (The clock
            // is read only then, not on a busy connection.)
            shared.quiet_since = Instant::now();
        }
        shared.slots.push_back(Slot::Waiting {
            waker: None,
            answered_then,
        });
        if let Some(writer) = shared.writer.take() {
            writer.wake();
        }
        Some(Call {
            wire: self,
            number,
            done: false,
        })
    }

    /// Fails every command waiting and every later one, and drops the connection.
    fn close(&self) {
        self.inner.close();
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Drop for Wire {
    fn drop(&mut self) {
        self.close();
    }
}

/// One command's wait for its reply: the value or nothing, or `None` when
/// the wire has no answer (closed, or an error reply): the command must go the
/// usual way.
pub struct Call<'a> {
    wire: &'a Wire,
    number: u64,
    done: bool,
}

impl Future for Call<'_> {
    type Output = Option<Option<Vec<u8>>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut shared = self.wire.inner.lock();
        let at = (self.number - shared.base) as usize;
        match &mut shared.slots[at] {
            Slot::Waiting { waker, .. } => {
                if !waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    *waker = Some(cx.waker().clone());
                }
                Poll::Pending
            }
            slot => {
                let Slot::Answered(reply) = std::mem::replace(slot, Slot::Gone) else {
                    unreachable!("a slot is taken once, by its caller");
                };
                shared.forget_done();
                drop(shared);
                self.done = true;
                Poll::Ready(match reply {
                    Reply::Value(value) => Some(value),
                    _ => None,
                })
            }
        }
    }
}

impl Drop for Call<'_> {
    /// Given up before its reply (its operation timed out, or its request
    /// went away): a stall if no reply at all came meanwhile, and none for at
    /// least half the bound.
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let inner = &self.wire.inner;
        let stalled = {
            let mut shared = inner.lock();
            let at = (self.number - shared.base) as usize;
            let slot = std::mem::replace(&mut shared.slots[at], Slot::Gone);
            if let Slot::Waiting { answered_then, .. } = slot {
                let silent = shared.quiet_since.elapsed() >= inner.stall_after;
                if answered_then == shared.answered && silent && !inner.is_closed() {
                    shared.stalls += 1;
                }
            }
            shared.forget_done();
            !inner.is_closed() && shared.stalls >= STALLS_BEFORE_REPLACING
        };
        if stalled {
            log::warn!(
                "redis: the guard's connection stopped answering \
                 ({STALLS_BEFORE_REPLACING} commands timed out in a row); opening a new one"
            );
            self.wire.close();
        }
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        let mut shared = self.lock();
        shared.out = Vec::new();
        let answered = (shared.answered - shared.base) as usize;
        for slot in shared.slots.iter_mut().skip(answered) {
            if let Slot::Waiting { waker, .. } = slot {
                if let Some(waker) = waker.take() {
                    waker.wake();
                }
                *slot = Slot::Answered(Reply::Other);
            }
        }
        if let Some(writer) = shared.writer.take() {
            writer.wake();
        }
    }

    async fn write(self: Arc<Inner>, mut write: impl AsyncWrite + Unpin) {
        let mut batch = Vec::new();
        loop {
            let open = poll_fn(|cx| {
                let mut shared = self.lock();
                if self.is_closed() {
                    return Poll::Ready(false);
                }
                if shared.out.is_empty() {
                    shared.writer = Some(cx.waker().clone());
                    return Poll::Pending;
                }
                std::mem::swap(&mut shared.out, &mut batch);
                Poll::Ready(true)
            })
            .await;
            if !open || write.write_all(&batch).await.is_err() {
                return self.close();
            }
            batch.clear();
        }
    }

    async fn read(self: Arc<Inner>, mut read: impl AsyncRead + Unpin, mut buf: Vec<u8>) {
        let mut replies = Vec::new();
        loop {
            let mut used = 0;
            loop {
                match parse(&buf[used..]) {
                    Ok(Some((reply, len))) => {
                        used += len;
                        replies.push(reply);
                    }
                    Ok(None) => break,
                    Err(_) => return self.close(),
                }
            }
            if !replies.is_empty() && !self.deliver(&mut replies) {
                return self.close();
            }
            buf.drain(..used);
            buf.reserve(16 * 1024);
            if !matches!(read.read_buf(&mut buf).await, Ok(1..)) {
                return self.close();
            }
        }
    }

    /// Hands each reply to its command, in order; `false` if one came that no
    /// command awaits, or the node is no longer the master.
    fn deliver(&self, replies: &mut Vec<Reply>) -> bool {
        let mut shared = self.lock();
        for reply in replies.drain(..) {
            if reply == Reply::ReadOnly {
                return false;
            }
            let at = (shared.answered - shared.base) as usize;
            let Some(slot) = shared.slots.get_mut(at) else {
                return false;
            };
            if let Slot::Waiting { waker, .. } = slot {
                if let Some(waker) = waker.take() {
                    waker.wake();
                }
                *slot = Slot::Answered(reply);
            }
            shared.answered += 1;
        }
        shared.stalls = 0;
        shared.quiet_since = Instant::now();
        shared.forget_done();
        true
    }
}

impl Shared {
    /// Drops the oldest slots once both their reply and their caller are done.
    fn forget_done(&mut self) {
        while self.base < self.answered && matches!(self.slots.front(), Some(Slot::Gone)) {
            self.slots.pop_front();
            self.base += 1;
        }
    }
}

/// Appends one command (RESP array of bulk strings) to `out`.
fn command(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.push(b'*');
    out.extend_from_slice(itoa::Buffer::new().format(args.len()).as_bytes());
    out.extend_from_slice(b"\r\n");
    for arg in args {
        bulk(out, &[arg]);
    }
}

/// Appends one bulk string, given in pieces, to `out`.
fn bulk(out: &mut Vec<u8>, pieces: &[&[u8]]) {
    let len = pieces.iter().map(|piece| piece.len()).sum::<usize>();
    out.push(b'$');
    out.extend_from_slice(itoa::Buffer::new().format(len).as_bytes());
    out.extend_from_slice(b"\r\n");
    for piece in pieces {
        out.extend_from_slice(piece);
    }
    out.extend_from_slice(b"\r\n");
}

/// The reply at the start of `buf` and its length; `None` until all of it is
/// there. An array, a map or a push (which `GETEX`, `AUTH` and `SELECT` never
/// answer on a RESP2 connection) is an error.
fn parse(buf: &[u8]) -> io::Result<Option<(Reply, usize)>> {
    let Some(line_end) = buf.iter().position(|&b| b == b'\n') else {
        return Ok(None);
    };
    if line_end < 2 || buf[line_end - 1] != b'\r' {
        return Err(io::Error::other("not a RESP reply"));
    }
    let line = line_end + 1;
    let head = &buf[1..line_end - 1];
    let reply = match buf[0] {
        b'$' if head == b"-1" => Reply::Value(None),
        b'$' => {
            let len = std::str::from_utf8(head)
                .ok()
                .and_then(|digits| digits.parse::<usize>().ok())
                .ok_or_else(|| io::Error::other("a bulk string without a length"))?;
            let end = line
                .checked_add(len)
                .filter(|end| *end <= usize::MAX - 2)
                .ok_or_else(|| io::Error::other("a bulk string longer than memory"))?;
            if buf.len() < end + 2 {
                return Ok(None);
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Err(io::Error::other("a bulk string longer than it said"));
            }
            return Ok(Some((Reply::Value(Some(buf[line..end].to_vec())), end + 2)));
        }
        b'_' => Reply::Value(None),
        b'+' => Reply::Done,
        b'-' if head.starts_with(b"READONLY") => Reply::ReadOnly,
        b'-' | b':' => Reply::Other,
        _ => return Err(io::Error::other("a reply the wire does not read")),
    };
    Ok(Some((reply, line)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_read_whole_or_not_yet() {
        let value = b"$5\r\nhe\r\no\r\n";
        for cut in 0..value.len() {
            assert!(parse(&value[..cut]).unwrap().is_none(), "{cut}");
        }
        assert_eq!(
            parse(value).unwrap(),
            Some((Reply::Value(Some(b"he\r\no".to_vec())), value.len()))
        );
        assert_eq!(
            parse(b"$-1\r\n+OK\r\n").unwrap(),
            Some((Reply::Value(None), 5))
        );
        assert_eq!(parse(b"_\r\n").unwrap(), Some((Reply::Value(None), 3)));
        assert_eq!(parse(b"+OK\r\n").unwrap(), Some((Reply::Done, 5)));
        assert_eq!(
            parse(b"-READONLY You can't write\r\n").unwrap(),
            Some((Reply::ReadOnly, 27))
        );
        assert_eq!(
            parse(b"$0\r\n\r\n").unwrap(),
            Some((Reply::Value(Some(vec![])), 6))
        );
        assert_eq!(
            parse(b"-READONLY no\r\n").unwrap(),
            Some((Reply::ReadOnly, 14))
        );
        let huge = format!("${}\r\n", usize::MAX);
        for bad in [
            huge.as_bytes(),
            &b"*1\r\n"[..],
            b"\n",
            b"$x\r\n",
            b"$2\r\nabc\r\n",
            b"OK\r\n",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    use redis::IntoConnectionInfo;
    use tokio::net::TcpListener;

    /// A peer on loopback that answers the first command (the wire's `SELECT`)
    /// with `selected`, then writes `replies` once it has read `expect` more
    /// commands (counted by their `*`), then stays silent.
    async fn peer(
        selected: &'static [u8],
        expect: usize,
        replies: &'static [u8],
    ) -> ConnectionInfo {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut seen = Vec::new();
            for (commands, answer) in [(1, selected), (expect.saturating_add(1), replies)] {
                while seen.iter().filter(|&&b| b == b'*').count() < commands {
                    if socket.read_buf(&mut seen).await.unwrap() == 0 {
                        return;
                    }
                }
                socket.write_all(answer).await.unwrap();
            }
            std::future::pending::<()>().await;
        });
        format!("redis://127.0.0.1:{port}/0")
            .into_connection_info()
            .unwrap()
    }

    #[tokio::test]
    async fn pipelined_commands_get_their_own_replies_in_order() {
        let info = peer(b"+OK\r\n", 3, b"$2\r\nv1\r\n$-1\r\n-ERR no\r\n").await;
        let wire = Wire::connect(&info, Duration::from_secs(2), 7)
            .await
            .unwrap();
        assert_eq!(wire.generation(), 7);
        let key = |k: &'static [u8]| [b"p:".as_slice(), b"s:", k];
        let (a, b, c) = (
            wire.get_ex(key(b"a"), 7200).unwrap(),
            wire.get_ex(key(b"b"), 7200).unwrap(),
            wire.get_ex(key(b"c"), 7200).unwrap(),
        );
        // The error reply has no answer here: that command goes the usual way.
        assert_eq!(
            futures_util::future::join3(a, b, c).await,
            (Some(Some(b"v1".to_vec())), Some(None), None)
        );
        assert!(!wire.is_closed());
    }

    #[tokio::test]
    async fn a_command_given_up_leaves_its_reply_to_no_one_else() {
        let info = peer(b"+OK\r\n", 2, b"$5\r\nfirst\r\n$6\r\nsecond\r\n").await;
        let wire = Wire::connect(&info, Duration::from_secs(2), 0)
            .await
            .unwrap();
        drop(wire.get_ex([b"k", b"", b"1"], 1).unwrap());
        let second = wire.get_ex([b"k", b"", b"2"], 1).unwrap();
        assert_eq!(second.await, Some(Some(b"second".to_vec())));
        // Given up at once, on a connection that had just answered: no stall.
        assert!(!wire.is_closed());
    }

    #[tokio::test]
    async fn a_readonly_node_closes_the_wire() {
        let info = peer(
            b"+OK\r\n",
            1,
            b"-READONLY You can't write against a read only replica.\r\n",
        )
        .await;
        let wire = Wire::connect(&info, Duration::from_secs(2), 0)
            .await
            .unwrap();
        assert_eq!(wire.get_ex([b"k", b"", b""], 1).unwrap().await, None);
        assert!(wire.is_closed());
    }

    #[tokio::test]
    async fn a_node_that_refuses_at_once_gives_no_wire() {
        let info = peer(b"-ERR max number of clients reached\r\n", 0, b"").await;
        assert!(Wire::connect(&info, Duration::from_secs(2), 0)
            .await
            .is_err());
    }

    #[tokio::test]
    async fn a_silent_connection_is_closed_after_commands_given_up_in_a_row() {
        let info = peer(b"+OK\r\n", usize::MAX, b"").await;
        let bound = Duration::from_millis(200);
        let wire = Wire::connect(&info, bound, 0).await.unwrap();
        // Given up at once after an idle spell: not a stall.
        tokio::time::sleep(bound).await;
        for _ in 0..3 {
            drop(wire.get_ex([b"k", b"", b""], 1).unwrap());
        }
        assert!(!wire.is_closed());
        for given_up in 1..=STALLS_BEFORE_REPLACING {
            assert!(
                !wire.is_closed(),
                "closed after {given_up} commands given up"
            );
            let call = wire.get_ex([b"k", b"", b""], 1).unwrap();
            assert!(tokio::time::timeout(bound, call).await.is_err());
        }
        assert!(wire.is_closed());
        assert!(wire.get_ex([b"k", b"", b""], 1).is_none());
    }

    #[tokio::test]
    async fn a_closed_connection_fails_what_waits() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut seen = Vec::new();
            let _ = socket.read_buf(&mut seen).await;
            socket.write_all(b"+OK\r\n").await.unwrap();
            let _ = socket.read_buf(&mut seen).await;
            // Dropped: the connection closes under the command.
        });
        let info = format!("redis://127.0.0.1:{port}/0")
            .into_connection_info()
            .unwrap();
        let wire = Wire::connect(&info, Duration::from_secs(2), 0)
            .await
            .unwrap();
        let call = wire.get_ex([b"k", b"", b""], 1).unwrap();
        assert_eq!(call.await, None);
        assert!(wire.is_closed());
    }

    #[test]
    fn commands_are_resp_arrays() {
        let mut out = Vec::new();
        command(&mut out, &[b"AUTH", b"user", b"p w"]);
        assert_eq!(out, b"*3\r\n$4\r\nAUTH\r\n$4\r\nuser\r\n$3\r\np w\r\n");
    }
}
