//! MLLP framing (FACTS §4.4): `<VT 0x0B> message <FS 0x1C><CR 0x0D>`.
//!
//! [`MllpCodec`] is a `tokio_util` codec: frames come out as [`Bytes`] (the message
//! without framing, not copied), and `&[u8]` messages go in.
//!
//! Decoding is lenient where it costs nothing: bytes before a VT are skipped and counted
//! ([`MllpCodec::skipped_bytes`]); a VT inside a frame restarts the frame (the sender gave
//! up on the earlier one; its bytes count as skipped); an FS followed by something other
//! than CR ends the frame all the same and is counted
//! ([`MllpCodec::frames_without_cr`]). A frame larger than the limit is an error
//! ([`MllpError::FrameTooLarge`]) so the server can reply and close; a decoder that is
//! called again after it drops bytes up to the end of that frame and goes on.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use memchr::{memchr, memchr2};
use thiserror::Error;
use tokio_util::codec::{Decoder, Encoder};

/// Start of block (VT).
pub const START: u8 = 0x0B;
/// End of block (FS).
pub const END: u8 = 0x1C;
/// Carriage return, after FS.
pub const CR: u8 = 0x0D;

/// Default limit on a frame's content: 16 MiB.
pub const DEFAULT_MAX_FRAME: usize = 16 * 1024 * 1024;

/// Framing errors. None carries message content.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum MllpError {
    #[error("MLLP I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// A frame's content exceeded the limit (in bytes) before its FS.
    #[error("MLLP frame larger than the {limit}-byte limit")]
    FrameTooLarge { limit: usize },
    /// The stream ended inside a frame.
    #[error("the stream ended inside an MLLP frame ({len} bytes without an end block)")]
    IncompleteFrame { len: usize },
    /// A message to send contains a VT or FS byte, which would break the framing.
    #[error("cannot frame a message holding an MLLP control byte at offset {position}")]
    ControlByteInMessage { position: usize },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Looking for VT.
    Idle,
    /// After VT (consumed); `scanned` bytes of content hold neither VT nor FS.
    InFrame { scanned: usize },
    /// After an oversize frame: dropping bytes up to its FS.
    Discarding,
    /// Just after an FS that ended a frame or a discarded one: a CR here is part of it.
    AfterEnd,
}

/// The MLLP codec. See the module documentation.
#[derive(Debug, Clone)]
pub struct MllpCodec {
    max_frame: usize,
    state: State,
    skipped: u64,
    skipped_unreported: u64,
    without_cr: u64,
}

impl Default for MllpCodec {
    fn default() -> Self {
        MllpCodec::new()
    }
}

impl MllpCodec {
    /// A codec with the default 16 MiB limit.
    pub fn new() -> MllpCodec {
        MllpCodec::with_max_frame(DEFAULT_MAX_FRAME)
    }

    /// A codec whose frames' content may be at most `max_frame` bytes.
    pub fn with_max_frame(max_frame: usize) -> MllpCodec {
        MllpCodec {
            max_frame,
            state: State::Idle,
            skipped: 0,
            skipped_unreported: 0,
            without_cr: 0,
        }
    }

    /// The content limit.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Bytes skipped so far: before a VT, of frames restarted by a VT, and of oversize
    /// frames.
    pub fn skipped_bytes(&self) -> u64 {
        self.skipped
    }

    /// Bytes skipped since the last call (for a log line).
    pub fn take_skipped(&mut self) -> u64 {
        std::mem::take(&mut self.skipped_unreported)
    }

    /// Frames whose FS was not followed by CR.
    pub fn frames_without_cr(&self) -> u64 {
        self.without_cr
    }

    fn skip(&mut self, src: &mut BytesMut, n: usize) {
        self.count_skipped(n);
        src.advance(n);
    }

    fn count_skipped(&mut self, n: usize) {
        self.skipped += n as u64;
        self.skipped_unreported += n as u64;
    }

    /// A frame whose FS is at `end`; the FS (and the CR after it, when `cr`) is consumed.
    fn take_frame(&mut self, src: &mut BytesMut, end: usize) -> Bytes {
        let frame = src.split_to(end).freeze();
        src.advance(1);
        self.state = State::AfterEnd;
        frame
    }
}

impl Decoder for MllpCodec {
    type Item = Bytes;
    type Error = MllpError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, MllpError> {
        loop {
            match self.state {
                State::AfterEnd => match src.first() {
                    None => return Ok(None),
                    Some(&CR) => {
                        src.advance(1);
                        self.state = State::Idle;
                    }
                    Some(_) => {
                        self.without_cr += 1;
                        self.state = State::Idle;
                    }
                },
                State::Idle => match memchr(START, src) {
                    Some(i) => {
                        self.skip(src, i);
                        src.advance(1);
                        self.state = State::InFrame { scanned: 0 };
                    }
                    None => {
                        let n = src.len();
                        self.skip(src, n);
                        return Ok(None);
                    }
                },
                State::InFrame { scanned } => match memchr2(START, END, &src[scanned..]) {
                    Some(i) if src[scanned + i] == START => {
                        // A new frame starts: the partial one (and its VT) is dropped.
                        self.count_skipped(1);
                        self.skip(src, scanned + i);
                        src.advance(1);
                        self.state = State::InFrame { scanned: 0 };
                    }
                    Some(i) => {
                        let end = scanned + i;
                        if end > self.max_frame {
                            self.count_skipped(1);
                            self.skip(src, end + 1);
                            self.state = State::AfterEnd;
                            return Err(MllpError::FrameTooLarge {
                                limit: self.max_frame,
                            });
                        }
                        return Ok(Some(self.take_frame(src, end)));
                    }
                    None => {
                        if src.len() > self.max_frame {
                            self.count_skipped(1);
                            let n = src.len();
                            self.skip(src, n);
                            self.state = State::Discarding;
                            return Err(MllpError::FrameTooLarge {
                                limit: self.max_frame,
                            });
                        }
                        self.state = State::InFrame { scanned: src.len() };
                        return Ok(None);
                    }
                },
                State::Discarding => match memchr(END, src) {
                    Some(i) => {
                        self.skip(src, i + 1);
                        self.state = State::AfterEnd;
                    }
                    None => {
                        let n = src.len();
                        self.skip(src, n);
                        return Ok(None);
                    }
                },
            }
        }
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, MllpError> {
        if let Some(frame) = self.decode(src)? {
            return Ok(Some(frame));
        }
        match self.state {
            State::InFrame { .. } => {
                let len = src.len();
                self.skip(src, len);
                self.state = State::Idle;
                Err(MllpError::IncompleteFrame { len })
            }
            State::AfterEnd => {
                // The stream ended right after an FS: the CR is missing.
                self.without_cr += 1;
                self.state = State::Idle;
                Ok(None)
            }
            State::Idle | State::Discarding => Ok(None),
        }
    }
}

impl Encoder<&[u8]> for MllpCodec {
    type Error = MllpError;

    fn encode(&mut self, message: &[u8], dst: &mut BytesMut) -> Result<(), MllpError> {
        if let Some(position) = memchr2(START, END, message) {
            return Err(MllpError::ControlByteInMessage { position });
        }
        dst.reserve(message.len() + 3);
        dst.put_u8(START);
        dst.put_slice(message);
        dst.put_u8(END);
        dst.put_u8(CR);
        Ok(())
    }
}

/// Appends `<VT> message <FS><CR>` to `out`. The message is not checked for VT/FS (the
/// encoder does that).
pub fn frame(message: &[u8], out: &mut Vec<u8>) {
    out.reserve(message.len() + 3);
    out.push(START);
    out.extend_from_slice(message);
    out.push(END);
    out.push(CR);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(msgs: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for m in msgs {
            frame(m, &mut out);
        }
        out
    }

    /// Feeds `input` in chunks of `chunk` bytes, then signals end of stream.
    fn decode_all(codec: &mut MllpCodec, input: &[u8], chunk: usize) -> Vec<Result<Bytes, String>> {
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for piece in input.chunks(chunk) {
            buf.extend_from_slice(piece);
            loop {
                match codec.decode(&mut buf) {
                    Ok(Some(f)) => out.push(Ok(f)),
                    Ok(None) => break,
                    Err(e) => out.push(Err(e.to_string())),
                }
            }
        }
        loop {
            match codec.decode_eof(&mut buf) {
                Ok(Some(f)) => out.push(Ok(f)),
                Ok(None) => break,
                Err(e) => {
                    out.push(Err(e.to_string()));
                    break;
                }
            }
        }
        out
    }

    const A: &[u8] = b"MSH|^~\\&|A\rPID|1\r";
    const B: &[u8] = b"MSH|^~\\&|B\r";

    #[test]
    fn byte_by_byte() {
        let input = framed(&[A, B]);
        let mut c = MllpCodec::new();
        let got = decode_all(&mut c, &input, 1);
        assert_eq!(
            got,
            vec![Ok(Bytes::from_static(A)), Ok(Bytes::from_static(B))]
        );
        assert_eq!(c.skipped_bytes(), 0);
        assert_eq!(c.frames_without_cr(), 0);
    }

    #[test]
    fn every_chunk_size() {
        let input = framed(&[A, B, A]);
        for chunk in 1..=input.len() {
            let got = decode_all(&mut MllpCodec::new(), &input, chunk);
            assert_eq!(got.len(), 3, "chunk {chunk}");
            assert!(got.iter().all(Result::is_ok));
        }
    }

    #[test]
    fn two_frames_in_one_read() {
        let input = framed(&[A, B]);
        let mut c = MllpCodec::new();
        let mut buf = BytesMut::from(&input[..]);
        assert_eq!(c.decode(&mut buf).unwrap().unwrap(), A);
        assert_eq!(c.decode(&mut buf).unwrap().unwrap(), B);
        assert_eq!(c.decode(&mut buf).unwrap(), None);
        assert!(buf.is_empty());
    }

    #[test]
    fn garbage_before_vt() {
        let mut input = b"GET / HTTP/1.0\r\n\r\n".to_vec();
        input.extend(framed(&[A]));
        input.extend_from_slice(b"\r\n");
        input.extend(framed(&[B]));
        let mut c = MllpCodec::new();
        let got = decode_all(&mut c, &input, 7);
        assert_eq!(
            got,
            vec![Ok(Bytes::from_static(A)), Ok(Bytes::from_static(B))]
        );
        assert_eq!(c.skipped_bytes(), 20);
        assert_eq!(c.take_skipped(), 20);
        assert_eq!(c.take_skipped(), 0);
    }

    #[test]
    fn fs_without_cr() {
        let input = [&[START][..], A, &[END, START], B, &[END]].concat();
        let mut c = MllpCodec::new();
        let got = decode_all(&mut c, &input, 3);
        assert_eq!(
            got,
            vec![Ok(Bytes::from_static(A)), Ok(Bytes::from_static(B))]
        );
        assert_eq!(c.frames_without_cr(), 2);
        assert_eq!(c.skipped_bytes(), 0);
    }

    #[test]
    fn vt_restarts_a_frame() {
        let input = [&[START][..], b"partial", &framed(&[A])].concat();
        let mut c = MllpCodec::new();
        let got = decode_all(&mut c, &input, 4);
        assert_eq!(got, vec![Ok(Bytes::from_static(A))]);
        assert_eq!(c.skipped_bytes(), 8);
    }

    #[test]
    fn oversize_frame() {
        let big = vec![b'x'; 100];
        let input = framed(&[&big, A]);
        // All at once: the FS is seen, the frame is too large.
        let mut c = MllpCodec::with_max_frame(50);
        let got = decode_all(&mut c, &input, input.len());
        assert_eq!(
            got[0],
            Err("MLLP frame larger than the 50-byte limit".into())
        );
        assert_eq!(got[1], Ok(Bytes::from_static(A)));
        // Byte by byte: the limit trips before the FS; the rest is dropped.
        let mut c = MllpCodec::with_max_frame(50);
        let got = decode_all(&mut c, &input, 1);
        assert_eq!(got.len(), 2);
        assert!(matches!(&got[0], Err(e) if e.contains("50-byte")));
        assert_eq!(got[1], Ok(Bytes::from_static(A)));
        // A frame of exactly the limit is fine.
        let mut c = MllpCodec::with_max_frame(A.len());
        assert_eq!(
            decode_all(&mut c, &framed(&[A]), 1),
            vec![Ok(Bytes::from_static(A))]
        );
    }

    #[test]
    fn incomplete_at_eof() {
        let input = [&[START][..], A].concat();
        let got = decode_all(&mut MllpCodec::new(), &input, 5);
        assert_eq!(got.len(), 1);
        assert!(matches!(&got[0], Err(e) if e.contains("ended inside")));
        // Garbage alone at EOF is no error.
        assert!(decode_all(&mut MllpCodec::new(), b"noise", 2).is_empty());
    }

    #[test]
    fn encoder() {
        let mut c = MllpCodec::new();
        let mut dst = BytesMut::new();
        c.encode(A, &mut dst).unwrap();
        assert_eq!(&dst[..], &framed(&[A])[..]);
        assert!(matches!(
            c.encode(b"ab\x1ccd", &mut dst),
            Err(MllpError::ControlByteInMessage { position: 2 })
        ));
    }
}
