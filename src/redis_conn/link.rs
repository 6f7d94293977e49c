//! `Link`: one thread's connection to the node — opened on first use, replaced
//! when it closes or stops answering, and the one place a command is retried.
//!
//! A connection speaks RESP3, so its driver reports its own end (a
//! `Disconnection` push) the moment the server closes it: the next command
//! then goes out on a new connection instead of failing on the dead one. That
//! is how a Redis restart or a Sentinel failover (which closes clients) costs
//! no request.
//!
//! A connection that stays open but stops answering (a half-open TCP
//! connection) is noticed by its callers' timeouts: [`STALLS_BEFORE_REPLACING`]
//! commands abandoned in a row after waiting at least half of `redis.timeout_ms`
//! and the connection is dropped, so service resumes within about
//! 3 × `redis.timeout_ms` once a new connection can be made.

use std::{
    future::Future,
    sync::{
        atomic::{AtomicBool, AtomicU32, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use futures_util::{
    future::{BoxFuture, Shared},
    FutureExt,
};
use redis::{
    aio::MultiplexedConnection, AsyncConnectionConfig, Cmd, Pipeline, PushInfo, PushKind,
    RedisError, ServerErrorKind, Value,
};

use super::{endpoint::Endpoint, wire::Wire};

/// Commands abandoned in a row (each after waiting at least half the bound)
/// before a connection is taken for dead.
pub const STALLS_BEFORE_REPLACING: u32 = 2;

/// How long after a failed attempt the next one to open a wire waits.
const WIRE_RETRY: Duration = Duration::from_secs(1);

pub struct Link {
    endpoint: Arc<Endpoint>,
    config: AsyncConnectionConfig,
    timeout: Duration,
    stall_after: Duration,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    live: Option<Live>,
    /// The connection attempt in progress, shared by every command waiting for it.
    connecting: Option<Connecting>,
    wire: WireState,
}

/// This thread's wire to the node (see `wire`), made in the background.
#[derive(Default)]
struct WireState {
    wire: Option<Arc<Wire>>,
    connecting: bool,
    /// After a failed attempt: not before then.
    retry_at: Option<Instant>,
    /// The node is reached over TLS: no wire, ever.
    unsupported: bool,
}

type Connecting = Shared<BoxFuture<'static, Result<Live, RedisError>>>;

#[derive(Clone)]
struct Live {
    conn: MultiplexedConnection,
    health: Arc<Health>,
    /// The endpoint's master generation when this connection was made.
    generation: u64,
}

#[derive(Default)]
struct Health {
    /// Set by the connection's driver when the connection ends.
    closed: AtomicBool,
    /// Commands abandoned unanswered in a row.
    stalls: AtomicU32,
}

impl Link {
    pub fn new(endpoint: Arc<Endpoint>, config: AsyncConnectionConfig, timeout: Duration) -> Link {
        Link {
            endpoint,
            config,
            timeout,
            stall_after: timeout / 2,
            state: Mutex::new(State::default()),
        }
    }

    pub fn endpoint(&self) -> &Arc<Endpoint> {
        &self.endpoint
    }

    pub async fn send(&self, cmd: &Cmd) -> Result<Value, RedisError> {
        self.run(
            || repeatable(std::iter::once(cmd)),
            |mut conn| async move { conn.send_packed_command(cmd).await },
        )
        .await
    }

    pub async fn send_pipeline(
        &self,
        pipeline: &Pipeline,
        offset: usize,
        count: usize,
    ) -> Result<Vec<Value>, RedisError> {
        self.run(
            || repeatable(pipeline.cmd_iter()),
            |mut conn| async move { conn.send_packed_commands(pipeline, offset, count).await },
        )
        .await
    }

    /// Runs `op` on the live connection; if the connection turns out to be
    /// lost, runs it once more on a new one when that is safe.
    async fn run<T, Op, Fut>(
        &self,
        safe_to_repeat: impl FnOnce() -> bool,
        op: Op,
    ) -> Result<T, RedisError>
    where
        T: Send,
        Op: Fn(MultiplexedConnection) -> Fut + Send,
        Fut: Future<Output = Result<T, RedisError>> + Send,
    {
        let Live { conn, health, .. } = match self.open() {
            Some(live) => live,
            None => self.reconnect().await?,
        };
        let watch = StallWatch::start(self, &health);
        let result = op(conn).await;
        watch.answered();
        match result {
            Err(e) if self.lost(&health, &e) && (not_executed(&e) || safe_to_repeat()) => {
                self.again(op).await
            }
            result => result,
        }
    }

    /// `op` once more, on a new connection: out of line (see `reconnect`).
    #[cold]
    #[inline(never)]
    fn again<'a, T, Op, Fut>(&'a self, op: Op) -> BoxFuture<'a, Result<T, RedisError>>
    where
        T: Send + 'a,
        Op: Fn(MultiplexedConnection) -> Fut + Send + 'a,
        Fut: Future<Output = Result<T, RedisError>> + Send + 'a,
    {
        async move {
            let Live { conn, health, .. } = self.reconnect().await?;
            let watch = StallWatch::start(self, &health);
            let result = op(conn).await;
            watch.answered();
            result
        }
        .boxed()
    }

    /// This thread's wire, if one is open and to the current master; if none
    /// is, one is opened in the background (at most one attempt at a time, and
    /// a second after a failed one) and this command goes the usual way.
    pub fn wire(self: &Arc<Link>) -> Option<Arc<Wire>> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let generation = self.endpoint.master_generation();
        let slot = &mut state.wire;
        if let Some(wire) = &slot.wire {
            if !wire.is_closed() && wire.generation() == generation {
                return Some(wire.clone());
            }
            slot.wire = None;
        }
        if slot.connecting
            || slot.unsupported
            || slot.retry_at.is_some_and(|at| Instant::now() < at)
        {
            return None;
        }
        slot.connecting = true;
        tokio::spawn(self.clone().open_wire(generation));
        None
    }

    #[cold]
    async fn open_wire(self: Arc<Link>, generation: u64) {
        let opened = match self.endpoint.without_tls().await {
            Ok(Some(info)) => Wire::connect(&info, self.timeout, generation)
                .await
                .map(Some),
            Ok(None) => Ok(None),
            Err(e) => Err(std::io::Error::other(e)),
        };
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let slot = &mut state.wire;
        slot.connecting = false;
        match opened {
            Ok(Some(wire)) => {
                slot.wire = Some(Arc::new(wire));
                slot.retry_at = None;
            }
            Ok(None) => slot.unsupported = true,
            Err(e) => {
                log::debug!("redis: no wire for the guard's reads yet ({e})");
                slot.retry_at = Some(Instant::now() + WIRE_RETRY);
            }
        }
    }

    /// The open connection, if it is still good to use.
    fn open(&self) -> Option<Live> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        self.usable(&state).cloned()
    }

    fn usable<'s>(&self, state: &'s State) -> Option<&'s Live> {
        state.live.as_ref().filter(|live| {
            !live.health.closed.load(Ordering::Relaxed)
                && live.generation == self.endpoint.master_generation()
        })
    }

    /// A new connection (boxed: the common path stays a small future). A
    /// failed attempt may have begun before Redis came back (its caller gave
    /// up and left it to the next one): one more, nothing was sent.
    fn reconnect(&self) -> BoxFuture<'_, Result<Live, RedisError>> {
        async move {
            match self.connected().await {
                Ok(live) => Ok(live),
                Err(_) => self.connected().await,
            }
        }
        .boxed()
    }

    /// The connection attempt in progress, or a new one (one attempt per
    /// thread at a time, whoever asks first starts it).
    async fn connected(&self) -> Result<Live, RedisError> {
        let connecting = {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            // Another command on this thread may have made one meanwhile.
            if let Some(live) = self.usable(&state) {
                return Ok(live.clone());
            }
            state.live = None;
            state
                .connecting
                .get_or_insert_with(|| self.connect())
                .clone()
        };
        let result = connecting.clone().await;
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state
            .connecting
            .as_ref()
            .is_some_and(|current| current.ptr_eq(&connecting))
        {
            state.connecting = None;
            if let Ok(live) = &result {
                state.live = Some(live.clone());
            }
        }
        result
    }

    fn connect(&self) -> Connecting {
        let endpoint = self.endpoint.clone();
        let health = Arc::new(Health::default());
        let watcher = health.clone();
        let config = self.config.clone().set_push_sender(
            move |push: PushInfo| -> Result<(), std::convert::Infallible> {
                if push.kind == PushKind::Disconnection {
                    watcher.closed.store(true, Ordering::Relaxed);
                }
                Ok(())
            },
        );
        async move {
            let generation = endpoint.master_generation();
            let conn = endpoint.connect(&config).await?;
            Ok(Live {
                conn,
                health,
                generation,
            })
        }
        .boxed()
        .shared()
    }

    /// Whether `e` means the connection is unusable; if so it is not used again.
    fn lost(&self, health: &Arc<Health>, e: &RedisError) -> bool {
        let lost = e.is_io_error() || e.is_unrecoverable_error() || not_executed(e);
        if lost {
            self.discard(health);
        }
        lost
    }

    fn discard(&self, health: &Arc<Health>) {
        health.closed.store(true, Ordering::Relaxed);
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state
            .live
            .as_ref()
            .is_some_and(|current| Arc::ptr_eq(&current.health, health))
        {
            state.live = None;
        }
    }
}

/// One exchange on the connection whose `health` is given, counted as a
/// stall if it is abandoned (its operation timed out) after waiting long
/// enough. A guard held across the exchange, not a future around it: that
/// would move redis-rs's future (2.5 KiB) once more per command.
struct StallWatch<'a> {
    link: &'a Link,
    health: &'a Arc<Health>,
    started: Instant,
    answered: bool,
}

impl<'a> StallWatch<'a> {
    fn start(link: &'a Link, health: &'a Arc<Health>) -> StallWatch<'a> {
        StallWatch {
            link,
            health,
            started: Instant::now(),
            answered: false,
        }
    }

    fn answered(mut self) {
        self.answered = true;
        if self.health.stalls.load(Ordering::Relaxed) != 0 {
            self.health.stalls.store(0, Ordering::Relaxed);
        }
    }
}

impl Drop for StallWatch<'_> {
    fn drop(&mut self) {
        if self.answered || self.started.elapsed() < self.link.stall_after {
            return;
        }
        let stalls = self.health.stalls.fetch_add(1, Ordering::Relaxed) + 1;
        if stalls == STALLS_BEFORE_REPLACING {
            log::warn!(
                "redis: connection stopped answering ({stalls} commands timed out in a row); \
                 opening a new one"
            );
            self.link.discard(self.health);
        }
    }
}

/// The server refused the command without running it: it is a replica now
/// (`READONLY`: the master was demoted by a failover).
fn not_executed(e: &RedisError) -> bool {
    matches!(
        e.kind(),
        redis::ErrorKind::Server(ServerErrorKind::ReadOnly)
    )
}

/// Whether commands whose reply was lost may be sent again: running them twice
/// leaves Redis as running them once, and no caller reads a count they return.
///
/// - reads: `GET`, `GETEX` (sets the same idle lifetime again), `EXISTS`,
///   `TTL`, `PTTL`, `HGET`, `HGETALL`, `ZRANGE`, `SCAN`, `PING`;
/// - writes that set a value, not change one: `SET` without `NX`/`GET`
///   (`SET … XX KEEPTTL` writes the same value again), `EXPIRE`, `HSET`,
///   `HSETNX`, `ZADD`, `ZREM`, `ZREMRANGEBYSCORE`, `DEL` (callers ignore how
///   many keys these counted).
///
/// Not repeated: `SET … NX` (the repeat would find the key it made and report
/// a clash: a login code claimed twice, a session id taken), `GETDEL` (the
/// repeat finds nothing: a logout would look like a missing session), `EVAL`
/// and anything not listed. These fail with 503 if the connection breaks
/// under them; a connection already known closed is replaced before any
/// command is sent on it, so a restart alone does not reach them.
fn repeatable<'a>(mut cmds: impl Iterator<Item = &'a Cmd>) -> bool {
    cmds.all(|cmd| {
        let mut args = cmd.args_iter().filter_map(|arg| match arg {
            redis::Arg::Simple(bytes) => Some(bytes),
            _ => None,
        });
        let Some(name) = args.next() else {
            return false;
        };
        let name = name.to_ascii_uppercase();
        match name.as_slice() {
            b"GET" | b"GETEX" | b"EXISTS" | b"TTL" | b"PTTL" | b"HGET" | b"HGETALL" | b"ZRANGE"
            | b"SCAN" | b"PING" | b"EXPIRE" | b"HSET" | b"HSETNX" | b"ZADD" | b"ZREM"
            | b"ZREMRANGEBYSCORE" | b"DEL" | b"MULTI" | b"EXEC" => true,
            b"SET" => {
                !args.any(|arg| arg.eq_ignore_ascii_case(b"NX") || arg.eq_ignore_ascii_case(b"GET"))
            }
            _ => false,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::repeatable;

    fn one(cmd: redis::Cmd) -> bool {
        repeatable(std::iter::once(&cmd))
    }

    #[test]
    fn reads_and_setting_writes_repeat_claims_and_takes_do_not() {
        assert!(one(redis::cmd("GETEX")
            .arg("k")
            .arg("EX")
            .arg(7200)
            .clone()));
        assert!(one(redis::cmd("SET")
            .arg("k")
            .arg("v")
            .arg("XX")
            .arg("KEEPTTL")
            .clone()));
        assert!(!one(redis::cmd("SET")
            .arg("k")
            .arg("v")
            .arg("NX")
            .arg("EX")
            .arg(1)
            .clone()));
        assert!(!one(redis::cmd("set").arg("k").arg("v").arg("nx").clone()));
        assert!(!one(redis::cmd("GETDEL").arg("k").clone()));
        assert!(!one(redis::cmd("EVAL").arg("return 1").arg(0).clone()));
        assert!(!one(redis::cmd("INCR").arg("k").clone()));
    }

    #[test]
    fn a_pipeline_repeats_only_if_every_command_does() {
        let mut safe = redis::pipe();
        safe.atomic()
            .hset("u", "f", "v")
            .expire("u", 10)
            .zrange("z", 0, -1);
        assert!(repeatable(safe.cmd_iter()));
        let mut unsafe_ = redis::pipe();
        unsafe_.hset("u", "f", "v").cmd("GETDEL").arg("k");
        assert!(!repeatable(unsafe_.cmd_iter()));
    }
}
