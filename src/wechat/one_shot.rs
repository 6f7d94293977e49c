//! For unit tests: an HTTP server on loopback that answers one request with a
//! canned body and hands back what it received, so a platform call's request
//! (method, path, query, body) is checked without the network.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpListener,
    thread::{self, JoinHandle},
};

/// What the server received: the request line (`GET /path?query HTTP/1.1`)
/// and the body.
pub(super) struct Received {
    pub line: String,
    pub body: String,
}

pub(super) struct OneShot {
    pub base: String,
    received: JoinHandle<Received>,
}

impl OneShot {
    /// Answers the first request with 200 and `body` as JSON.
    pub fn answering(body: &str) -> OneShot {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let answer = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        );
        let received = thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream);
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let mut length = 0;
            loop {
                let mut header = String::new();
                reader.read_line(&mut header).unwrap();
                let header = header.trim_end();
                if header.is_empty() {
                    break;
                }
                if let Some((name, value)) = header.split_once(':') {
                    if name.eq_ignore_ascii_case("content-length") {
                        length = value.trim().parse().unwrap();
                    }
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            reader.get_mut().write_all(answer.as_bytes()).unwrap();
            Received {
                line: line.trim_end().to_string(),
                body: String::from_utf8(body).unwrap(),
            }
        });
        OneShot { base, received }
    }

    /// The request, once it has been answered.
    pub fn received(self) -> Received {
        self.received.join().unwrap()
    }
}
