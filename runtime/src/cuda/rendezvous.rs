//! TCP rendezvous: rank 0 hands the NCCL unique id to every other rank, and afterwards the
//! same connections serve as a liveness watchdog.
//!
//! Protocol (all integers little-endian u32):
//! * a rank `r > 0` connects to `MASTER_ADDR:MASTER_PORT` (retrying until its deadline,
//!   since rank 0 may start later) and sends `b"TSRV"`, version, `r`, world size;
//! * rank 0 accepts until all `world - 1` ranks have joined (a barrier: nobody gets the
//!   id before everybody arrived, so a rank that never comes makes *every* rank time out
//!   instead of hanging inside NCCL initialisation), then answers each with `b"TSOK"`,
//!   payload length and the payload (the 128-byte NCCL id), or `b"TSER"`, length and an
//!   error message (wrong world size, duplicate rank);
//! * the connections stay open while the ranks run. A rank that finishes sends one byte
//!   `D`. When a connection closes without it (the process died), the other side runs its
//!   abort callback (by default: print a clear error and exit), so a dead rank brings the
//!   others down instead of leaving them blocked in a collective.
use super::CudaError;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

const HELLO: &[u8; 4] = b"TSRV";
const OK: &[u8; 4] = b"TSOK";
const ERR: &[u8; 4] = b"TSER";
const VERSION: u32 = 1;
const DONE: u8 = b'D';
const POLL: Duration = Duration::from_millis(20);

/// What to do when a peer disappears: receives a one-line message.
pub type AbortFn = Arc<dyn Fn(String) + Send + Sync>;

/// The default abort: print the message and end the process with status 3 through
/// `libc::_exit`. It runs on a watcher thread while the main thread may be inside CUDA or
/// NCCL; `process::exit` would run exit handlers and library teardown concurrently with
/// that (which can hang), `_exit` ends the process at once.
pub fn exit_on_peer_loss() -> AbortFn {
    Arc::new(|msg: String| {
        eprintln!("tessera: {msg}; aborting this rank");
        // SAFETY: _exit ends the process immediately without running handlers; it is
        // async-signal-safe and valid from any thread.
        unsafe { libc::_exit(3) }
    })
}

/// Rank 0's side: a bound listener.
pub struct RendezvousServer {
    listener: TcpListener,
    addr: String,
}

impl RendezvousServer {
    /// Binds the rendezvous port. `addr` is `host:port`; port 0 picks a free port (tests).
    pub fn bind(addr: &str) -> Result<RendezvousServer, CudaError> {
        let listener =
            TcpListener::bind(addr).map_err(|e| rv_err(addr, &format!("cannot listen: {e}")))?;
        Ok(RendezvousServer {
            listener,
            addr: addr.to_string(),
        })
    }

    /// The bound address (with the actual port).
    pub fn local_addr(&self) -> Result<SocketAddr, CudaError> {
        self.listener
            .local_addr()
            .map_err(|e| rv_err(&self.addr, &e.to_string()))
    }

    /// Waits until ranks `1..world` have all joined (or `timeout` passes), then sends
    /// `payload` to each. Returns the watchdog over the open connections.
    pub fn serve(
        self,
        payload: &[u8],
        world: usize,
        timeout: Duration,
        on_abort: AbortFn,
    ) -> Result<Watchdog, CudaError> {
        let deadline = Instant::now() + timeout;
        let addr = self.addr.clone();
        self.listener
            .set_nonblocking(true)
            .map_err(|e| rv_err(&addr, &e.to_string()))?;
        let mut joined: Vec<Option<TcpStream>> = (0..world).map(|_| None).collect();
        let mut count = 0usize;
        while count + 1 < world {
            match self.listener.accept() {
                Ok((mut stream, peer)) => {
                    stream
                        .set_nonblocking(false)
                        .map_err(|e| rv_err(&addr, &e.to_string()))?;
                    let remaining = deadline.saturating_duration_since(Instant::now()).max(POLL);
                    stream
                        .set_read_timeout(Some(remaining))
                        .map_err(|e| rv_err(&addr, &e.to_string()))?;
                    match read_hello(&mut stream) {
                        Ok((rank, w)) => {
                            let problem = if w as usize != world {
                                Some(format!(
                                    "rank {rank} says WORLD_SIZE={w} but rank 0 has {world}"
                                ))
                            } else if rank == 0 || rank as usize >= world {
                                Some(format!("rank {rank} is out of range 1..{world}"))
                            } else if joined[rank as usize].is_some() {
                                Some(format!("rank {rank} joined twice"))
                            } else {
                                None
                            };
                            if let Some(p) = problem {
                                let _ = write_frame(&mut stream, ERR, p.as_bytes());
                                return Err(rv_err(&addr, &p));
                            }
                            joined[rank as usize] = Some(stream);
                            count += 1;
                        }
                        Err(e) => eprintln!(
                            "tessera: rendezvous at {addr}: ignoring connection from {peer}: {e}"
                        ),
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    if Instant::now() >= deadline {
                        let missing: Vec<String> = (1..world)
                            .filter(|r| joined[*r].is_none())
                            .map(|r| r.to_string())
                            .collect();
                        return Err(rv_err(
                            &addr,
                            &format!(
                                "timed out after {:.1}s waiting for rank(s) {}",
                                timeout.as_secs_f64(),
                                missing.join(", ")
                            ),
                        ));
                    }
                    thread::sleep(POLL);
                }
                Err(e) => return Err(rv_err(&addr, &format!("accept failed: {e}"))),
            }
        }
        let mut peers = Vec::new();
        for (rank, s) in joined.into_iter().enumerate() {
            if let Some(mut s) = s {
                write_frame(&mut s, OK, payload)
                    .map_err(|e| rv_err(&addr, &format!("sending the id to rank {rank}: {e}")))?;
                peers.push((rank, s));
            }
        }
        Ok(Watchdog::start(0, peers, on_abort))
    }
}

/// A rank `> 0`'s side: connects to rank 0 (retrying until `timeout`), announces itself
/// and waits for the payload. Returns it with the watchdog over the connection.
pub fn fetch(
    addr: &str,
    rank: usize,
    world: usize,
    timeout: Duration,
    on_abort: AbortFn,
) -> Result<(Vec<u8>, Watchdog), CudaError> {
    let deadline = Instant::now() + timeout;
    let mut last_err = String::from("no attempt");
    let mut stream = loop {
        if Instant::now() >= deadline {
            return Err(rv_err(
                addr,
                &format!("rank {rank}: timed out after {:.1}s connecting to rank 0 (last error: {last_err})", timeout.as_secs_f64()),
            ));
        }
        match connect_once(addr, deadline) {
            Ok(s) => break s,
            Err(e) => {
                last_err = e;
                thread::sleep(Duration::from_millis(50));
            }
        }
    };
    let io = |e: std::io::Error| rv_err(addr, &format!("rank {rank}: {e}"));
    let mut hello = Vec::with_capacity(16);
    hello.extend_from_slice(HELLO);
    for v in [VERSION, rank as u32, world as u32] {
        hello.extend_from_slice(&v.to_le_bytes());
    }
    stream.write_all(&hello).map_err(io)?;
    let remaining = deadline.saturating_duration_since(Instant::now()).max(POLL);
    stream.set_read_timeout(Some(remaining)).map_err(io)?;
    let (tag, body) = read_frame(&mut stream).map_err(|e| {
        if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) {
            rv_err(
                addr,
                &format!(
                    "rank {rank}: timed out after {:.1}s waiting for all ranks to join",
                    timeout.as_secs_f64()
                ),
            )
        } else {
            rv_err(
                addr,
                &format!("rank {rank}: connection to rank 0 failed: {e}"),
            )
        }
    })?;
    if &tag == ERR {
        return Err(rv_err(
            addr,
            &format!(
                "rank 0 refused rank {rank}: {}",
                String::from_utf8_lossy(&body)
            ),
        ));
    }
    if &tag != OK {
        return Err(rv_err(
            addr,
            &format!(
                "rank {rank}: unexpected reply {:?}",
                String::from_utf8_lossy(&tag)
            ),
        ));
    }
    Ok((body, Watchdog::start(rank, vec![(0, stream)], on_abort)))
}

fn connect_once(addr: &str, deadline: Instant) -> Result<TcpStream, String> {
    let addrs: Vec<SocketAddr> = addr
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve: {e}"))?
        .collect();
    let mut last = String::from("no address");
    for a in addrs {
        let budget = deadline
            .saturating_duration_since(Instant::now())
            .clamp(POLL, Duration::from_secs(2));
        match TcpStream::connect_timeout(&a, budget) {
            Ok(s) => return Ok(s),
            Err(e) => last = e.to_string(),
        }
    }
    Err(last)
}

fn read_hello(s: &mut TcpStream) -> std::io::Result<(u32, u32)> {
    let mut buf = [0u8; 16];
    s.read_exact(&mut buf)?;
    if &buf[0..4] != HELLO {
        return Err(std::io::Error::new(
            ErrorKind::InvalidData,
            "not a tessera rendezvous hello",
        ));
    }
    let word = |i: usize| u32::from_le_bytes([buf[i], buf[i + 1], buf[i + 2], buf[i + 3]]);
    if word(4) != VERSION {
        return Err(std::io::Error::new(
            ErrorKind::InvalidData,
            format!("protocol version {} (expected {VERSION})", word(4)),
        ));
    }
    Ok((word(8), word(12)))
}

fn write_frame(s: &mut TcpStream, tag: &[u8; 4], body: &[u8]) -> std::io::Result<()> {
    let mut msg = Vec::with_capacity(8 + body.len());
    msg.extend_from_slice(tag);
    msg.extend_from_slice(&(body.len() as u32).to_le_bytes());
    msg.extend_from_slice(body);
    s.write_all(&msg)
}

fn read_frame(s: &mut TcpStream) -> std::io::Result<([u8; 4], Vec<u8>)> {
    let mut head = [0u8; 8];
    s.read_exact(&mut head)?;
    let len = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as usize;
    if len > 1 << 20 {
        return Err(std::io::Error::new(
            ErrorKind::InvalidData,
            format!("frame of {len} bytes"),
        ));
    }
    let mut body = vec![0u8; len];
    s.read_exact(&mut body)?;
    Ok(([head[0], head[1], head[2], head[3]], body))
}

fn rv_err(addr: &str, msg: &str) -> CudaError {
    CudaError::Rendezvous {
        addr: addr.to_string(),
        msg: msg.to_string(),
    }
}

/// Watches the rendezvous connections while the ranks run (see the module docs).
pub struct Watchdog {
    rank: usize,
    peers: Vec<(usize, TcpStream)>,
    finished: Arc<AtomicBool>,
    peers_done: Arc<AtomicUsize>,
}

impl Watchdog {
    fn start(rank: usize, peers: Vec<(usize, TcpStream)>, on_abort: AbortFn) -> Watchdog {
        let finished = Arc::new(AtomicBool::new(false));
        let peers_done = Arc::new(AtomicUsize::new(0));
        for (peer, s) in &peers {
            let Ok(mut reader) = s.try_clone() else {
                continue;
            };
            let _ = reader.set_read_timeout(None);
            let (peer, finished, peers_done, on_abort) = (
                *peer,
                finished.clone(),
                peers_done.clone(),
                on_abort.clone(),
            );
            thread::spawn(move || {
                let mut byte = [0u8; 1];
                let saw_done = matches!(reader.read(&mut byte), Ok(1) if byte[0] == DONE);
                if saw_done {
                    peers_done.fetch_add(1, Ordering::SeqCst);
                } else if !finished.load(Ordering::SeqCst) {
                    on_abort(format!("rank {rank}: rank {peer} disconnected before finishing (it died or was killed)"));
                }
            });
        }
        Watchdog {
            rank,
            peers,
            finished,
            peers_done,
        }
    }

    /// This rank finished normally: tell the peers. Rank 0 then waits (up to `timeout`)
    /// until every other rank finished too, so that its exit is not taken for a crash.
    pub fn finish(mut self, timeout: Duration) -> Result<(), CudaError> {
        for (_, s) in &mut self.peers {
            let _ = s.write_all(&[DONE]);
        }
        if self.rank == 0 {
            let deadline = Instant::now() + timeout;
            while self.peers_done.load(Ordering::SeqCst) < self.peers.len() {
                if Instant::now() >= deadline {
                    return Err(CudaError::Rendezvous {
                        addr: "watchdog".into(),
                        msg: format!(
                            "rank 0 finished but only {} of {} other ranks did within {:.1}s",
                            self.peers_done.load(Ordering::SeqCst),
                            self.peers.len(),
                            timeout.as_secs_f64()
                        ),
                    });
                }
                thread::sleep(POLL);
            }
        }
        self.finished.store(true, Ordering::SeqCst);
        Ok(())
    }
}

impl Drop for Watchdog {
    /// Dropped without [`Watchdog::finish`] (an error path): close the connections so the
    /// peers learn at once that this rank is gone.
    fn drop(&mut self) {
        self.finished.store(true, Ordering::SeqCst);
        for (_, s) in &self.peers {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    fn recorder() -> (AbortFn, mpsc::Receiver<String>) {
        let (tx, rx) = mpsc::channel();
        let tx = std::sync::Mutex::new(tx);
        (
            Arc::new(move |m: String| drop(tx.lock().map(|t| t.send(m)))),
            rx,
        )
    }

    #[test]
    fn three_ranks_exchange_an_id_and_finish() {
        let server = RendezvousServer::bind("127.0.0.1:0").unwrap();
        let addr = server.local_addr().unwrap().to_string();
        let id: Vec<u8> = (0..128u8).map(|i| i.wrapping_mul(7)).collect();
        let (abort, aborts) = recorder();
        let clients: Vec<_> = (1..3)
            .map(|r| {
                let (addr, abort) = (addr.clone(), abort.clone());
                thread::spawn(move || fetch(&addr, r, 3, Duration::from_secs(10), abort).unwrap())
            })
            .collect();
        let wd0 = server
            .serve(&id, 3, Duration::from_secs(10), abort)
            .unwrap();
        let got: Vec<_> = clients.into_iter().map(|c| c.join().unwrap()).collect();
        for (bytes, _) in &got {
            assert_eq!(bytes, &id);
        }
        for (_, wd) in got {
            wd.finish(Duration::from_secs(5)).unwrap();
        }
        wd0.finish(Duration::from_secs(5)).unwrap();
        thread::sleep(Duration::from_millis(100));
        assert!(aborts.try_recv().is_err(), "a normal finish must not abort");
    }

    #[test]
    fn client_retries_until_the_master_comes() {
        // Find a free port, release it, start the client first, then the server.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let (abort, _rx) = recorder();
        let a2 = abort.clone();
        let a = addr.clone();
        let client = thread::spawn(move || fetch(&a, 1, 2, Duration::from_secs(10), a2));
        thread::sleep(Duration::from_millis(300));
        let server = RendezvousServer::bind(&addr).unwrap();
        let _wd0 = server
            .serve(b"late-id", 2, Duration::from_secs(10), abort)
            .unwrap();
        let (bytes, _wd) = client.join().unwrap().unwrap();
        assert_eq!(bytes, b"late-id");
    }

    #[test]
    fn client_times_out_when_the_master_never_comes() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let (abort, _rx) = recorder();
        let t0 = Instant::now();
        let err = fetch(
            &format!("127.0.0.1:{port}"),
            1,
            2,
            Duration::from_millis(400),
            abort,
        )
        .err()
        .unwrap();
        let msg = err.to_string();
        assert!(msg.contains("timed out") && msg.contains("rank 1"), "{msg}");
        assert!(t0.elapsed() < Duration::from_secs(5));
    }

    /// Rank 1, told world size `client_world` (waiting `client_wait`), meets a master
    /// expecting `server_world` ranks (waiting `server_wait`); both must fail, not hang.
    /// Returns the master's and rank 1's errors.
    fn both_fail(
        client_world: usize,
        client_wait: Duration,
        server_world: usize,
        server_wait: Duration,
    ) -> (String, String) {
        let server = RendezvousServer::bind("127.0.0.1:0").unwrap();
        let addr = server.local_addr().unwrap().to_string();
        let (abort, _rx) = recorder();
        let a = abort.clone();
        let client = thread::spawn(move || fetch(&addr, 1, client_world, client_wait, a));
        let err = server.serve(b"id", server_world, server_wait, abort);
        let cerr = client.join().unwrap();
        (
            err.err().expect("the master succeeded").to_string(),
            cerr.err().expect("rank 1 succeeded").to_string(),
        )
    }

    #[test]
    fn master_times_out_naming_the_missing_rank() {
        // Rank 1 comes, rank 2 never does.
        let (err, cerr) = both_fail(3, Duration::from_millis(800), 3, Duration::from_millis(500));
        assert!(err.contains("waiting for rank(s) 2"), "{err}");
        assert!(cerr.contains("rank 1"), "{cerr}");
    }

    #[test]
    fn world_size_mismatch_is_refused() {
        let (err, cerr) = both_fail(4, Duration::from_secs(5), 2, Duration::from_secs(5));
        assert!(err.contains("WORLD_SIZE=4"), "{err}");
        assert!(
            cerr.contains("refused") && cerr.contains("WORLD_SIZE=4"),
            "{cerr}"
        );
    }

    #[test]
    fn peer_loss_triggers_abort() {
        let server = RendezvousServer::bind("127.0.0.1:0").unwrap();
        let addr = server.local_addr().unwrap().to_string();
        let (abort, aborts) = recorder();
        let a = abort.clone();
        let client = thread::spawn(move || fetch(&addr, 1, 2, Duration::from_secs(5), a).unwrap());
        let wd0 = server
            .serve(b"id", 2, Duration::from_secs(5), abort)
            .unwrap();
        let (_, wd1) = client.join().unwrap();
        drop(wd1); // rank 1 "dies": its socket closes without the DONE byte
        let msg = aborts.recv_timeout(Duration::from_secs(5)).unwrap();
        assert!(msg.contains("rank 1 disconnected"), "{msg}");
        drop(wd0);
    }
}
