//! The rules every request passes ([`guard`]):
//!
//! - **Host check** on loopback binds: the `Host` header must name a loopback address
//!   (`127.0.0.1`, `localhost`, `[::1]`), so a page on another site cannot reach the server through
//!   DNS rebinding.
//! - **Token** (`--token`): `Authorization: Bearer <token>`, or basic auth with the token as
//!   password (browsers prompt for it). Without a token the server only binds loopback unless told
//!   otherwise.
//! - **Cross-site requests**: state changes are POST only (other methods get 405 from the
//!   router). A POST whose `Origin` (or `Referer`) is another site is refused, and every POST must
//!   carry the server's CSRF token, in the `X-CSRF-Token` header or a `csrf_token` form field; the
//!   token is in every page and at `GET /api/csrf`, which other sites cannot read. A POST with the
//!   server's token as `Authorization: Bearer` and no cookie is a machine's (a browser cannot send
//!   that header to another site without a CORS preflight): it needs no CSRF token.
//! - **Headers**: a strict Content-Security-Policy (scripts and styles from this server only, no
//!   inline script), no framing, no MIME sniffing.
//!
//! Escaping is askama's (every value in a template is HTML-escaped), and log files are looked up
//! by run, task and try in the store, never by a path from the URL.

use std::collections::HashMap;

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use subtle::ConstantTimeEq;

use super::error::WebError;
use super::state::AppState;

/// The header that carries the CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// The form field that carries the CSRF token.
pub const CSRF_FIELD: &str = "csrf_token";
/// Largest form body read for its CSRF field.
const FORM_LIMIT: usize = 64 * 1024;

/// How requests are checked.
#[derive(Clone, Debug)]
pub struct SecurityConfig {
    /// Required credential, if any.
    pub token: Option<String>,
    /// The CSRF token of this server (random per start).
    pub csrf_token: String,
    /// Accept only loopback names in `Host` (set for loopback binds).
    pub loopback_hosts_only: bool,
}

impl SecurityConfig {
    /// The rules for a server bound to `bind`.
    pub fn for_bind(bind: SocketAddr, token: Option<String>) -> Self {
        Self {
            token: token.filter(|t| !t.is_empty()),
            csrf_token: random_token(),
            loopback_hosts_only: bind.ip().is_loopback(),
        }
    }
}

/// 32 random bytes from the operating system's generator, as hex.
///
/// # Panics
/// When the system has no random source (getrandom fails only on such systems): serving without
/// an unguessable CSRF token would be unsafe.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system's random generator failed");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Compares in time independent of where the inputs differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// Decodes standard base64, with or without padding; `None` if malformed.
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    LENIENT.decode(s).ok()
}

/// Whether the request carries the token (bearer, or basic auth with the token as password).
fn authorized(headers: &HeaderMap, token: &str) -> bool {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    if value.starts_with("Bearer ") {
        return bearer_authorized(headers, token);
    }
    if let Some(basic) = value.strip_prefix("Basic ") {
        return base64_decode(basic.trim())
            .and_then(|raw| {
                let raw = String::from_utf8(raw).ok()?;
                let (_, password) = raw.split_once(':')?;
                Some(same(password.as_bytes(), token.as_bytes()))
            })
            .unwrap_or(false);
    }
    false
}

/// Whether the request carries the token as `Authorization: Bearer <token>`.
fn bearer_authorized(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|bearer| same(bearer.trim().as_bytes(), token.as_bytes()))
}

/// Whether the request is a machine's, which needs no CSRF token: it carries the server's token
/// as a bearer token and no cookie. A browser never sends a bearer header on its own (a page of
/// another site cannot set one without a CORS preflight, which this server does not answer), while
/// it does send basic-auth credentials and cookies by itself, so those requests keep the check.
fn machine_request(headers: &HeaderMap, token: Option<&str>) -> bool {
    token.is_some_and(|t| bearer_authorized(headers, t)) && !headers.contains_key(header::COOKIE)
}

/// The host part of a `Host` header or URL authority (`[::1]:8080` -> `[::1]`).
fn host_part(authority: &str) -> &str {
    if authority.starts_with('[') {
        return authority.find(']').map_or(authority, |i| &authority[..=i]);
    }
    authority.rsplit_once(':').map_or(authority, |(h, _)| h)
}

fn is_loopback_name(host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    host == "localhost"
        || host.ends_with(".localhost")
        || host == "[::1]"
        || host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The authority (`host:port`) of an `Origin` or `Referer` value.
fn authority_of(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    Some(rest.split(['/', '?', '#']).next().unwrap_or(rest))
}

/// Refuses a POST from another site: its `Origin` (or, without one, `Referer`) must name this
/// server's `Host`.
fn same_origin(headers: &HeaderMap) -> Result<(), WebError> {
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let source = headers
        .get(header::ORIGIN)
        .or_else(|| headers.get(header::REFERER))
        .and_then(|v| v.to_str().ok());
    match (source, host) {
        (None, _) => Ok(()),
        (Some(source), Some(host))
            if authority_of(source).is_some_and(|a| a.eq_ignore_ascii_case(host)) =>
        {
            Ok(())
        }
        (Some(source), _) => Err(WebError::forbidden(format!(
            "cross-site request refused: it comes from {source}, not from this server"
        ))),
    }
}

/// Checks the CSRF token of a POST: the header, or the form field of a form body (the body is
/// read and put back).
async fn check_csrf(req: Request, expected: &str) -> Result<Request, WebError> {
    let missing = || {
        WebError::forbidden(format!(
            "missing or wrong CSRF token: send the token of GET /api/csrf in the {CSRF_HEADER} header or a {CSRF_FIELD} form field"
        ))
    };
    if let Some(given) = req.headers().get(CSRF_HEADER) {
        return if same(given.as_bytes(), expected.as_bytes()) {
            Ok(req)
        } else {
            Err(missing())
        };
    }
    let is_form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
    if !is_form {
        return Err(missing());
    }
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, FORM_LIMIT)
        .await
        .map_err(|_| WebError::bad_request("form body too large or unreadable"))?;
    let probe = Request::from_parts(parts.clone(), Body::from(bytes.clone()));
    let axum::Form(fields) = axum::Form::<HashMap<String, String>>::from_request(probe, &())
        .await
        .map_err(|e| WebError::bad_request(format!("malformed form: {e}")))?;
    match fields.get(CSRF_FIELD) {
        Some(given) if same(given.as_bytes(), expected.as_bytes()) => {
            Ok(Request::from_parts(parts, Body::from(bytes)))
        }
        _ => Err(missing()),
    }
}

/// The middleware applying the rules above to every request.
pub async fn guard(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let security = state.security();
    let html = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"));
    let fail = |e: WebError| if html { e.page() } else { e }.into_response();
    if security.loopback_hosts_only
        && let Some(host) = req.headers().get(header::HOST)
    {
        let ok = host.to_str().is_ok_and(|h| is_loopback_name(host_part(h)));
        if !ok {
            return fail(WebError::forbidden(
                "this server answers only to loopback host names (127.0.0.1, localhost, [::1])",
            ));
        }
    }
    if let Some(token) = &security.token
        && !authorized(req.headers(), token)
    {
        let mut resp = WebError::new(
            StatusCode::UNAUTHORIZED,
            "this server needs its token: Authorization: Bearer <token>, or basic auth with the token as password",
        )
        .into_response();
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"velostream\", charset=\"UTF-8\""),
        );
        return resp;
    }
    let req = if req.method() == Method::POST {
        if let Err(e) = same_origin(req.headers()) {
            return fail(e);
        }
        if machine_request(req.headers(), security.token.as_deref()) {
            return with_headers(next.run(req).await);
        }
        match check_csrf(req, &security.csrf_token).await {
            Ok(req) => req,
            Err(e) => return fail(e),
        }
    } else {
        req
    };
    with_headers(next.run(req).await)
}

/// Adds the security headers every answer carries.
fn with_headers(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_and_basic_auth() {
        assert_eq!(base64_decode("dXNlcjpzM2NyZXQ=").unwrap(), b"user:s3cret");
        assert_eq!(base64_decode("YQ").unwrap(), b"a");
        assert!(base64_decode("*").is_none());
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            "Basic dXNlcjpzM2NyZXQ=".parse().unwrap(),
        );
        assert!(authorized(&h, "s3cret"));
        assert!(!authorized(&h, "other"));
        h.insert(header::AUTHORIZATION, "Bearer s3cret".parse().unwrap());
        assert!(authorized(&h, "s3cret"));
        assert!(!authorized(&HeaderMap::new(), "s3cret"));
    }

    #[test]
    fn hosts_and_origins() {
        assert_eq!(host_part("[::1]:8080"), "[::1]");
        assert_eq!(host_part("localhost:80"), "localhost");
        assert_eq!(host_part("127.0.0.1"), "127.0.0.1");
        assert!(is_loopback_name("127.0.0.2"));
        assert!(is_loopback_name("LOCALHOST"));
        assert!(!is_loopback_name("evil.example"));
        assert_eq!(
            authority_of("http://127.0.0.1:8080/dags/x"),
            Some("127.0.0.1:8080")
        );
        assert_eq!(authority_of("null"), None);
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "127.0.0.1:8080".parse().unwrap());
        assert!(same_origin(&h).is_ok());
        h.insert(header::ORIGIN, "http://127.0.0.1:8080".parse().unwrap());
        assert!(same_origin(&h).is_ok());
        h.insert(header::ORIGIN, "http://evil.example".parse().unwrap());
        assert!(same_origin(&h).is_err());
        h.insert(header::ORIGIN, "null".parse().unwrap());
        assert!(same_origin(&h).is_err());
        assert_eq!(random_token().len(), 64);
        assert_ne!(random_token(), random_token());
    }
}
