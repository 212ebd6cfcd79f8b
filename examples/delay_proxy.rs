//! A TCP proxy that models a registry far away: every HTTP request that
//! passes (the first bytes a client sends after an answer) waits DELAY_MS
//! before it is forwarded. Prints each request line it sees, so a
//! benchmark can count GETs and HEADs. Used by `benches/sync_scale.sh`.
//!
//! ```text
//! cargo run --release --example delay_proxy -- LISTEN_ADDR UPSTREAM_ADDR DELAY_MS
//! ```
//! Prints `listening on ADDR` first.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [listen, upstream, delay] = args.as_slice() else {
        eprintln!("usage: delay_proxy LISTEN_ADDR UPSTREAM_ADDR DELAY_MS");
        std::process::exit(2);
    };
    let delay = Duration::from_millis(delay.parse().expect("DELAY_MS is a number"));
    let listener = tokio::net::TcpListener::bind(listen).await.expect("bind");
    println!("listening on {}", listener.local_addr().expect("address"));
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        let upstream = upstream.clone();
        tokio::spawn(async move {
            let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (mut client_read, mut client_write) = client.into_split();
            let (mut server_read, mut server_write) = server.into_split();
            // Set when the server spoke last: the client's next bytes start a request.
            let fresh = Arc::new(AtomicBool::new(true));
            let answered = fresh.clone();
            let upward = async move {
                let mut buffer = vec![0u8; 64 * 1024];
                loop {
                    let read = client_read.read(&mut buffer).await?;
                    if read == 0 {
                        return server_write.shutdown().await;
                    }
                    if fresh.swap(false, Ordering::Relaxed) {
                        let head = String::from_utf8_lossy(&buffer[..read.min(512)]);
                        if let Some(line) = head.lines().next() {
                            println!("{line}");
                        }
                        tokio::time::sleep(delay).await;
                    }
                    server_write.write_all(&buffer[..read]).await?;
                }
            };
            let downward = async move {
                let mut buffer = vec![0u8; 64 * 1024];
                loop {
                    let read = server_read.read(&mut buffer).await?;
                    if read == 0 {
                        return client_write.shutdown().await;
                    }
                    answered.store(true, Ordering::Relaxed);
                    client_write.write_all(&buffer[..read]).await?;
                }
            };
            let _: (std::io::Result<()>, std::io::Result<()>) = tokio::join!(upward, downward);
        });
    }
}
