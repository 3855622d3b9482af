//! Every refusal is JSON, also the ones the HTTP parser makes: hyper answers a request
//! whose head it cannot parse (a control character in a header value, a malformed header
//! line) or whose head is too large on its own, with a bare status and no body, before
//! any route sees it. The API's listener wraps each connection so that such an answer is
//! replaced by the API's JSON error with the same status. The parser stays as strict as
//! it is: nothing it refuses is let through.
//!
//! hyper writes that answer as a head alone (`content-length: 0`), then closes the
//! connection; the routes never answer a 4xx without a JSON body, so a bare 4xx head is
//! always the parser's.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::extract::ConnectInfo;
use axum::middleware::AddExtension;
use axum::serve::{IncomingStream, Listener};
use axum::{Extension, Router};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tower::{Layer, Service};

/// The API's listener: its connections answer the parser's refusals in JSON.
pub struct JsonRefusingListener(pub TcpListener);

impl Listener for JsonRefusingListener {
    type Io = JsonRefusals<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, SocketAddr) {
        let (stream, peer) = Listener::accept(&mut self.0).await;
        (JsonRefusals::new(stream), peer)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

/// Makes the API's service of each connection of a [`JsonRefusingListener`], with the
/// peer's address as `ConnectInfo` (what `into_make_service_with_connect_info` does for a
/// plain `TcpListener`).
#[derive(Clone)]
pub struct WithPeer(pub Router);

impl Service<IncomingStream<'_, JsonRefusingListener>> for WithPeer {
    type Response = AddExtension<Router, ConnectInfo<SocketAddr>>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, incoming: IncomingStream<'_, JsonRefusingListener>) -> Self::Future {
        let peer = Extension(ConnectInfo(*incoming.remote_addr()));
        std::future::ready(Ok(peer.layer(self.0.clone())))
    }
}

/// A connection whose bare refusals are written as JSON answers.
pub struct JsonRefusals<S> {
    inner: S,
    /// The JSON answer being written in place of a bare one, and how much is written.
    replacing: Option<(Vec<u8>, usize)>,
}

impl<S> JsonRefusals<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            replacing: None,
        }
    }
}

impl<S: AsyncWrite + Unpin> JsonRefusals<S> {
    /// Writes what is left of a replacement answer; ready once none is left.
    fn poll_replacement(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((answer, written)) = &mut self.replacing {
            if *written == answer.len() {
                self.replacing = None;
                break;
            }
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &answer[*written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *written += n;
        }
        Poll::Ready(Ok(()))
    }

    /// Takes `head` in place of a bare refusal: its replacement is written instead.
    fn replace(&mut self, cx: &mut Context<'_>, head: &[u8], answer: Vec<u8>) -> usize {
        self.replacing = Some((answer, 0));
        // Written now as far as the socket takes it; the rest on the next write or flush.
        let _ = self.poll_replacement(cx);
        head.len()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for JsonRefusals<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for JsonRefusals<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_replacement(cx))?;
        if let Some(answer) = json_answer(buf) {
            return Poll::Ready(Ok(this.replace(cx, buf, answer)));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_replacement(cx))?;
        if let Some(first) = bufs.iter().find(|b| !b.is_empty())
            && let Some(answer) = json_answer(first)
        {
            return Poll::Ready(Ok(this.replace(cx, first, answer)));
        }
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_replacement(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_replacement(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

/// The JSON answer in place of `head`, when `head` is a bare refusal of the parser.
fn json_answer(head: &[u8]) -> Option<Vec<u8>> {
    let rest = head.strip_prefix(b"HTTP/1.1 ")?;
    let (status, reason, message) = match rest.get(..4)? {
        b"400 " => (
            "400 Bad Request",
            "invalid_request",
            "the request's head cannot be parsed: a header value holds a control character, or a line is malformed",
        ),
        b"431 " => (
            "431 Request Header Fields Too Large",
            "invalid_request",
            "the request's headers are too large",
        ),
        _ => return None,
    };
    let bare = head.ends_with(b"\r\n\r\n")
        && head
            .windows(b"\r\ncontent-length: 0\r\n".len())
            .any(|w| w.eq_ignore_ascii_case(b"\r\ncontent-length: 0\r\n"));
    if !bare {
        return None;
    }
    let body = serde_json::json!({ "reason": reason, "message": message }).to_string();
    let answer = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    Some(answer.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_bare_4xx_head_is_replaced() {
        let bare = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\ndate: Sun, 06 Dec 2026 15:00:00 GMT\r\n\r\n";
        let answer = String::from_utf8(json_answer(bare).unwrap()).unwrap();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{head}");
        assert!(head.contains("content-type: application/json"), "{head}");
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["reason"], "invalid_request");
        let too_large =
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n\r\n";
        assert!(json_answer(too_large).is_some());
        for kept in [
            &b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 51\r\n\r\n"[..],
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n{\"partial\"",
            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
            b"{\"reason\":\"sold_out\"}",
        ] {
            assert_eq!(json_answer(kept), None, "{}", String::from_utf8_lossy(kept));
        }
    }
}
