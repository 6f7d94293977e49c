//! [`bounded`]: the time limit on one Redis operation, without a timer of its own.
//!
//! A tokio timer per operation costs a clock read, an insert into the runtime's
//! timer wheel and a removal from it: on the guard's path, a tenth of what it
//! spends beyond the one command it sends. Here an operation that has to wait
//! writes its deadline and waker into its thread's table, and one sweeper task
//! per thread wakes whatever is overdue every [`TICK`]; deadlines are counted
//! from the time the sweeper last read the clock. So an operation ends at the
//! earliest at its bound and at the latest about two ticks after it. The sweeper
//! runs only while something is waiting, so an idle server has no wake-ups.

use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard},
    task::{Context, Poll, Waker},
    time::{Duration, Instant},
};

use super::TimedOut;

/// How often overdue operations are looked for.
pub const TICK: Duration = Duration::from_millis(10);

/// Runs `op` (any number of Redis round trips) to its end or for `timeout`,
/// whichever comes first; a late answer becomes the caller's error for
/// [`TimedOut`].
pub fn bounded<T, E: From<TimedOut>, F: Future<Output = Result<T, E>>>(
    timeout: Duration,
    op: F,
) -> Bounded<F> {
    Bounded {
        op,
        timeout,
        waiting: None,
    }
}

pin_project_lite::pin_project! {
    /// A plain future rather than an `async fn`: that would hold `op` twice
    /// (as its argument and pinned), and the guard's future, copied whole as
    /// it is handed down, would grow by as much.
    pub struct Bounded<F> {
        #[pin]
        op: F,
        timeout: Duration,
        waiting: Option<Waiting>,
    }
}

impl<T, E: From<TimedOut>, F: Future<Output = Result<T, E>>> Future for Bounded<F> {
    type Output = Result<T, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(result) = this.op.poll(cx) {
            return Poll::Ready(result);
        }
        match this.waiting {
            None => *this.waiting = Some(Waiting::new(*this.timeout, cx.waker())),
            Some(waiting) if waiting.overdue(cx.waker()) => {
                return Poll::Ready(Err(TimedOut(*this.timeout).into()))
            }
            Some(_) => {}
        }
        Poll::Pending
    }
}

thread_local! {
    static TABLE: Arc<Table> = Arc::default();
}

/// One thread's waiting operations. Only that thread and its sweeper use it
/// (an operation moved to another thread of a multi-threaded runtime keeps
/// the table it started in), so the lock is all but never contended.
#[derive(Default)]
struct Table {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// When the sweeper last read the clock.
    now: Option<Instant>,
    slots: Vec<Option<Slot>>,
    free: Vec<usize>,
    waiting: usize,
    sweeping: bool,
}

struct Slot {
    deadline: Instant,
    /// Taken when the deadline passes and the operation is woken.
    waker: Option<Waker>,
}

impl Table {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// An operation's entry in its thread's table, removed when it is dropped.
pub struct Waiting {
    table: Arc<Table>,
    slot: usize,
}

impl Waiting {
    fn new(timeout: Duration, waker: &Waker) -> Waiting {
        let table = TABLE.with(Arc::clone);
        let mut state = table.lock();
        let now = match state.now {
            Some(now) if state.sweeping => now,
            _ => {
                let now = Instant::now();
                state.now = Some(now);
                now
            }
        };
        // The sweeper's clock may be up to a tick behind: never end early.
        let slot = Slot {
            deadline: now + timeout + TICK,
            waker: Some(waker.clone()),
        };
        let index = match state.free.pop() {
            Some(index) => {
                state.slots[index] = Some(slot);
                index
            }
            None => {
                state.slots.push(Some(slot));
                state.slots.len() - 1
            }
        };
        state.waiting += 1;
        if !state.sweeping {
            state.sweeping = true;
            tokio::spawn(sweep(table.clone()));
        }
        drop(state);
        Waiting { table, slot: index }
    }

    /// Whether the deadline has passed; if not, `waker` is the one to wake.
    fn overdue(&self, waker: &Waker) -> bool {
        let mut state = self.table.lock();
        let slot = state.slots[self.slot].as_mut().expect("a waiting slot");
        match &mut slot.waker {
            None => true,
            Some(current) => {
                if !current.will_wake(waker) {
                    current.clone_from(waker);
                }
                false
            }
        }
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let mut state = self.table.lock();
        state.slots[self.slot] = None;
        state.free.push(self.slot);
        state.waiting -= 1;
    }
}

/// Wakes overdue operations every tick while any are waiting.
async fn sweep(table: Arc<Table>) {
    let mut sweeping = Sweeping {
        table: table.clone(),
        stopped: false,
    };
    let mut overdue = Vec::new();
    loop {
        tokio::time::sleep(TICK).await;
        {
            let mut state = table.lock();
            if state.waiting == 0 {
                // Under the lock that registrations take: one arriving from
                // now on starts a new sweeper.
                state.sweeping = false;
                sweeping.stopped = true;
                return;
            }
            let now = Instant::now();
            state.now = Some(now);
            for slot in state.slots.iter_mut().flatten() {
                if slot.deadline <= now {
                    overdue.extend(slot.waker.take());
                }
            }
        }
        overdue.drain(..).for_each(Waker::wake);
    }
}

/// A sweeper dropped by its runtime (it ends with its runtime) leaves the
/// table to the next one.
struct Sweeping {
    table: Arc<Table>,
    stopped: bool,
}

impl Drop for Sweeping {
    fn drop(&mut self) {
        if !self.stopped {
            self.table.lock().sweeping = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_operation_ends_at_its_bound_not_before_and_not_long_after() {
        let started = Instant::now();
        let result: Result<(), TimedOut> =
            bounded(Duration::from_millis(50), std::future::pending()).await;
        let took = started.elapsed();
        assert_eq!(result, Err(TimedOut(Duration::from_millis(50))));
        assert!(took >= Duration::from_millis(50), "{took:?}");
        assert!(took < Duration::from_millis(50) + 10 * TICK, "{took:?}");
    }

    #[tokio::test]
    async fn an_answer_in_time_is_the_answer_and_leaves_nothing_waiting() {
        let answer: Result<u8, TimedOut> = bounded(Duration::from_secs(5), async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            Ok(7)
        })
        .await;
        assert_eq!(answer, Ok(7));
        let waiting = TABLE.with(|table| table.lock().waiting);
        assert_eq!(waiting, 0);
        // The sweeper stops by itself once nothing waits.
        tokio::time::sleep(3 * TICK).await;
        assert!(!TABLE.with(|table| table.lock().sweeping));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn on_a_multi_threaded_runtime_every_wait_after_an_idle_gap_still_ends() {
        // Each wait starts after the last sweeper may be stopping, on whichever
        // thread the runtime picks.
        for _ in 0..20 {
            let waits = tokio::spawn(bounded::<(), TimedOut, _>(
                Duration::from_millis(20),
                std::future::pending(),
            ));
            let result = tokio::time::timeout(Duration::from_secs(2), waits).await;
            assert!(matches!(result, Ok(Ok(Err(_)))), "{result:?}");
            tokio::time::sleep(TICK).await;
        }
    }

    #[test]
    fn a_runtime_gone_mid_wait_leaves_the_next_one_a_working_sweeper() {
        std::thread::spawn(|| {
            for _ in 0..2 {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .build()
                    .unwrap();
                runtime.block_on(async {
                    let result: Result<(), TimedOut> =
                        bounded(Duration::from_millis(30), std::future::pending()).await;
                    assert!(result.is_err());
                    // Still waiting (and the sweeper still running) when the runtime goes.
                    tokio::spawn(bounded::<(), TimedOut, _>(
                        Duration::from_secs(60),
                        std::future::pending(),
                    ));
                    tokio::time::sleep(2 * TICK).await;
                });
            }
        })
        .join()
        .unwrap();
    }
}
