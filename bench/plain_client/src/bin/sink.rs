//! A keep-alive HTTP/1.1 sink for the batch benchmarks, on 127.0.0.1 only.
//! It reads each request with its body and responds with `{"status":"ok"}` after
//! an optional delay. With `--every-429 N`, the first request for every Nth
//! record (by the number in `/claims/C-<n>`) gets `429` with
//! `Retry-After: 1` instead. A request to `/stop` ends it; with `--log FILE`
//! it first writes one line per request it served,
//! `<microseconds since start> <status> <target>`.
//!
//! Usage: sink PORT [--delay-ms MS] [--every-429 N] [--log FILE]

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

struct Config {
    delay: Duration,
    every_429: u64,
    started: Instant,
    refused: Mutex<HashSet<u64>>,
    log: Mutex<Vec<(u128, u16, String)>>,
    log_path: Option<String>,
}

fn main() {
    let mut args = std::env::args().skip(1);
    let port: u16 = args.next().expect("PORT").parse().expect("PORT");
    let mut delay = Duration::ZERO;
    let mut every_429 = 0;
    let mut log_path = None;
    while let Some(flag) = args.next() {
        let value = args.next().expect("a value after each flag");
        match flag.as_str() {
            "--delay-ms" => delay = Duration::from_millis(value.parse().unwrap()),
            "--every-429" => every_429 = value.parse().unwrap(),
            "--log" => log_path = Some(value),
            other => panic!("unknown flag {other}"),
        }
    }
    let config = Arc::new(Config {
        delay,
        every_429,
        started: Instant::now(),
        refused: Mutex::new(HashSet::new()),
        log: Mutex::new(Vec::new()),
        log_path,
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let accept_config = config.clone();
        let accept = tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                stream.set_nodelay(true).unwrap();
                tokio::spawn(serve(stream, accept_config.clone()));
            }
        });
        accept.await.ok();
    });
}

fn write_log(config: &Config) {
    let Some(path) = &config.log_path else { return };
    let log = config.log.lock().unwrap();
    let text: String = log
        .iter()
        .map(|(micros, status, target)| format!("{micros} {status} {target}\n"))
        .collect();
    std::fs::write(path, text).unwrap();
}

async fn serve(mut stream: TcpStream, config: Arc<Config>) {
    let mut buffer: Vec<u8> = Vec::with_capacity(8192);
    loop {
        let head_end = loop {
            if let Some(index) = buffer.windows(4).position(|window| window == b"\r\n\r\n") {
                break index + 4;
            }
            let mut chunk = [0u8; 8192];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(read) => buffer.extend_from_slice(&chunk[..read]),
            }
        };
        let head = String::from_utf8_lossy(&buffer[..head_end]).to_string();
        let target = head.split(' ').nth(1).unwrap_or("").to_string();
        let length: usize = head
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().ok())?
            })
            .unwrap_or(0);
        while buffer.len() < head_end + length {
            let mut chunk = [0u8; 8192];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(read) => buffer.extend_from_slice(&chunk[..read]),
            }
        }
        buffer.drain(..head_end + length);

        if target == "/stop" {
            write_log(&config);
            std::process::exit(0);
        }
        let received = config.started.elapsed().as_micros();
        let record: Option<u64> = target
            .split("/claims/C-")
            .nth(1)
            .and_then(|rest| rest.split(['?', '/']).next())
            .and_then(|number| number.parse().ok());
        let refuse = match record {
            Some(number) if config.every_429 > 0 && number % config.every_429 == 0 => {
                config.refused.lock().unwrap().insert(number)
            }
            _ => false,
        };
        let status = if refuse { 429 } else { 200 };
        config.log.lock().unwrap().push((received, status, target));
        let response: &[u8] = if refuse {
            b"HTTP/1.1 429 Too Many Requests\r\nretry-after: 1\r\ncontent-length: 0\r\n\r\n"
        } else {
            if !config.delay.is_zero() {
                tokio::time::sleep(config.delay).await;
            }
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 15\r\n\r\n{\"status\":\"ok\"}"
        };
        if stream.write_all(response).await.is_err() {
            return;
        }
    }
}
