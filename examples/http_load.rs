//! A small HTTP/1.1 load generator for the serve benchmark: CONNECTIONS
//! keep-alive connections each send one request after another (HEAD or
//! GET of one path) for SECONDS; prints requests per second and the p50 /
//! p99 latency. Bodies are read by `Content-Length` (the registry answers
//! manifests with one).
//!
//! ```text
//! cargo run --release --example http_load -- HOST:PORT METHOD PATH CONNECTIONS SECONDS
//! ```

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// One connection's loop: returns the latency of every request, in µs.
async fn client(
    host: String,
    method: String,
    path: String,
    until: Instant,
) -> std::io::Result<Vec<u32>> {
    let stream = tokio::net::TcpStream::connect(&host).await?;
    stream.set_nodelay(true)?;
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    let request = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nAccept: application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json\r\n\r\n");
    let mut latencies = Vec::new();
    let mut line = String::new();
    let mut body = Vec::new();
    while Instant::now() < until {
        let start = Instant::now();
        write.write_all(request.as_bytes()).await?;
        let mut length = 0usize;
        let mut status_ok = false;
        loop {
            line.clear();
            if read.read_line(&mut line).await? == 0 {
                return Err(std::io::Error::other("connection closed"));
            }
            let text = line.trim_end();
            if text.is_empty() {
                break;
            }
            if text.starts_with("HTTP/1.1 ") {
                status_ok = text.starts_with("HTTP/1.1 200");
            } else if let Some((name, value)) = text.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
        }
        if !status_ok {
            return Err(std::io::Error::other(format!(
                "unexpected answer to {method} {path}"
            )));
        }
        if method != "HEAD" {
            body.resize(length, 0);
            read.read_exact(&mut body).await?;
        }
        latencies.push(start.elapsed().as_micros() as u32);
    }
    Ok(latencies)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [host, method, path, connections, seconds] = args.as_slice() else {
        eprintln!("usage: http_load HOST:PORT METHOD PATH CONNECTIONS SECONDS");
        std::process::exit(2);
    };
    let connections: usize = connections.parse().expect("CONNECTIONS is a number");
    let seconds: f64 = seconds.parse().expect("SECONDS is a number");
    let until = Instant::now() + Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let tasks: Vec<_> = (0..connections)
        .map(|_| tokio::spawn(client(host.clone(), method.clone(), path.clone(), until)))
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        match task.await.expect("client task") {
            Ok(latencies) => all.extend(latencies),
            Err(error) => {
                eprintln!("http_load: {error}");
                std::process::exit(1);
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_unstable();
    let at = |q: f64| {
        all.get(((all.len() as f64 * q) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    println!(
        "{:.0} {:.2} {:.2}",
        all.len() as f64 / elapsed,
        at(0.50) as f64 / 1000.0,
        at(0.99) as f64 / 1000.0
    );
}
