//! Bench-only: a TCP proxy on 127.0.0.1 that delays every byte by a fixed time
//! in each direction, to put Redis "at a distance" (the kernel here has no
//! `netem`). Not part of the product.
//!
//!   delay_proxy --listen 127.0.0.1:7001 --upstream 127.0.0.1:6379 --delay-us 250
//!
//! Each direction of each connection is a reader thread and a writer thread: the
//! reader stamps what it reads, the writer sends it on when its time has come.
//! Threads, not a runtime's timers: those tick in whole milliseconds, and the
//! delays wanted here are a quarter of one. Bytes keep their order, and a chunk
//! waits only for its own deadline, so the delay adds latency, not a rate limit.
//! Ends by itself after `--for-secs` (default 3600), so a forgotten one stops.

use std::{
    io::{Read, Write},
    net::{Shutdown, TcpListener, TcpStream},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let listen = arg("--listen").expect("--listen ADDR");
    let upstream = arg("--upstream").expect("--upstream ADDR");
    let delay = Duration::from_micros(arg("--delay-us").map_or(0, |v| v.parse().expect("µs")));
    let lifetime = Duration::from_secs(arg("--for-secs").map_or(3600, |v| v.parse().expect("s")));
    let listener = TcpListener::bind(&listen).expect("listen");
    thread::spawn(move || {
        thread::sleep(lifetime);
        std::process::exit(0);
    });
    for client in listener.incoming().flatten() {
        let Ok(server) = TcpStream::connect(&upstream) else {
            continue;
        };
        for stream in [&client, &server] {
            let _ = stream.set_nodelay(true);
        }
        pump(
            client.try_clone().unwrap(),
            server.try_clone().unwrap(),
            delay,
        );
        pump(server, client, delay);
    }
}

/// Copies `from` to `to`, each chunk `delay` after it was read.
fn pump(mut from: TcpStream, mut to: TcpStream, delay: Duration) {
    let (chunks, due) = mpsc::channel::<(Instant, Vec<u8>)>();
    thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if chunks
                        .send((Instant::now() + delay, buf[..n].to_vec()))
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
        // Dropping `chunks` tells the writer the stream ended.
    });
    thread::spawn(move || {
        for (at, bytes) in due {
            let wait = at.saturating_duration_since(Instant::now());
            if !wait.is_zero() {
                thread::sleep(wait);
            }
            if to.write_all(&bytes).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}
