//! A loopback TCP proxy that runs an action once, the first time a byte
//! pattern goes from client to server (before those bytes are passed on):
//! "kill a node when part 2 is uploaded", "replace the object when the
//! second range is asked for". The trigger is the request itself, so no
//! test waits on a clock.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

type Action = Box<dyn FnOnce() + Send>;

/// A running proxy; its threads end with the process.
pub struct Proxy {
    /// `127.0.0.1:PORT` to connect to instead of the target.
    pub addr: String,
    fired: Arc<Mutex<Option<Action>>>,
}

impl Proxy {
    /// Forward to `target`, running `action` when `pattern` first passes.
    pub fn start(target: &str, pattern: &'static [u8], action: Action) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let fired: Arc<Mutex<Option<Action>>> = Arc::new(Mutex::new(Some(action)));
        let target = target.to_owned();
        let shared = fired.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().map_while(Result::ok) {
                let Ok(server) = TcpStream::connect(&target) else {
                    continue;
                };
                let (client_read, server_write) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                let action = shared.clone();
                std::thread::spawn(move || upstream(client_read, server_write, pattern, action));
                std::thread::spawn(move || downstream(server, client));
            }
        });
        Proxy { addr, fired }
    }

    /// Whether the action ran.
    pub fn fired(&self) -> bool {
        self.fired.lock().unwrap().is_none()
    }
}

fn upstream(
    mut from: TcpStream,
    mut to: TcpStream,
    pattern: &[u8],
    action: Arc<Mutex<Option<Action>>>,
) {
    let mut buffer = vec![0u8; 64 * 1024];
    let mut tail: Vec<u8> = Vec::new();
    loop {
        let read = match from.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        tail.extend_from_slice(&buffer[..read]);
        if tail.windows(pattern.len()).any(|w| w == pattern) {
            if let Some(run) = action.lock().unwrap().take() {
                run();
            }
        }
        let keep = tail.len().saturating_sub(pattern.len());
        tail.drain(..keep);
        if to.write_all(&buffer[..read]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}

fn downstream(mut from: TcpStream, mut to: TcpStream) {
    let _ = std::io::copy(&mut from, &mut to);
    let _ = to.shutdown(std::net::Shutdown::Write);
}
