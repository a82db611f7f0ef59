//! The ${{ values.name }} service: answers `GET /health` with `ok`, a
//! starting point to grow from.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;

fn main() -> std::io::Result<()> {
    let address = std::env::var("ADDRESS").unwrap_or_else(|_| "0.0.0.0:8080".to_owned());
    let listener = TcpListener::bind(&address)?;
    println!("${{ values.name }} listening on {address}");
    for stream in listener.incoming() {
        let mut stream = stream?;
        let mut request_line = String::new();
        BufReader::new(&stream).read_line(&mut request_line)?;
        let (status, body) = if request_line.starts_with("GET /health ") {
            ("200 OK", "ok")
        } else {
            ("404 Not Found", "not found")
        };
        write!(stream, "HTTP/1.1 {status}\r\ncontent-length: {}\r\n\r\n{body}", body.len())?;
    }
    Ok(())
}
