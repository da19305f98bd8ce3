//! A fault-injecting TCP proxy in front of a real broker, for answers a real broker gives
//! only at moments a test cannot arrange: `NOT_COORDINATOR` or `COORDINATOR_NOT_AVAILABLE`
//! to an `OffsetFetch` while a group's coordinator moves (a rolling restart, a new leader
//! of `__consumer_offsets`). Every other request and answer is relayed byte for byte.
//!
//! The broker advertises the proxy's port on the listener the proxy forwards to
//! ([`super::PrivateBroker::behind_proxy`]), so a client bootstrapped at the proxy sends
//! everything through it, coordinator requests included. Requests of one connection are
//! relayed one at a time (the next is read once the previous is answered), which keeps
//! answers in order even when the proxy answers one itself.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

const OFFSET_FETCH: i16 = 9;

pub struct FaultProxy {
    pub port: u16,
    faults: Arc<Faults>,
    stop: Arc<AtomicBool>,
}

/// What the proxy answers itself.
#[derive(Default)]
struct Faults {
    /// `OffsetFetch` requests still to answer, and with which error code.
    left: AtomicUsize,
    code: AtomicI32,
    /// `OffsetFetch` requests answered so far.
    injected: AtomicUsize,
}

impl FaultProxy {
    /// Listens on 127.0.0.1:`port` and relays each connection to 127.0.0.1:`upstream`.
    pub fn start(port: u16, upstream: u16) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("proxy port");
        listener.set_nonblocking(true).unwrap();
        let (faults, stop) = (Arc::new(Faults::default()), Arc::new(AtomicBool::new(false)));
        {
            let (faults, stop) = (faults.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((client, _)) => {
                            let faults = faults.clone();
                            std::thread::spawn(move || {
                                let _ = relay(client, upstream, &faults);
                            });
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(20)),
                    }
                }
            });
        }
        FaultProxy { port, faults, stop }
    }

    /// Answers the next `times` `OffsetFetch` requests (v8 or later, one group each) itself,
    /// failing the group with `error_code`.
    pub fn fail_offset_fetch(&self, error_code: i16, times: usize) {
        self.faults.code.store(i32::from(error_code), Ordering::SeqCst);
        self.faults.left.store(times, Ordering::SeqCst);
    }

    /// `OffsetFetch` requests the proxy answered itself so far.
    pub fn injected(&self) -> usize {
        self.faults.injected.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn read_frame(s: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len)?;
    let n = i32::from_be_bytes(len);
    assert!((0..64 << 20).contains(&n), "frame of {n} bytes");
    let mut buf = vec![0u8; n as usize];
    s.read_exact(&mut buf)?;
    Ok(buf)
}

fn write_frame(s: &mut TcpStream, body: &[u8]) -> std::io::Result<()> {
    s.write_all(&(body.len() as i32).to_be_bytes())?;
    s.write_all(body)
}

fn relay(mut client: TcpStream, upstream: u16, faults: &Faults) -> std::io::Result<()> {
    let mut broker = TcpStream::connect(("127.0.0.1", upstream))?;
    loop {
        let req = read_frame(&mut client)?;
        let api_key = i16::from_be_bytes([req[0], req[1]]);
        if api_key == OFFSET_FETCH && faults.left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
            let code = i16::try_from(faults.code.load(Ordering::SeqCst)).expect("an int16 error code");
            write_frame(&mut client, &offset_fetch_error(&req, code))?;
            faults.injected.fetch_add(1, Ordering::SeqCst);
            continue;
        }
        write_frame(&mut broker, &req)?;
        let resp = read_frame(&mut broker)?;
        write_frame(&mut client, &resp)?;
    }
}

/// Reads an unsigned varint at `*at`.
fn uvarint(b: &[u8], at: &mut usize) -> u64 {
    let (mut v, mut shift) = (0u64, 0);
    loop {
        let byte = b[*at];
        *at += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return v;
        }
        shift += 7;
    }
}

/// The answer to an `OffsetFetch` request (v8+: groups batched, flexible) that fails its
/// one group with `error_code`.
fn offset_fetch_error(req: &[u8], error_code: i16) -> Vec<u8> {
    let version = i16::from_be_bytes([req[2], req[3]]);
    assert!(version >= 8, "the proxy answers OffsetFetch v8 or later only, got v{version}");
    let correlation = &req[4..8];
    // Request header v2: client_id (int16 length, -1 for null), then tagged fields.
    let client_id = i16::from_be_bytes([req[8], req[9]]);
    let mut at = 10 + usize::try_from(client_id).unwrap_or(0);
    for _ in 0..uvarint(req, &mut at) {
        let _tag = uvarint(req, &mut at);
        at += uvarint(req, &mut at) as usize;
    }
    // Body: groups (compact array) of group_id (compact string), …
    assert_eq!(uvarint(req, &mut at), 2, "one group per OffsetFetch (librdkafka's ListConsumerGroupOffsets)");
    let len = uvarint(req, &mut at) as usize - 1;
    let group = &req[at..at + len];
    let mut out = Vec::new();
    out.extend_from_slice(correlation);
    out.push(0); // response header v1: no tagged fields
    out.extend_from_slice(&0i32.to_be_bytes()); // throttle_time_ms
    out.push(2); // groups: one
    out.push(u8::try_from(len + 1).expect("a short group name"));
    out.extend_from_slice(group);
    out.push(1); // topics: none
    out.extend_from_slice(&error_code.to_be_bytes());
    out.push(0); // the group's tagged fields
    out.push(0); // the response's tagged fields
    out
}
