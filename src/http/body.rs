//! Request bodies: read within `--max-request-bytes`, and decompressed
//! (gzip, deflate) within the same limit.

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};

use super::{error_response, Body};
use crate::service::Service;

/// A request the HTTP layer itself refuses (body too large, unreadable,
/// badly encoded), before the core sees it.
pub(super) struct Refusal(pub StatusCode, pub String);

impl Refusal {
    pub(super) fn into_response(self) -> Response<Body> {
        error_response(self.0, self.1)
    }
}

/// Reads the whole body, at most `--max-request-bytes`, decompressing a
/// `Content-Encoding: gzip` or `deflate` body (tritonclient's
/// `request_compression_algorithm`) within the same limit.
pub(super) async fn read_body(state: &Service, req: Request<Incoming>) -> Result<Bytes, Refusal> {
    let limit = state.max_request_bytes();
    let encoding = match req
        .headers()
        .get(hyper::header::CONTENT_ENCODING)
        .map(|v| v.to_str())
    {
        None => None,
        Some(Ok(e)) if e.eq_ignore_ascii_case("identity") => None,
        Some(Ok(e)) if e.eq_ignore_ascii_case("gzip") || e.eq_ignore_ascii_case("deflate") => {
            Some(e.to_ascii_lowercase())
        }
        Some(other) => {
            return Err(Refusal(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!(
                    "Content-Encoding {:?} is not supported (gzip, deflate and identity are)",
                    other.unwrap_or("<not text>")
                ),
            ))
        }
    };
    let timeout = state.body_timeout();
    let collected = tokio::time::timeout(timeout, Limited::new(req.into_body(), limit).collect());
    let Ok(collected) = collected.await else {
        return Err(Refusal(
            StatusCode::REQUEST_TIMEOUT,
            format!("the request body did not arrive within {timeout:?} (--body-timeout)"),
        ));
    };
    let body = match collected {
        Ok(collected) => collected.to_bytes(),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            return Err(Refusal(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body exceeds the limit of {limit} bytes (--max-request-bytes)"),
            ))
        }
        Err(e) => {
            return Err(Refusal(
                StatusCode::BAD_REQUEST,
                format!("cannot read the request body: {e}"),
            ))
        }
    };
    match encoding {
        None => Ok(body),
        Some(encoding) => decompress(&encoding, &body, limit).map(Bytes::from),
    }
}

/// `decompress` for fuzzing: the refusal's status and message, or the body.
pub fn decompress_for_fuzz(
    encoding: &str,
    body: &[u8],
    limit: usize,
) -> Result<Vec<u8>, (u16, String)> {
    decompress(encoding, body, limit).map_err(|Refusal(status, message)| (status.as_u16(), message))
}

fn decompress(encoding: &str, body: &[u8], limit: usize) -> Result<Vec<u8>, Refusal> {
    use std::io::Read;
    let reader: Box<dyn Read + '_> = if encoding == "gzip" {
        Box::new(flate2::read::GzDecoder::new(body))
    } else {
        // HTTP's "deflate" is the zlib format (RFC 9110), which is what
        // tritonclient sends.
        Box::new(flate2::read::ZlibDecoder::new(body))
    };
    let mut out = Vec::new();
    // One byte past the limit tells "too large" from "exactly at the limit".
    match reader.take(limit as u64 + 1).read_to_end(&mut out) {
        Ok(_) if out.len() > limit => Err(Refusal(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("decompressed request body exceeds the limit of {limit} bytes (--max-request-bytes)"),
        )),
        Ok(_) => Ok(out),
        Err(e) => Err(Refusal(
            StatusCode::BAD_REQUEST,
            format!("cannot decompress the {encoding} request body: {e}"),
        )),
    }
}
