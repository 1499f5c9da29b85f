//! HTTP/1 bodies: the chunked coding checked byte by byte as it passes ([`Chunked`]).

/// A chunked body's framing, checked as the bytes pass (RFC 9112 §7.1): sizes
/// in hex, extensions skipped, each chunk followed by CRLF, trailer lines to the
/// final empty line. Anything else (a bare LF, a bad digit, an overlong size) is
/// an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunked {
    /// Reading a size line: the size so far and how many digits.
    Size(u64, u8),
    /// In a size line's extension, until CR.
    Extension(u64),
    /// Seen the CR ending a size line.
    SizeLf(u64),
    /// Inside a chunk's data: bytes left.
    Data(u64),
    /// Expecting the CR after a chunk's data.
    DataCr,
    /// Expecting the LF after a chunk's data.
    DataLf,
    /// At the start of a trailer line (after the last chunk).
    TrailerStart,
    /// Inside a trailer line.
    Trailer,
    /// Seen the CR ending a trailer line.
    TrailerLf,
    /// Seen the CR of the final empty line.
    EndLf,
    /// The body is complete.
    Done,
}

impl Chunked {
    /// Advance over `bytes`; returns how many belong to the body (all of them
    /// unless the body ends inside) and how many were chunk data.
    pub fn advance(&mut self, bytes: &[u8]) -> Result<(usize, u64), &'static str> {
        self.advance_with(bytes, |_| {})
    }

    /// [`Chunked::advance`], handing each run of chunk data to `on_data` (to
    /// take the body out of its chunks).
    pub fn advance_with(
        &mut self,
        bytes: &[u8],
        mut on_data: impl FnMut(&[u8]),
    ) -> Result<(usize, u64), &'static str> {
        let mut data = 0u64;
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            *self = match *self {
                Chunked::Done => return Ok((i, data)),
                Chunked::Data(left) => {
                    let take = left.min((bytes.len() - i) as u64);
                    on_data(&bytes[i..i + take as usize]);
                    i += take as usize;
                    data += take;
                    *self = if take == left { Chunked::DataCr } else { Chunked::Data(left - take) };
                    continue;
                }
                Chunked::Size(size, digits) => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        if digits >= 15 {
                            return Err("chunk size too large");
                        }
                        let d = (b as char).to_digit(16).expect("hex digit") as u64;
                        Chunked::Size(size * 16 + d, digits + 1)
                    }
                    _ if digits == 0 => return Err("chunk size missing"),
                    b'\r' => Chunked::SizeLf(size),
                    b';' | b' ' | b'\t' => Chunked::Extension(size),
                    _ => return Err("bad chunk size"),
                },
                Chunked::Extension(size) => match b {
                    b'\r' => Chunked::SizeLf(size),
                    b'\n' => return Err("bare LF in chunk extension"),
                    _ => Chunked::Extension(size),
                },
                Chunked::SizeLf(size) => match (b, size) {
                    (b'\n', 0) => Chunked::TrailerStart,
                    (b'\n', n) => Chunked::Data(n),
                    _ => return Err("CR without LF after chunk size"),
                },
                Chunked::DataCr => match b {
                    b'\r' => Chunked::DataLf,
                    _ => return Err("chunk data longer than its size"),
                },
                Chunked::DataLf => match b {
                    b'\n' => Chunked::Size(0, 0),
                    _ => return Err("CR without LF after chunk data"),
                },
                Chunked::TrailerStart => match b {
                    b'\r' => Chunked::EndLf,
                    b'\n' => return Err("bare LF in trailer"),
                    _ => Chunked::Trailer,
                },
                Chunked::Trailer => match b {
                    b'\r' => Chunked::TrailerLf,
                    b'\n' => return Err("bare LF in trailer"),
                    _ => Chunked::Trailer,
                },
                Chunked::TrailerLf => match b {
                    b'\n' => Chunked::TrailerStart,
                    _ => return Err("CR without LF in trailer"),
                },
                Chunked::EndLf => match b {
                    b'\n' => {
                        *self = Chunked::Done;
                        return Ok((i + 1, data));
                    }
                    _ => return Err("CR without LF at the end of a chunked body"),
                },
            };
            i += 1;
        }
        Ok((i, data))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(body: &[u8]) -> Result<(usize, u64, Chunked), &'static str> {
        let mut c = Chunked::Size(0, 0);
        let (used, data) = c.advance(body)?;
        Ok((used, data, c))
    }

    #[test]
    fn chunked_bodies_end_where_they_end() {
        let body = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nTrailer: x\r\n\r\nNEXT";
        let (used, data, state) = run(body).unwrap();
        assert_eq!(state, Chunked::Done);
        assert_eq!(&body[used..], b"NEXT");
        assert_eq!(data, 11);
        // Byte by byte, the same.
        let mut c = Chunked::Size(0, 0);
        let mut total = 0;
        for b in body.iter().take(used) {
            total += c.advance(std::slice::from_ref(b)).unwrap().1;
        }
        assert_eq!((c, total), (Chunked::Done, 11));
        assert_eq!(run(b"0\r\n\r\n").unwrap().2, Chunked::Done);
        assert_eq!(run(b"A\r\n0123").unwrap().2, Chunked::Data(6));
    }

    #[test]
    fn chunk_data_can_be_taken_out() {
        let mut c = Chunked::Size(0, 0);
        let mut data = Vec::new();
        let body = b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
        for piece in body.chunks(3) {
            c.advance_with(piece, |d| data.extend_from_slice(d)).unwrap();
        }
        assert_eq!((c, &data[..]), (Chunked::Done, &b"hello world"[..]));
    }

    #[test]
    fn malformed_chunked_bodies_are_errors() {
        for bad in [
            &b"\r\n"[..],
            b"5\nhello\r\n",
            b"g\r\n",
            b"5\r\nhello!\r\n",
            b"5\r\nhello\n",
            b"0\r\n\n",
            b"0\r\nX: y\n",
            b"ffffffffffffffff\r\n",
            b"5;ext\n",
        ] {
            assert!(run(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
